"""A whole PostgreSQL table read through postgres_query in parts (ctid ranges), each on its own connection.

Parts read in parallel, in one snapshot of the source: together they are exactly the rows one query would
read, even while other sessions change the table. A part that meets a value it cannot land stops them all,
and the export falls back as a one-query read does. Real PostgreSQL, real Parquet and warehouse.
"""

from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

import adu_assets.sources.databases as databases
from adu_assets.io_managers.landing import land
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import open_table_stream
from adu_assets.warehouse import LandingStore
from adu_assets_tests.pg_server import PgServer

ROWS = 250_000  # about 2,600 pages of 8 kB: two parts of at least MIN_PART_PAGES
KEY = dg.AssetKey(["s", "public", "big"])


def config(pg: PgServer, db: str, password_env: str) -> ConnectionConfig:
    return ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=db, user=pg.user,
                            password_env=password_env)


@pytest.fixture
def big(pg: PgServer, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # Parts follow DuckDB's threads (one per core): two, also on a one-core machine.
    make = databases.new_duckdb
    monkeypatch.setattr(databases, "new_duckdb", lambda *a, **k: make(*a, **{**k, "threads": k.get("threads") or 2}))
    with pg.connect(pg_db) as conn:
        conn.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload, g * 0.5 AS amount, "
            f"g % 7 = 0 AS flag FROM generate_series(1, {ROWS}) g"
        )
        conn.execute("ANALYZE big")
    return pg_db


def open_big(pg: PgServer, db: str, password_env: str, **kw: Any) -> databases.TableStream:
    return open_table_stream(config(pg, db, password_env), schema="public", table="big", label="s",
                             incremental_column=kw.get("incremental_column"), window=kw.get("window"),
                             partition_keys=["2024-01-01"])


def export(pg: PgServer, db: str, password_env: str, root: Path) -> tuple[dict[str, Any], int]:
    stream = open_big(pg, db, password_env)
    parts = len(stream.parts)
    try:
        meta = land(stream, ["parquet", "warehouse"], LandingStore(data_dir=str(root)), KEY)
    finally:
        stream.close()
    return meta, parts


def digest_source(pg: PgServer, db: str) -> tuple[int, str]:
    with pg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(id || '|' || payload || '|' || (amount::numeric(38,10))::text "
            "|| '|' || flag, ',' ORDER BY id)) FROM big"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


DIGEST_DUCKDB = (
    "SELECT count(*), md5(string_agg(id || '|' || payload || '|' || CAST(amount AS VARCHAR) || '|' || "
    "CAST(flag AS VARCHAR), ',' ORDER BY id)) FROM {}"
)


def digest_landed(root: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    files = str(root / "parquet" / "s" / "public" / "big" / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        tree = con.execute(DIGEST_DUCKDB.format(f"read_parquet('{files}')")).fetchone()
    store = LandingStore(data_dir=str(root)).connect()
    try:
        warehouse = store.execute(DIGEST_DUCKDB.format('"s_public"."big"')).fetchone()
    finally:
        store.close()
    assert tree is not None and warehouse is not None
    return (int(tree[0]), str(tree[1])), (int(warehouse[0]), str(warehouse[1]))


def assert_landed_exactly(pg: PgServer, db: str, root: Path) -> tuple[int, str]:
    """The tree and the warehouse hold exactly the source's rows, and no pending or stray file is left."""
    want = digest_source(pg, db)
    assert digest_landed(root) == (want, want)
    assert leftovers(root) == []
    return want


def leftovers(root: Path) -> list[str]:
    folder = root / "parquet" / "s" / "public" / "big"
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".parquet"))


def wait_for_truncate_to_queue(pg: PgServer, db: str, finished: list[float]) -> None:
    """Until a `TRUNCATE big` waits for a lock (at most 10 s), or `finished` says it has run."""
    import time

    deadline = time.monotonic() + 10
    with pg.connect(db) as conn:
        while time.monotonic() < deadline and not finished:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'TRUNCATE big%' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)


def test_a_large_table_lands_exactly_from_parts_read_at_once(
    pg: PgServer, big: str, pg_password_env: str, tmp_path: Path
) -> None:
    meta, parts = export(pg, big, pg_password_env, tmp_path)
    assert parts == 2
    assert int(meta["files"].value) == 2  # one file per part
    assert int(meta["dagster/row_count"].value) == ROWS
    assert_landed_exactly(pg, big, tmp_path)


def test_parts_read_one_snapshot_while_the_table_changes(
    pg: PgServer, big: str, pg_password_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows inserted, updated and deleted (committed) after the first part's snapshot and before any part
    reads are in none of the parts. Without the shared snapshot the second part would see them: the new
    and moved rows sit at the end of the heap, in its range."""
    want = digest_source(pg, big)
    share = databases._share_snapshot
    changed: list[bool] = []

    def share_then_change(cursors: list[duckdb.DuckDBPyConnection], table: Any) -> None:
        share(cursors, table)
        with pg.connect(big) as conn:
            conn.execute(f"INSERT INTO big SELECT g, 'new', 1.25, true FROM generate_series({ROWS + 1}, {ROWS + 500}) g")
            conn.execute("UPDATE big SET payload = 'updated', amount = amount + 1 WHERE id % 1000 = 0")
            conn.execute("DELETE FROM big WHERE id BETWEEN 200000 AND 200999")
        changed.append(True)

    monkeypatch.setattr(databases, "_share_snapshot", share_then_change)
    meta, parts = export(pg, big, pg_password_env, tmp_path)
    assert changed == [True] and parts == 2
    assert int(meta["dagster/row_count"].value) == ROWS
    assert digest_landed(tmp_path) == (want, want)
    # And the table did change: the next export reads the new state.
    monkeypatch.setattr(databases, "_share_snapshot", share)
    meta, _ = export(pg, big, pg_password_env, tmp_path)
    assert int(meta["dagster/row_count"].value) == ROWS + 500 - 1000
    assert assert_landed_exactly(pg, big, tmp_path) != want


def test_a_value_one_part_cannot_land_stops_every_part_and_the_export_reads_again(
    pg: PgServer, big: str, pg_password_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A longer scale than the guarded DECIMAL(38,10), at the end of the heap: the second part's guard raises.
    with pg.connect(big) as conn:
        conn.execute(f"INSERT INTO big VALUES ({ROWS + 1}, 'long', 0.123456789012345, false)")
    with caplog.at_level("INFO"):
        meta, parts = export(pg, big, pg_password_env, tmp_path)
    assert parts == 2
    assert "probed the numeric columns and read again" in caplog.text
    assert int(meta["dagster/row_count"].value) == ROWS + 1
    store = LandingStore(data_dir=str(tmp_path)).connect()
    try:
        types = {str(r[0]): str(r[1]) for r in store.execute('DESCRIBE "s_public"."big"').fetchall()}
        long = store.execute(f'SELECT amount FROM "s_public"."big" WHERE id = {ROWS + 1}').fetchone()
        total = store.execute('SELECT sum(amount) FROM "s_public"."big"').fetchone()
    finally:
        store.close()
    assert types["amount"] == "DECIMAL(38,15)"
    assert long == (Decimal("0.123456789012345"),)
    with pg.connect(big) as conn:
        assert total == conn.execute("SELECT sum(amount) FROM big").fetchone()
    # The stopped parts' files are gone: only the second read's files are in the folder, and no pending file.
    assert leftovers(tmp_path) == []
    landed = list((tmp_path / "parquet" / "s" / "public" / "big").rglob("*.parquet"))
    assert len(landed) == int(meta["files"].value)


def test_small_tables_and_windows_are_read_in_one_query(
    pg: PgServer, big: str, pg_password_env: str
) -> None:
    from datetime import UTC, datetime

    with pg.connect(big) as conn:
        conn.execute("CREATE TABLE small AS SELECT * FROM big WHERE id <= 1000")
        conn.execute("ALTER TABLE big ADD COLUMN at timestamptz DEFAULT '2024-01-01 12:00+00'")
    stream = open_table_stream(config(pg, big, pg_password_env), schema="public", table="small", label="s",
                               incremental_column=None, window=None, partition_keys=["2024-01-01"])
    try:
        assert "postgres_query" in stream.sql and stream.parts == []
    finally:
        stream.close()
    window = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    stream = open_big(pg, big, pg_password_env, incremental_column="at", window=window)
    try:
        # A window lets PostgreSQL's planner choose (an index on the column): one query.
        assert "postgres_query" in stream.sql and stream.parts == []
    finally:
        stream.close()


def test_without_a_connection_to_spare_the_table_is_read_in_one_query(
    pg: PgServer, big: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A role allowed one connection: the second part cannot connect, so the export reads in one query.
    role = f"one_conn_{big}"
    with pg.connect(big) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'one-conn-pw' CONNECTION LIMIT 1")  # roles are server-wide
        conn.execute(f"GRANT SELECT ON big TO {role}")
    monkeypatch.setenv("ONE_CONN_PW", "one-conn-pw")
    cfg = ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=big, user=role,
                           password_env="ONE_CONN_PW")
    stream = open_table_stream(cfg, schema="public", table="big", label="s", incremental_column=None,
                               window=None, partition_keys=["2024-01-01"])
    assert len(stream.parts) == 2
    try:
        with caplog.at_level("WARNING"):
            meta = land(stream, ["parquet", "warehouse"], LandingStore(data_dir=str(tmp_path)), KEY)
    finally:
        stream.close()
    assert "read in one query, the parts cannot share a snapshot" in caplog.text
    assert "too many connections" in caplog.text
    assert int(meta["files"].value) == 1
    assert_landed_exactly(pg, big, tmp_path)


def test_a_truncate_waits_for_the_parts_instead_of_emptying_their_snapshot(
    pg: PgServer, big: str, pg_password_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRUNCATE is not MVCC-safe: a snapshot taken before it sees an empty table. The first part locks the
    table before its snapshot, so a TRUNCATE issued before the other parts start waits for the read."""
    import threading
    import time

    want = digest_source(pg, big)
    share = databases._share_snapshot
    truncated: list[float] = []

    def truncate() -> None:
        with pg.connect(big) as conn:
            conn.execute("TRUNCATE big")
        truncated.append(time.monotonic())

    worker = threading.Thread(target=truncate)

    def share_then_truncate(cursors: list[duckdb.DuckDBPyConnection], table: Any) -> None:
        share(cursors, table)
        worker.start()
        wait_for_truncate_to_queue(pg, big, truncated)  # (or to have run: then the test fails)

    monkeypatch.setattr(databases, "_share_snapshot", share_then_truncate)
    meta, parts = export(pg, big, pg_password_env, tmp_path)
    finished = time.monotonic()
    worker.join(30)
    assert parts == 2 and truncated and truncated[0] >= finished - 5
    assert int(meta["dagster/row_count"].value) == ROWS
    assert digest_landed(tmp_path) == (want, want)


@pytest.mark.timeout(120)
def test_a_truncate_queued_before_the_other_parts_lock_makes_the_export_read_in_one_query(
    pg: PgServer, big: str, pg_password_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A TRUNCATE queued behind the first part's lock would also queue the other parts' locks, and the first
    part commits only with them: a wait PostgreSQL cannot see as a deadlock. The other parts lock NOWAIT,
    so the parts give up and the export reads in one query, after the TRUNCATE: an empty table."""
    import threading

    pg_query = databases._pg_query
    worker: list[threading.Thread] = []

    def truncate() -> None:
        with pg.connect(big) as conn:
            conn.execute("TRUNCATE big")

    def queue_truncate_after_snapshot(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
        rows = pg_query(con, sql)
        if "pg_export_snapshot" in sql and not worker:
            worker.append(threading.Thread(target=truncate))
            worker[0].start()
            wait_for_truncate_to_queue(pg, big, [])
        return rows

    monkeypatch.setattr(databases, "_pg_query", queue_truncate_after_snapshot)
    with caplog.at_level("WARNING"):
        meta, parts = export(pg, big, pg_password_env, tmp_path)
    worker[0].join(30)
    assert parts == 2
    assert "read in one query, the parts cannot share a snapshot" in caplog.text
    assert "could not obtain lock" in caplog.text
    assert int(meta["dagster/row_count"].value) == 0
    assert leftovers(tmp_path) == []
