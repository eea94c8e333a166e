"""`adu validate [FOLDER]`: every YAML file checked, one `file:line: field: message` line per problem."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adu_assets.cli import main as adu_cli

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
type: adu_assets.DatabaseExport
attributes:
  name: {name}
  connection:
    kind: duckdb
    path: /data/{name}.duckdb
  schema: main
  start_date: "2024-01-01"
  tables:
    - name: a
"""


def write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADU_STATE_DIR", str(tmp_path / "state"))
    d = tmp_path / "defs"
    d.mkdir()
    return d


def test_every_file_and_every_problem_with_its_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder, "ok/defs.yaml", GOOD.format(name="ok"))
    # Two files of the same type, both broken: `dg check yaml` reports only one of them.
    typo = write(
        folder,
        "sales/defs.yaml",
        "# header\n"
        + GOOD.format(name="sales").replace(
            "    - name: a\n", "    - name: a\n      incremental_column: x\n      incremntal_column: y\n"
        ),
    )
    nested = write(folder, "team/hr/defs.yaml", GOOD.format(name="hr").replace("tables:", "tabels:"))
    missing = write(
        folder, "nodate/defs.yaml", GOOD.format(name="nodate").replace('  start_date: "2024-01-01"\n', "")
    )
    bad_type = write(folder, "t/defs.yaml", "type: adu_assets.DatabaseExprt\nattributes:\n  name: t\n")
    syntax = write(folder, "s/defs.yaml", "type: adu_assets.DatabaseExport\nattributes:\n  name: [oops\n")
    top = write(folder, "top/defs.yaml", GOOD.format(name="top") + "atributes: {}\n")
    stray = write(folder, "ok/extra.yaml", GOOD.format(name="extra"))
    python = write(folder, "ok/assets.py", "import dagster\n")
    write(folder, "ok/__init__.py", "")

    assert adu_cli(["validate", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(
        [
            f"{typo}:13: attributes.tables.0.incremntal_column: unknown key `incremntal_column`: "
            "did you mean `incremental_column`?",
            f"{nested}:9: attributes.tabels: unknown key `tabels`: did you mean `tables` or `tags`?",
            f"{missing}:2: attributes.start_date: required, but missing: add it",
            f"{bad_type}:1: type: unknown component type `adu_assets.DatabaseExprt` "
            "(Module `adu_assets` has no attribute `DatabaseExprt`.): did you mean `adu_assets.DatabaseExport`?",
            f"{syntax}:4: (yaml): did not find expected ',' or ']' (while parsing a flow sequence started on "
            "line 3): fix the YAML syntax",
            f"{top}:11: atributes: unknown key `atributes`: did you mean `attributes`?",
            f"{stray}:1: (file): never loaded: only defs.yaml / defs.yml / component.yaml are, one per folder; "
            "move it to its own folder as defs.yaml",
            f"{python}:1: (file): never loaded: ADU loads YAML components only; describe it in a defs.yaml",
        ]
    )


def test_component_validators_run_too(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(folder, "x/defs.yaml", GOOD.format(name="x") + "  destinations: []\n")
    assert adu_cli(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}:11: attributes.destinations: ")
    assert "destinations must name at least one of: parquet, duckdb" in out


def test_clean_folder_and_the_demo_exit_zero(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder, "ok/defs.yaml", GOOD.format(name="ok"))
    assert adu_cli(["validate", str(folder)]) == 0
    assert "1 component file(s) OK" in capsys.readouterr().err
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("ADU_DEFS_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from adu_assets.cli import main; sys.exit(main())", "validate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 component file(s) OK" in proc.stderr
