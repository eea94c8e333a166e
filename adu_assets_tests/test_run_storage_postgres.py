"""Job history in PostgreSQL: deploy/dagster.yaml against the real test server.

A materialization runs in a separate process (as `dagster asset materialize` does for a user), and the run,
its materialization and the row count are then read back through a fresh `DagsterInstance` and straight
from the PostgreSQL tables. The database password only ever travels in the environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from adu_assets_tests.defs_helpers import materialize_cmd
from adu_assets_tests.pg_server import PgServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE_YAML = ROOT / "deploy" / "dagster.yaml"
PRODUCTS = dg.AssetKey(["shop", "main", "products"])
PARTITION = "2026-03-01"


def history_database(pg: PgServer, name: str) -> dict[str, str]:
    """A fresh database owned by its own login role, with a password nobody else uses (so a leak is findable)."""
    password = "hist-" + secrets.token_hex(12)
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    return {
        "DAGSTER_PG_HOST": pg.host,
        "DAGSTER_PG_PORT": str(pg.port),
        "DAGSTER_PG_USER": name,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": name,
    }


def test_materialization_history_lives_in_postgres(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEPLOY_INSTANCE_YAML.read_text())
    pg_env = history_database(pg, "adu_history")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_PG_"))}
    env.update(
        pg_env,
        DAGSTER_HOME=str(home),
        ADU_DATA_DIR=str(tmp_path / "data"),
        ADU_STATE_DIR=str(tmp_path / "state"),
    )

    proc = subprocess.run(
        materialize_cmd("shop/main/products", PARTITION),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    for key, value in {**pg_env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = instance.get_runs()
        assert len(runs) == 1
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == PARTITION
        assert PRODUCTS in (run.asset_selection or set())

        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=PRODUCTS, asset_partitions=[PARTITION]), limit=10
        ).records
        assert len(records) == 1
        materialization = records[0].asset_materialization
        assert materialization is not None
        assert records[0].run_id == run.run_id
        assert materialization.partition == PARTITION
        assert materialization.metadata["dagster/row_count"].value == 200

        # Per-step status (the asset and its checks), as the UI's run page shows it.
        steps = {s.step_key: s.status.value for s in instance.get_run_step_stats(run.run_id)}
        assert "shop__main__products" in steps, steps
        assert set(steps.values()) == {"SUCCESS"}, steps

    # The tables are PostgreSQL's, not SQLite files under DAGSTER_HOME.
    with pg.connect("adu_history") as conn:
        rows = conn.execute("SELECT run_id, status FROM runs").fetchall()
        assert rows == [(run.run_id, "SUCCESS")]
        (events,) = conn.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND partition = %s",
            (run.run_id, PARTITION),
        ).fetchone()
        assert events == 1
    assert not [p for p in home.rglob("*") if p.suffix == ".db"]

    # The password is in the environment only: not in the instance file, the compute logs or anything else.
    needle = pg_env["DAGSTER_PG_PASSWORD"].encode()
    leaked = [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaked == []
    assert needle.decode() not in proc.stdout + proc.stderr
