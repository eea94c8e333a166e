"""Dagster's own `dg` tooling sees the project's components, scaffolds valid examples and shows every field's doc.

Each test runs the real `dg` executable in a subprocess, as a user would after the README's set-up. The
scaffolding test works on a copy of the project (pyproject.toml and the package) in a temp folder, so the
repository's own demo folder is never written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).parent / "dg")
COMPONENTS = ("adu_assets.DatabaseExport", "adu_assets.ApiIngest", "adu_assets.FileDrop")


def dg_env(home: Path, project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(
        PYTHONPATH=str(project),
        DAGSTER_HOME=str(home),
        ADU_DATA_DIR=str(home / "data"),
        ADU_STATE_DIR=str(home / "state"),
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )
    return env


def run_dg(
    args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_dg_list_components_shows_the_project_types(tmp_path: Path) -> None:
    proc = run_dg(["list", "components", "--json"], ROOT, dg_env(tmp_path / "home", ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = {item["key"]: item["summary"] for item in json.loads(proc.stdout)["items"]}
    for key in COMPONENTS:
        assert key in items, sorted(items)
        assert items[key], f"{key} has no summary"
    # Nothing a user cannot act on: no telemetry banner, no warnings.
    assert "Telemetry" not in proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_field_has_a_doc_in_the_yaml_schema(component: str, tmp_path: Path) -> None:
    proc = run_dg(
        ["utils", "inspect-component", component, "--defs-yaml-schema"], ROOT, dg_env(tmp_path / "home", ROOT)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fields = [line for line in proc.stdout.splitlines() if re.search(r"# (Optional|Required):", line)]
    assert len(fields) >= 14, proc.stdout[:2000]
    blank = [line.strip() for line in fields if re.search(r"# (Optional|Required):\s*$", line)]
    assert blank == [], "fields with no doc:\n" + "\n".join(blank)
    assert "DESIGN.md" not in proc.stdout


def test_fields_with_defaults_keep_their_own_descriptions() -> None:
    # The exact case Dagster loses: a field with a default and a plain pydantic Field(description=...).
    import adu_assets

    props = adu_assets.DatabaseExport.get_model_cls().model_json_schema()["properties"]
    assert props["watermark_interval_seconds"]["description"] == "Seconds between watermark polls"
    assert props["schema"]["description"].startswith("Source schema")
    assert props["timezone"]["description"]  # described centrally (field_docs.FALLBACK_DOCS)
    api = adu_assets.ApiIngest.get_model_cls().model_json_schema()["properties"]
    assert api["profile"]["description"].startswith("ydata-profiling")


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(
        ROOT / "adu_assets",
        project / "adu_assets",
        ignore=shutil.ignore_patterns("__pycache__", ".local_defs_state"),
    )
    return project


@pytest.mark.slow
def test_dg_scaffold_then_dg_check_defs(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    env = dg_env(tmp_path / "home", project)
    folders = {
        "adu_assets.DatabaseExport": "sales-db",
        "adu_assets.ApiIngest": "hr api",
        "adu_assets.FileDrop": "2drops",
    }
    for component, folder in folders.items():
        proc = run_dg(["scaffold", "defs", component, folder], project, env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Warning" not in proc.stderr

    defs_dir = project / "adu_assets" / "defs"
    docs = {c: (defs_dir / f / "defs.yaml").read_text() for c, f in folders.items()}
    for component, text in docs.items():
        assert text.count("#") >= 5, text  # commented
        data = yaml.safe_load(text)
        assert data["type"] == component
        assert data["attributes"], text  # not Dagster's `attributes: {}`
    names = {c: yaml.safe_load(t)["attributes"]["name"] for c, t in docs.items()}
    assert names == {
        "adu_assets.DatabaseExport": "sales_db",
        "adu_assets.ApiIngest": "hr_api",
        "adu_assets.FileDrop": "t_2drops",
    }
    # Never a plain secret in an example.
    for text in docs.values():
        keys = {
            k.strip()
            for line in text.splitlines()
            if not line.lstrip().startswith("#")
            for k in re.findall(r"(\w+):", line.split("#")[0])
        }
        assert not keys & {"password", "token", "api_key", "client_secret"}, keys

    check = run_dg(["check", "defs"], project, env)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-5000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    assert "Warning" not in check.stdout + check.stderr, check.stderr[-3000:]

    listed = run_dg(["list", "defs", "--json"], project, env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assets = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert {"sales_db/public/orders", "sales_db/public/customers", "hr_api", "t_2drops"} <= assets, sorted(
        assets
    )

    # A broken edit is caught by the same command, naming the file.
    broken = docs["adu_assets.DatabaseExport"].replace("start_date:", "start_dat:")
    (defs_dir / "sales-db" / "defs.yaml").write_text(broken)
    bad = run_dg(["check", "defs"], project, env)
    assert bad.returncode != 0
    assert "start_dat" in bad.stdout + bad.stderr
