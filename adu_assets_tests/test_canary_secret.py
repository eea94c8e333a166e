"""A canary password must never be written anywhere: not under DAGSTER_HOME, not in stdout or stderr.

Runs the real `dagster asset materialize` CLI twice (one success with a Fernet token, one failure with
an environment variable) against a PostgreSQL role whose password is the canary.
"""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from cryptography.fernet import Fernet

from adu_assets import secrets
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import write_component
from adu_assets_tests.pg_server import PgServer

CANARY = "Canary-PW-7f3a9c1e"


def materialize(env: dict[str, str], select: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adu_assets.definitions",
         "--select", select, "--partition", "2021-01-02"],
        env=env, capture_output=True, timeout=300,
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_canary_password_never_persisted_or_printed(pg: PgServer, chinook: str, tmp_path: Path) -> None:
    with pg.connect(chinook) as conn:
        conn.execute("DROP ROLE IF EXISTS canary_reader")
        conn.execute(f"CREATE ROLE canary_reader LOGIN PASSWORD '{CANARY}'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO canary_reader")
    home, data, defs_dir = tmp_path / "home", tmp_path / "data", tmp_path / "defs"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    key = Fernet.generate_key().decode()
    token = secrets.encrypt(CANARY, keys=key)

    ok_conn = {**pg_connection_yaml(pg, chinook), "user": "canary_reader"}
    ok_conn.pop("password_env")
    ok_conn["password_encrypted"] = token
    write_component(defs_dir, "ok", "adu_assets.DatabaseExport", {
        "name": "ok", "connection": ok_conn, "start_date": "2021-01-01", "tables": [{"name": "genre"}]})
    bad_conn = {**pg_connection_yaml(pg, chinook, password_env="CANARY_PW"), "user": "canary_reader"}
    write_component(defs_dir, "bad", "adu_assets.DatabaseExport", {
        "name": "bad", "connection": bad_conn, "start_date": "2021-01-01",
        "tables": [{"name": "genre", "incremental_column": "no_such_column"}]})

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DAGSTER_HOME=str(home), ADU_DATA_DIR=str(data), ADU_DEFS_DIR=str(defs_dir),
               ADU_STATE_DIR=str(tmp_path / "state"), ADU_FERNET_KEY=key, CANARY_PW=CANARY)
    ok = materialize(env, "group:ok")
    assert ok.returncode == 0, ok.stderr.decode()[-3000:]
    assert b"landed 25 rows of ok/public/genre" in ok.stdout + ok.stderr
    bad = materialize(env, "group:bad")
    assert bad.returncode != 0
    assert b"no_such_column" in bad.stdout + bad.stderr

    # The literal, and the forms a driver or a server could write it in (issue 12); and the Fernet token,
    # which is in the YAML but must not be copied into run history.
    pair = f"canary_reader:{CANARY}"
    needles = [CANARY, quote_plus(CANARY), json.dumps(CANARY)[1:-1], b64(CANARY), b64(pair), b64(f"Basic {b64(pair)}")]
    for needle in [n.encode() for n in needles]:
        for proc in (ok, bad):
            assert needle not in proc.stdout
            assert needle not in proc.stderr
        assert files_containing(home, needle) == []
        assert files_containing(data, needle) == []
        assert files_containing(defs_dir, needle) == []
    assert files_containing(home, token.encode()) == []
    assert files_containing(data, token.encode()) == []
    # The run history really is there: the search above looked at a non-empty store.
    assert any(home.rglob("*.db"))
