"""A plain install of the built wheel runs the whole YAML contract: a profiled, drift-checked table.

The wheel is built from the repository, installed with no extras into a fresh `python -m venv`, and run
from a folder outside the repository with nothing on PYTHONPATH, so only what the wheel declares is there
(the production image installs exactly this way). Two days are materialized so drift has a reference.
pip's cache makes a repeat quick; the first run downloads every dependency once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAYS = ("2026-03-01", "2026-03-02")

READER = """
import json, sys
import dagster as dg
import adu_assets
key = dg.AssetKey(["src", "main", "sales"])
out = {"package": adu_assets.__file__, "checks": {}}
with dg.DagsterInstance.get() as instance:
    for name in ("schema", "drift", "profile"):
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, name), limit=5
        )
        evaluations = []
        for r in records:
            e = r.event.dagster_event.event_specific_data if r.event and r.event.dagster_event else None
            if e is None:
                continue
            evaluations.append({
                "passed": e.passed,
                "partition": e.partition,
                "metadata": {k: [type(v).__name__, str(v.value)] for k, v in e.metadata.items()},
            })
        out["checks"][name] = evaluations
print(json.dumps(out))
"""


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def make_source(path: Path) -> None:
    con = duckdb.connect(str(path))
    # Day 2's amounts sit far from day 1's: the drift check has something to find.
    con.execute(
        """
        CREATE TABLE sales AS
        SELECT i AS sale_id,
               TIMESTAMP '2026-03-01 00:00:00' + INTERVAL (i % 2) DAY + INTERVAL (i % 1000) SECOND AS sold_at,
               CASE WHEN i % 2 = 0 THEN 10 + (i % 17) ELSE 500 + (i % 23) END::DOUBLE AS amount,
               ['a', 'b', 'c'][1 + i % 3] AS category
        FROM range(4000) t(i)
        """
    )
    con.close()


@pytest.mark.slow
def test_plain_wheel_install_runs_profiled_drift_checked_table(tmp_path: Path) -> None:
    build = tmp_path / "build"
    # Only what the repository tracks (no .venv, caches or local data), as a fresh clone would have.
    shutil.copytree(
        ROOT,
        build,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            "build",
            "dist",
            "node_modules",
            ".dagster_home",
            ".local_defs_state",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            "wheelhouse",
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_", "PYTHON"))}
    proc = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), "."],
        env,
        build,
        600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("adu_assets-*.whl")

    venv = tmp_path / "venv"
    proc = run([sys.executable, "-m", "venv", str(venv)], env, tmp_path, 300)
    assert proc.returncode == 0, proc.stderr
    proc = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], env, tmp_path, 1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    work = tmp_path / "work"
    defs = work / "defs" / "src"
    defs.mkdir(parents=True)
    make_source(work / "source.duckdb")
    (defs / "defs.yaml").write_text(
        yaml.safe_dump(
            {
                "type": "adu_assets.DatabaseExport",
                "attributes": {
                    "name": "src",
                    "connection": {"kind": "duckdb", "path": str(work / "source.duckdb")},
                    "schema": "main",
                    "start_date": "2026-02-01",
                    "tables": [
                        {
                            "name": "sales",
                            "incremental_column": "sold_at",
                            "profile": True,
                            "checks": {"drift": {"columns": ["amount", "category"], "threshold": 0.4}},
                        }
                    ],
                },
            }
        )
    )
    home = work / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(
        DAGSTER_HOME=str(home),
        ADU_DEFS_DIR=str(work / "defs"),
        ADU_DATA_DIR=str(work / "data"),
        ADU_STATE_DIR=str(work / "state"),
        ADU_REPORTS_URL="https://adu.example.internal/reports",
    )
    for day in DAYS:
        proc = run(
            [
                str(venv / "bin" / "dagster"),
                "asset",
                "materialize",
                "-m",
                "adu_assets.definitions",
                "--select",
                "src/main/sales",
                "--partition",
                day,
            ],
            env,
            work,
            900,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        assert "ModuleNotFoundError" not in output and "ImportError" not in output

    proc = run([str(venv / "bin" / "python"), "-c", READER], env, work, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(venv)), result["package"]  # the wheel, not the source tree

    checks = result["checks"]
    by_day = {name: {e["partition"]: e for e in evals} for name, evals in checks.items()}
    assert set(by_day["profile"]) == set(DAYS), checks["profile"]
    profile = by_day["profile"][DAYS[1]]["metadata"]
    assert profile["findings"][0] == "MarkdownMetadataValue"
    assert profile["findings"][1].startswith("**2000 rows, 4 columns**")
    assert profile["report_url"] == [
        "UrlMetadataValue",
        "https://adu.example.internal/reports/src%252Fmain%252Fsales/profile-2026-03-02.html",
    ]

    drift = by_day["drift"][DAYS[1]]
    assert drift["passed"] is False  # amounts moved from ~20 to ~510
    assert "amount" in drift["metadata"]["drifted_columns"][1]
    assert drift["metadata"]["findings"][0] == "MarkdownMetadataValue"
    assert "| amount | **yes** |" in drift["metadata"]["findings"][1]
    reports = sorted(p.name for p in (work / "data" / "reports").rglob("*.html"))
    assert reports == ["drift-2026-03-02.html", "profile-2026-03-01.html", "profile-2026-03-02.html"]

    # The other entry points of a plain install.
    proc = run([str(venv / "bin" / "adu"), "--help"], env, work, 120)
    assert proc.returncode == 0 and "preview" in proc.stdout and "test-connection" in proc.stdout
    proc = run([str(venv / "bin" / "dg"), "--version"], env, work, 120)
    assert proc.returncode == 0, proc.stderr
