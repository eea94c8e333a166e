"""Numeric columns checked while they are read (one pass of PostgreSQL instead of probe + read).

A table with an unconstrained numeric is read through PostgreSQL's own SQL; its numeric columns are cast
to the type a probe would pick and checked row by row in the same query. A value that does not fit (NaN,
Infinity, a longer scale, too many digits) stops the read before anything commits, and the export probes
and reads again. Real PostgreSQL, real Parquet and warehouse.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets.io_managers.landing import land
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import open_table_stream
from adu_assets.warehouse import LandingStore
from adu_assets_tests.pg_server import PgServer


def config(pg: PgServer, db: str, password_env: str) -> ConnectionConfig:
    return ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=db, user=pg.user,
                            password_env=password_env)


def seq_scans(pg: PgServer, db: str, table: str) -> int:
    """Sequential scans of `table` so far, once the counter has settled (a closing backend reports its
    statistics as it exits, a moment after our connection to it is closed)."""
    import time

    def read() -> int:
        with pg.connect(db) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = %s", [table]).fetchone()
        return int(row[0]) if row else 0

    last, stable_since = read(), time.monotonic()
    deadline = stable_since + 10
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.5:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def export(pg: PgServer, db: str, password_env: str, table: str, root: Path,
           caplog: pytest.LogCaptureFixture | None = None) -> tuple[dict[str, Any], str]:
    stream = open_table_stream(config(pg, db, password_env), schema="public", table=table, label="g",
                               incremental_column=None, window=None, partition_keys=["2024-01-01"])
    planned = stream.sql
    try:
        meta = land(stream, ["parquet", "warehouse"], LandingStore(data_dir=str(root)),
                    dg.AssetKey(["g", "public", table]))
    finally:
        stream.close()
    return meta, planned


def warehouse_rows(root: Path, table: str, columns: str) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    con = LandingStore(data_dir=str(root)).connect()
    try:
        rows = con.execute(f'SELECT {columns} FROM "g_public"."{table}" ORDER BY id').fetchall()
        types = {str(r[0]): str(r[1]) for r in con.execute(f'DESCRIBE "g_public"."{table}"').fetchall()}
    finally:
        con.close()
    return rows, types


def tree_rows(root: Path, table: str, columns: str) -> list[tuple[Any, ...]]:
    files = str(root / "parquet" / "g" / "public" / table / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        return con.execute(f"SELECT {columns} FROM read_parquet('{files}') ORDER BY id").fetchall()


def test_fitting_values_are_read_in_one_pass(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE fits (id int, v numeric, m numeric(10,2))")
        conn.execute("INSERT INTO fits VALUES (1, 1.5, 2.25), (2, -12345678901234567890.0123456789, NULL), "
                     "(3, NULL, -99999999.99), (4, 0, 0), (5, 9999999999999999999999999999.9999999999, 1)")
    before = seq_scans(pg, pg_db, "fits")
    meta, planned = export(pg, pg_db, pg_password_env, "fits", tmp_path)
    assert "adu_not_exact" in planned  # read guarded, not probed
    assert seq_scans(pg, pg_db, "fits") - before == 1  # one pass over the table, not two
    rows, types = warehouse_rows(tmp_path, "fits", "id, CAST(v AS VARCHAR), CAST(m AS VARCHAR)")
    assert types["v"] == "DECIMAL(38,10)" and types["m"] == "DECIMAL(10,2)"
    with pg.connect(pg_db) as conn:
        source = [tuple(r) for r in conn.execute(
            "SELECT id, v::numeric(38,10)::text, m::text FROM fits ORDER BY id").fetchall()]
    assert rows == source
    assert tree_rows(tmp_path, "fits", "id, CAST(v AS VARCHAR), CAST(m AS VARCHAR)") == source
    assert "checked while reading" in str(meta["type_notes"].value)  # type: ignore[attr-defined]
    assert "probed the numeric columns" not in caplog.text


@pytest.mark.parametrize(
    ("case", "values", "landed_type"),
    [
        ("nan_in_constrained", "(1, 1.5, 'NaN'), (2, 2, 1)", {"m": "VARCHAR"}),
        ("nan_in_free", "(1, 'NaN', 1), (2, 2, 1)", {"v": "VARCHAR"}),
        ("infinity", "(1, 'Infinity', 1), (2, 2, 1)", {"v": "VARCHAR"}),
        ("long_scale", "(1, 1.123456789012, 1), (2, 2, 1)", {"v": "DECIMAL(38,12)"}),
        ("many_digits", "(1, 123456789012345678901234567890.5, 1), (2, 2, 1)", {"v": "DECIMAL(38,1)"}),
        ("just_over", "(1, 10000000000000000000000000000, 1), (2, -2, 1)", {"v": "DECIMAL(38,0)"}),
    ],
)
def test_a_value_that_does_not_fit_falls_back_to_the_probe_and_lands_exactly(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    case: str, values: str, landed_type: dict[str, str],
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute(f"CREATE TABLE {case} (id int, v numeric, m numeric(10,2))")
        conn.execute(f"INSERT INTO {case} VALUES {values}")
    with caplog.at_level("INFO"):
        meta, planned = export(pg, pg_db, pg_password_env, case, tmp_path)
    assert "adu_not_exact" in planned
    assert "probed the numeric columns and read again" in caplog.text
    rows, types = warehouse_rows(tmp_path, case, "id, CAST(v AS VARCHAR), CAST(m AS VARCHAR)")
    for column, expected in landed_type.items():
        assert types[column] == expected
    with pg.connect(pg_db) as conn:
        exact = [tuple(r) for r in conn.execute(f"SELECT id, v::text, m::text FROM {case} ORDER BY id").fetchall()]
    # Every value equals PostgreSQL's own text of it (DECIMAL text may add trailing zeros to the scale).
    for got, want in zip(rows, exact, strict=True):
        assert got[0] == want[0]
        for g, w in zip(got[1:], want[1:], strict=True):
            if w in ("NaN", "Infinity", "-Infinity") or g is None or w is None:
                assert g == w
            else:
                from decimal import Decimal

                assert Decimal(g) == Decimal(w)
    assert tree_rows(tmp_path, case, "id, CAST(v AS VARCHAR), CAST(m AS VARCHAR)") == rows
    # Nothing of the stopped read was left in the tree.
    files = list((tmp_path / "parquet" / "g" / "public" / case).rglob("*.parquet*"))
    assert len(files) == 1, files
    assert int(meta["dagster/row_count"].value) == 2  # type: ignore[attr-defined]


def test_tables_without_free_numeric_keep_the_parallel_scanner(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE scan_only (id int, m numeric(10,2))")
        conn.execute("INSERT INTO scan_only VALUES (1, 1.25), (2, 3)")
    _, planned = export(pg, pg_db, pg_password_env, "scan_only", tmp_path)
    # The NaN probe first, then the scanner's parallel read of every column as it is.
    assert "postgres_query" not in planned and "adu_not_exact" not in planned
    rows, types = warehouse_rows(tmp_path, "scan_only", "id, CAST(m AS VARCHAR)")
    assert types["m"] == "DECIMAL(10,2)" and rows == [(1, "1.25"), (2, "3.00")]


def test_a_table_landed_with_a_wider_scale_keeps_it_on_every_later_run(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # PostgreSQL's division keeps 20 decimals (trailing zeros count in scale()): the probe picks
    # DECIMAL(38,20), the guarded plan DECIMAL(38,10). Later runs must land in the table as it is.
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE divided AS SELECT g AS id, (g::bigint * 7919) % 1000 / 100.0 AS amount "
                     "FROM generate_series(1, 50) g")
    first, _ = export(pg, pg_db, pg_password_env, "divided", tmp_path)
    _, types = warehouse_rows(tmp_path, "divided", "id")
    assert types["amount"] == "DECIMAL(38,20)"
    with pg.connect(pg_db) as conn:
        conn.execute("INSERT INTO divided VALUES (51, 1.5)")  # a value of scale 1 now, still DECIMAL(38,20)
    with caplog.at_level("INFO"):
        again, _ = export(pg, pg_db, pg_password_env, "divided", tmp_path)
    assert "differs from the warehouse table's" in caplog.text or "does not fit" in caplog.text
    rows, types = warehouse_rows(tmp_path, "divided", "id, amount")
    assert types["amount"] == "DECIMAL(38,20)"
    with pg.connect(pg_db) as conn:
        source = [tuple(r) for r in conn.execute("SELECT id, amount FROM divided ORDER BY id").fetchall()]
    assert rows == source
    assert int(again["dagster/row_count"].value) == 51  # type: ignore[attr-defined]
