"""Dagster's own documented PostgreSQL storage form works as written.

A user following Dagster's docs writes `storage: postgres: postgres_db: {hostname, port, username, password,
db_name}` with no `scheme`. SQLAlchemy 2.1 would map that plain `postgresql://` URL to psycopg 3 (which the
project installs for its upserts), and dagster-postgres's `NOTIFY run_events, %(id)s` then fails on the
first event. The project pins SQLAlchemy below 2.1, so the plain URL means psycopg2 in every process that
loads the instance, including ones that never import adu_assets.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import dagster as dg

from adu_assets_tests.defs_helpers import materialize_cmd
from adu_assets_tests.pg_server import PgServer

PRODUCTS = dg.AssetKey(["shop", "main", "products"])
PARTITION = "2026-03-01"


def documented_instance_yaml(pg: PgServer, db: str, user: str) -> str:
    # Exactly the shape of https://docs.dagster.io/deployment/oss/dagster-yaml#postgres-storage: literal
    # host, port, user and database; the password from the environment.
    return f"""\
telemetry:
  enabled: false
storage:
  postgres:
    postgres_db:
      hostname: {pg.host}
      port: {pg.port}
      username: {user}
      password:
        env: DAGSTER_PG_PASSWORD
      db_name: {db}
"""


def make_database(pg: PgServer, name: str) -> str:
    password = "doc-" + secrets.token_hex(12)
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    return password


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    env.update(extra)
    return env


def test_plain_postgresql_url_means_psycopg2_without_importing_the_project() -> None:
    # A webserver or daemon never imports adu_assets: the choice must come from installed versions alone.
    code = (
        "import sys\n"
        "from sqlalchemy.engine import make_url\n"
        "print(make_url('postgresql://u@h/d').get_dialect().driver)\n"
        "print('adu_assets' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env(), cwd="/"
    ).stdout.split()
    assert out == ["psycopg2", "False"]


def test_documented_postgres_storage_materializes(pg: PgServer, tmp_path: Path) -> None:
    name = "adu_doc_storage"
    password = make_database(pg, name)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(documented_instance_yaml(pg, name, name))
    assert "scheme" not in (home / "dagster.yaml").read_text()
    env = clean_env(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_PASSWORD=password,
        ADU_DATA_DIR=str(tmp_path / "data"),
        ADU_STATE_DIR=str(tmp_path / "state"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    proc = subprocess.run(
        materialize_cmd("shop/main/products", PARTITION),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "NOTIFY" not in output
    assert password not in output

    # Read back through a fresh instance in another process (as the webserver would), from the same file.
    reader = (
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    print(type(i.event_log_storage).__name__)\n"
        "    runs = i.get_runs()\n"
        "    print(len(runs), runs[0].status.value)\n"
        "    r = i.fetch_materializations(dg.AssetKey(['shop','main','products']), limit=5).records\n"
        "    print(len(r), r[0].asset_materialization.partition,"
        " r[0].asset_materialization.metadata['dagster/row_count'].value)\n"
    )
    read = subprocess.run(
        [sys.executable, "-c", reader], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.split("\n")[:3] == ["PostgresEventLogStorage", "1 SUCCESS", f"1 {PARTITION} 200"]

    with pg.connect(name) as conn:
        (events,) = conn.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchone()
    assert events == 1
    assert not [p for p in home.rglob("*.db")]
