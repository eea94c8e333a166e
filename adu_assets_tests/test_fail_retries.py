"""Issue 11 point 3: permanent errors fail once; only transient causes are retried by the step policy."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest

from adu_assets.automation.retries import is_transient, step_error
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, run_partition, write_component
from adu_assets_tests.pg_server import PgServer


@pytest.fixture(autouse=True)
def fast_step_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The step RetryPolicy waits 10 s, 20 s, 40 s; a test only needs to count attempts.
    monkeypatch.setattr("adu_assets.automation.retries.NETWORK_RETRY_DELAY_S", 0)


def step_attempts(result: dg.ExecuteInProcessResult) -> int:
    return 1 + sum(1 for e in result.all_events if e.event_type_value == "STEP_RESTARTED")


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.to_string()  # type: ignore[union-attr]


# A negative interval used to be the example here; it now lands exactly as text (issue 10), so the
# permanent error is a YAML `cast:` that the values do not fit.
@pytest.mark.parametrize(
    "column, value, cause",
    [
        ("big bigint", "10000000000", "out of range"),
    ],
    ids=["cast-out-of-range"],
)
def test_export_permanent_error_fails_once(
    pg: PgServer,
    pg_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    column: str,
    value: str,
    cause: str,
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute(f"CREATE TABLE odd (id int, {column})")
        conn.execute(f"INSERT INTO odd VALUES (1, {value})")
    defs_dir = tmp_path / "defs"
    write_component(
        defs_dir,
        "src",
        "adu_assets.DatabaseExport",
        {
            "name": "src",
            "connection": pg_connection_yaml(pg, pg_db),
            "start_date": "2024-01-01",
            "tables": [{"name": "odd", "cast": {column.split()[0]: "integer"}}],
        },
    )
    result = run_partition(load(defs_dir, monkeypatch), [dg.AssetKey(["src", "public", "odd"])], "2024-01-02")
    assert not result.success
    assert step_attempts(result) == 1  # was 4 (3 step retries, ~2 min with the real delays)
    text = failure_text(result)
    assert cause in text and "not retried" in text


def _error(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> BaseException:
    con = con or duckdb.connect()
    try:
        con.execute(sql)
    except duckdb.Error as e:
        return e
    raise AssertionError(f"{sql} did not fail")


def test_permanent_database_errors_are_not_transient(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER)")
    permanent = [
        _error("SELECT CAST(10000000000 AS INTEGER)"),  # cast out of range
        _error("CREATE TABLE t (i INTEGER)", con),  # table already exists
        _error(f"COPY (SELECT INTERVAL '-1 day' AS s) TO '{tmp_path / 'x.parquet'}'"),  # negative interval
        _error("SELECT * FROM missing_table"),
        ValueError("bad value"),
    ]
    for exc in permanent:
        assert not is_transient(exc), exc
        failure = step_error(exc, "export of src/t failed")
        assert isinstance(failure, dg.Failure) and failure.allow_retries is False
        assert str(exc).split("\n")[0][:40] in (failure.description or "")


def test_transient_causes_are_retried(tmp_path: Path, pg: PgServer) -> None:
    # A write-write conflict between two DuckDB transactions on the same row.
    path = str(tmp_path / "w.duckdb")
    a = duckdb.connect(path)
    a.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0)")
    b = a.cursor()
    a.execute("BEGIN; UPDATE t SET v = 1 WHERE i = 1")
    b.execute("BEGIN")
    conflict = _error("UPDATE t SET v = 2 WHERE i = 1", b)
    # PostgreSQL: nothing listens on this port any more.
    probe = __import__("socket").create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    try:
        psycopg.connect(host="127.0.0.1", port=port, user="x", dbname="x", connect_timeout=3)
        raise AssertionError("connected to a closed port")
    except psycopg.OperationalError as e:
        refused = e
    # PostgreSQL: a row lock held by someone else, with lock_timeout.
    with pg.connect() as holder, pg.connect() as waiter:
        holder.execute("CREATE TABLE IF NOT EXISTS lock_probe (i int PRIMARY KEY)")
        holder.execute("INSERT INTO lock_probe VALUES (1) ON CONFLICT DO NOTHING")
        with holder.transaction():
            holder.execute("SELECT * FROM lock_probe WHERE i = 1 FOR UPDATE")
            waiter.execute("SET lock_timeout = '100ms'")
            try:
                waiter.execute("SELECT * FROM lock_probe WHERE i = 1 FOR UPDATE")
                raise AssertionError("took a held lock")
            except psycopg.errors.LockNotAvailable as e:
                locked = e
    for exc in [
        conflict,
        refused,
        locked,
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ]:
        assert is_transient(exc), exc
        out = step_error(exc, "upsert into t failed")
        assert not isinstance(out, dg.Failure) and "upsert into t failed" in str(out)
    # Wrong password mentions a connection but is permanent.
    try:
        psycopg.connect(host=pg.host, port=pg.port, user=pg.user, password="wrong", dbname="postgres")
        raise AssertionError("wrong password accepted")
    except psycopg.OperationalError as e:
        assert not is_transient(e)
        assert "wrong" not in str(step_error(e, "connect"))
