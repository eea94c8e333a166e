"""The type map for DuckDB and SQLite files: HUGEINT, intervals, enums, SQLite offsets and untyped columns.

Each source file is real; the stream lands in Parquet and the warehouse, and both are read back.
"""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets.io_managers.landing import land
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import SourceError, open_table_stream
from adu_assets.warehouse import LandingStore


def export(cfg: ConnectionConfig, table: str, root: Path, **kw: Any) -> tuple[dict[str, Any], list[str]]:
    stream = open_table_stream(
        cfg, schema="main", table=table, label="f", incremental_column=None, window=None,
        partition_keys=["2024-01-01"], **kw,
    )
    notes = list(stream.notes)
    try:
        meta = land(stream, ["parquet", "duckdb"], root, dg.AssetKey(["f", "main", table]))
    finally:
        stream.close()
    return meta, notes


def read_both(root: Path, table: str, columns: str) -> list[tuple[Any, ...]]:
    files = str(root / "parquet" / "f" / "main" / table / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        parquet = con.execute(f"SELECT {columns} FROM read_parquet('{files}') ORDER BY id").fetchall()
    with LandingStore(data_dir=str(root)).connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        wh = con.execute(f"SELECT {columns} FROM f_main.{table} ORDER BY id").fetchall()
    assert parquet == wh
    return parquet


@pytest.fixture
def duck_file(tmp_path: Path) -> ConnectionConfig:
    path = tmp_path / "src.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        con.execute(
            "CREATE TABLE big (id INT, h HUGEINT, u UHUGEINT, iv INTERVAL, m mood, tz TIMETZ, "
            "l INTERVAL[])"
        )
        con.execute(
            "INSERT INTO big VALUES "
            "(1, 99999999999999999999999999999999999999, 5, INTERVAL '-1 day -2 hours', 'happy', "
            "TIMETZ '10:00:00+02', [INTERVAL '-1 second']), "
            "(2, -12345678901234567890123456789, 0, INTERVAL '1 year 2 months -3 days 00:00:00.000007', 'sad', "
            "TIMETZ '23:00:00-05:30', NULL), (3, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        con.execute("CREATE TABLE huger (id INT, h HUGEINT)")
        con.execute("INSERT INTO huger VALUES (1, 170141183460469231731687303715884105727), (2, -1)")
    return ConnectionConfig(kind="duckdb", path=str(path))


def test_duckdb_hugeint_interval_enum_land_exactly(duck_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(duck_file, "big", root)
    rows = read_both(root, "big", "id, typeof(h), CAST(h AS VARCHAR), typeof(u), CAST(u AS VARCHAR), iv, m, tz, l")
    assert rows[0][:5] == (1, "DECIMAL(38,0)", "99999999999999999999999999999999999999", "DECIMAL(38,0)", "5")
    assert rows[1][2] == "-12345678901234567890123456789"
    with duckdb.connect(duck_file.path) as con:  # type: ignore[arg-type]
        expected = con.execute(
            "SELECT id, CAST(iv AS VARCHAR), CAST(m AS VARCHAR), CAST(tz AS VARCHAR), CAST(l AS VARCHAR) FROM big ORDER BY id"
        ).fetchall()
        # The landed interval text casts back to the very same interval.
        assert con.execute(
            "SELECT bool_and(CAST(CAST(iv AS VARCHAR) AS INTERVAL) = iv) FROM big"
        ).fetchone() == (True,)
    assert [(r[0], *r[5:]) for r in rows] == expected
    joined = "\n".join(notes)
    assert "h: HUGEINT landed as DECIMAL(38,0)" in joined
    assert "u: UHUGEINT landed as DECIMAL(38,0)" in joined
    assert "iv: interval landed as text" in joined
    assert "m: enum landed as text" in joined
    assert "tz: TIME WITH TIME ZONE landed as text" in joined
    assert "l: INTERVAL[] landed as DuckDB's text form" in joined


def test_duckdb_hugeint_over_38_digits_lands_as_text(duck_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(duck_file, "huger", root)
    assert read_both(root, "huger", "id, typeof(h), h") == [
        (1, "VARCHAR", "170141183460469231731687303715884105727"), (2, "VARCHAR", "-1")]
    assert "h: HUGEINT has values over 38 digits: landed as exact text" in notes


def test_duckdb_cast_override(duck_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(duck_file, "huger", root, casts={"h": "double"})
    assert read_both(root, "huger", "id, typeof(h)") == [(1, "DOUBLE"), (2, "DOUBLE")]
    assert "h: HUGEINT cast to double as the YAML asks (cast:)" in notes


@pytest.fixture
def sqlite_file(tmp_path: Path) -> ConnectionConfig:
    path = tmp_path / "src.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE ev (id INTEGER, at TIMESTAMP, note TEXT, r REAL, b BLOB);
        INSERT INTO ev VALUES (1, '2024-01-01 08:00:00+01:00', 'x', 0.1, x'00ff'),
                              (2, '2024-01-01 08:00:00', 'y', 1e300, NULL),
                              (3, '2024-01-01T08:00:00.123456-05:30', NULL, -2.5, x'61');
        CREATE TABLE amounts (id INTEGER, whole NUMERIC, mixed DECIMAL(30,2), small NUMERIC);
        INSERT INTO amounts VALUES (1, 9007199254740993, 9007199254740993, 1), (2, -1, 2.5, 2.5);
        CREATE TABLE plain_ts (id INTEGER, at TIMESTAMP);
        INSERT INTO plain_ts VALUES (1, '2024-01-01 08:00:00');
        CREATE TABLE loose (id INTEGER, ints, reals, mixed, words, blobs, bad);
        INSERT INTO loose VALUES (1, 1, 2.5, 1, 'a', x'00', x'01'), (2, 9007199254740993, 0.1, 'two', 'b', x'ff', 'text'),
                                 (3, NULL, 1e-300, 3.25, NULL, NULL, NULL), (4, 7, 1.0, NULL, '', x'', NULL);
        """
    )
    con.commit()
    con.close()
    return ConnectionConfig(kind="sqlite", path=str(path))


def test_sqlite_timestamp_offsets_land_as_the_right_instant(sqlite_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(sqlite_file, "ev", root)
    rows = read_both(root, "ev", 'id, typeof("at"), "at", note, r, b')
    assert [r[1] for r in rows] == ["TIMESTAMP WITH TIME ZONE"] * 3
    assert [r[2] for r in rows] == [
        datetime(2024, 1, 1, 7, 0, tzinfo=UTC),
        datetime(2024, 1, 1, 8, 0, tzinfo=UTC),
        datetime(2024, 1, 1, 13, 30, 0, 123456, tzinfo=UTC),
    ]
    # The other columns come through sqlite_query's text unchanged: doubles to the last bit, blobs byte for byte.
    assert [r[3:] for r in rows] == [("x", 0.1, b"\x00\xff"), ("y", 1e300, None), (None, -2.5, b"a")]
    assert any(n.startswith("at: TIMESTAMP text with UTC offsets landed as TIMESTAMPTZ") for n in notes)


def test_sqlite_timestamps_without_offsets_stay_timestamps(sqlite_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(sqlite_file, "plain_ts", root)
    assert read_both(root, "plain_ts", 'id, typeof("at"), "at"') == [(1, "TIMESTAMP", datetime(2024, 1, 1, 8, 0))]
    assert notes == []


def test_sqlite_untyped_columns_take_their_values_type(sqlite_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    # A column holding BLOBs and text cannot be one exact type: refused, naming the column and the fix.
    with pytest.raises(SourceError, match=r"f\.loose: untyped column bad holds BLOBs and text.*cast: \{bad: text\}"):
        export(sqlite_file, "loose", root)
    _, notes = export(sqlite_file, "loose", root, casts={"bad": "text"})
    rows = read_both(
        root, "loose",
        "id, typeof(ints), ints, typeof(reals), reals, typeof(mixed), mixed, typeof(words), words, typeof(blobs), blobs",
    )
    assert rows[0][1:4:2] == ("BIGINT", "DOUBLE") and rows[0][9] == "BLOB"
    assert [r[2] for r in rows] == [1, 9007199254740993, None, 7]
    assert [r[4] for r in rows] == [2.5, 0.1, 1e-300, 1.0]
    assert rows[0][5] == "VARCHAR" and [r[6] for r in rows] == ["1", "two", "3.25", None]
    assert [r[8] for r in rows] == ["a", "b", None, ""]
    assert [r[10] for r in rows] == [b"\x00", b"\xff", None, b""]
    assert "mixed: untyped column holding integer, real, text values landed as text" in notes
    assert "bad: untyped cast to text as the YAML asks (cast:) (BLOB values as hex)" in notes
    assert read_both(root, "loose", "id, bad") == [(1, "01"), (2, "text"), (3, None), (4, None)]


def test_sqlite_numeric_integers_beyond_double_stay_exact(sqlite_file: ConnectionConfig, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _, notes = export(sqlite_file, "amounts", root)
    assert read_both(root, "amounts", "id, typeof(whole), whole, typeof(mixed), mixed, typeof(small), small") == [
        (1, "BIGINT", 9007199254740993, "VARCHAR", "9007199254740993", "DOUBLE", 1.0),
        (2, "BIGINT", -1, "VARCHAR", "2.5", "DOUBLE", 2.5),
    ]
    assert "whole: NUMERIC holds only integers, some beyond 2^53: landed as BIGINT" in notes
    assert "mixed: DECIMAL(30,2) holds integers beyond 2^53 and other values: landed as text" in notes
    assert len(notes) == 2


def test_sqlite_odd_table_name_through_sqlite_query(tmp_path: Path) -> None:
    path = tmp_path / "odd.sqlite"
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE "Order ""Details"" \'x\'" (id INTEGER, "Unit Price" REAL, loose)')
    con.execute('INSERT INTO "Order ""Details"" \'x\'" VALUES (1, 14.1, 7), (2, NULL, 8)')
    con.commit()
    con.close()
    cfg = ConnectionConfig(kind="sqlite", path=str(path))
    stream = open_table_stream(cfg, schema="main", table='Order "Details" \'x\'', label="f", incremental_column=None,
                               window=None, partition_keys=["2024-01-01"])
    try:
        assert "sqlite_query" in stream.sql  # the untyped column is read through SQLite's own SQL
        root = tmp_path / "data"
        land(stream, ["parquet", "duckdb"], root, dg.AssetKey(["f", "main", "Order_Details_x"]))
    finally:
        stream.close()
    assert read_both(root, "Order_Details_x", 'id, "Unit Price", typeof(loose), loose') == [
        (1, 14.1, "BIGINT", 7), (2, None, "BIGINT", 8)]
