from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adu_assets_tests.pg_server import PgServer, running_postgres

# Sample databases shipped with the tests (each folder keeps its license): nothing outside the repository is read.
SAMPLE_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session; each test makes its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_db(pg: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated DAGSTER_HOME and ADU_DATA_DIR with telemetry off."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ADU_DEFS_DIR", raising=False)
    return home


def sample_data(*parts: str) -> Path:
    path = SAMPLE_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the repository's test data")
    return path


os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def chinook(pg: PgServer) -> str:
    """The Chinook sample database (its script creates the database `chinook` itself)."""
    pg.run_sql_file("postgres", sample_data("chinook", "Chinook_PostgreSql.sql"))
    return "chinook"


def pg_connection_yaml(pg: PgServer, database: str, password_env: str = "ADU_TEST_PG_PASSWORD") -> dict[str, object]:
    return {
        "kind": "postgres",
        "host": pg.host,
        "port": pg.port,
        "database": database,
        "user": pg.user,
        "password_env": password_env,
    }


@pytest.fixture
def pg_password_env(pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ADU_TEST_PG_PASSWORD", pg.password)
    return "ADU_TEST_PG_PASSWORD"


# Celery broker for the scale-out tests (adu_assets_tests/test_celery_*.py).
from adu_assets_tests.redis_server import RedisServer, running_redis  # noqa: E402


@pytest.fixture(scope="session")
def redis_broker() -> Iterator[RedisServer]:
    """One real redis-server (the Celery broker) for the whole session, on a loopback port."""
    with running_redis() as server:
        yield server
