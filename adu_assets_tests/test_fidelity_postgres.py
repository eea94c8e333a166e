"""Every PostgreSQL value lands exactly, in Parquet and in the warehouse, through the DatabaseExport component.

One table per case of issue 10 in one real database, exported by discovery with `dg.materialize`-style runs of
the YAML component. Source values are compared with landed ones exactly: numerics as text or as exact
Decimals, intervals by their (months, days, microseconds) parts, timestamps as epoch microseconds.
"""

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets import warehouse
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, load_problems, run_partition, write_component
from adu_assets_tests.pg_server import PgServer

CASES_DDL = r"""
CREATE DOMAIN year AS integer CHECK (VALUE > 1900);
CREATE DOMAIN money2 AS numeric(12,2);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE num_nan (id int, n numeric, n38 numeric(38,10));
INSERT INTO num_nan VALUES (1, 'NaN', 'NaN'), (2, 1.5, 1.25), (3, NULL, NULL),
  (4, -0.000001, 1234567890123456789012345678.0123456789);

CREATE TABLE num_wide (id int, w numeric(50,5));
INSERT INTO num_wide VALUES (1, 123456789012345678901234567890123456789012345.12345), (2, -1), (3, NULL);

CREATE TABLE num_wide_fits (id int, w numeric(50,5));
INSERT INTO num_wide_fits VALUES (1, 1234567890123456789012345678901.12345), (2, -0.00001);

CREATE TABLE num_free (id int, v numeric);
INSERT INTO num_free VALUES (1, 1.5), (2, 123.456789), (3, -99999999999999999999.1), (4, 0), (5, NULL);

CREATE TABLE num_free_tight (id int, v numeric);
INSERT INTO num_free_tight VALUES (1, 123456789012345678901234567890.25), (2, -1.5);
CREATE TABLE num_odd_scale (id int, v numeric(2,5));
INSERT INTO num_odd_scale VALUES (1, 0.00012);

CREATE TABLE num_free_huge (id int, v numeric);
INSERT INTO num_free_huge VALUES (1, 1e40), (2, 0.000000000000000000000000000000001);
CREATE TABLE num_inf (id int, v numeric);
INSERT INTO num_inf VALUES (1, 'Infinity'), (2, '-Infinity'), (3, 2.5);

CREATE TABLE num_double (id int, d numeric);
INSERT INTO num_double VALUES (1, 'NaN'), (2, 2.5);

CREATE TABLE iv (id int, iv interval);
INSERT INTO iv VALUES (1, '-1 day -02:00:03.5'), (2, '1 year 2 mons -3 days 04:05:06.000007'),
  (3, '-5 years'), (4, '00:00:00'), (5, NULL), (6, '1 mon -1 day -0.000001 sec'), (7, '-178000000 years');

CREATE TABLE dom (id int, y year, m money2);
INSERT INTO dom VALUES (1, 1999, 12.34), (2, 2024, -0.01), (3, NULL, NULL);

CREATE TABLE en (id int, feeling mood, doc json, docb jsonb, happened timestamptz, tz timetz);
INSERT INTO en VALUES
  (1, 'happy', '{"a":  1, "a": 2}', '{"b": [1, 2], "c": null}', '2024-01-01 08:00:00+01', '10:00+02'),
  (2, 'sad', '[1, "x"]', '"s"', '1999-12-31 23:59:59.999999-05', '23:59:59.5-05:30'), (3, NULL, NULL, NULL, NULL, NULL);

CREATE TABLE payment (id int, paid date, amount numeric(5,2)) PARTITION BY RANGE (paid);
CREATE TABLE payment_2024_01 PARTITION OF payment FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE payment_2024_02 PARTITION OF payment FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO payment VALUES (1, '2024-01-05', 1.99), (2, '2024-01-30', 2.99), (3, '2024-02-10', 3.99);
CREATE VIEW payment_view AS SELECT * FROM payment;

CREATE TABLE "Order Details" (id int, "Unit Price" numeric(10,2));
INSERT INTO "Order Details" VALUES (1, 14.00), (2, 9.80);
CREATE TABLE "a/b" (id int);
INSERT INTO "a/b" VALUES (1);
CREATE TABLE "Café ☕" (id int);
INSERT INTO "Café ☕" VALUES (1), (2);
CREATE TABLE "it's ""q"" x" (id int);
INSERT INTO "it's ""q"" x" VALUES (3);
CREATE TABLE ".." (id int);
INSERT INTO ".." VALUES (4);
"""

EXPECTED_KEYS = {
    "num_nan", "num_inf", "num_free_tight", "num_odd_scale", "num_wide", "num_wide_fits", "num_free", "num_free_huge", "num_double", "iv", "dom", "en",
    "payment", "Order_Details", "a_b", "Cafe", "it_s_q_x", "t_" + hashlib.sha1(b"..").hexdigest()[:8],
}


@pytest.fixture
def defs_dir(tmp_path: Path, dagster_home: Path) -> Path:
    d = tmp_path / "user_defs"
    d.mkdir()
    return d


@pytest.fixture
def cases_db(pg: PgServer, pg_db: str) -> str:
    with pg.connect(pg_db) as conn:
        conn.execute(CASES_DDL)
    return pg_db


def landed(tmp_path: Path, table: str, columns: str = "*") -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(Parquet rows, warehouse rows) of one landed table, ordered by id."""
    files = str(tmp_path / "data" / "parquet" / "fid" / "public" / table / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        parquet = con.execute(
            f"SELECT {columns} FROM read_parquet('{files}') ORDER BY id"
        ).fetchall()
    with warehouse.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        wh = con.execute(f'SELECT {columns} FROM "fid_public"."{table}" ORDER BY id').fetchall()
    return parquet, wh


def both(tmp_path: Path, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    parquet, wh = landed(tmp_path, table, columns)
    assert parquet == wh, f"{table}: Parquet and warehouse differ"
    return parquet


def types_of(tmp_path: Path, table: str) -> dict[str, str]:
    files = str(tmp_path / "data" / "parquet" / "fid" / "public" / table / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        parquet = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files}')").fetchall()}
    with warehouse.connect() as con:
        wh = {r[0]: r[1] for r in con.execute(f'DESCRIBE "fid_public"."{table}"').fetchall()}
    parquet.pop("adu_partition", None)
    wh.pop("adu_partition", None)
    assert parquet == wh or {k: v for k, v in wh.items() if v != "JSON"} == {
        k: v for k, v in parquet.items() if wh.get(k) != "JSON"
    }
    return wh


def source(pg: PgServer, db: str, sql: str) -> list[tuple[Any, ...]]:
    with pg.connect(db) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


@pytest.fixture
def exported(
    pg: PgServer, cases_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, dict[str, Any]]:
    """Every discovered table materialized once; returns the materialization metadata by key's last part."""
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        "name": "fid", "connection": pg_connection_yaml(pg, cases_db), "start_date": "2024-01-01",
    })
    d = load(defs_dir, monkeypatch)
    keys = sorted(d.resolve_all_asset_keys(), key=lambda k: k.path)
    assert {k.path[-1] for k in keys} == EXPECTED_KEYS
    result = run_partition(d, keys, "2024-01-02")
    failures = [e.event_specific_data.error.to_string() for e in result.all_events  # type: ignore[union-attr]
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks, "the inferred schema check ran"
    for e in checks:
        evaluation = e.event_specific_data
        assert evaluation.passed, (evaluation.asset_key, evaluation.description)  # type: ignore[union-attr]
    return {
        e.asset_key.path[-1]: dict(e.materialization.metadata)  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }


def notes(meta: dict[str, Any]) -> str:
    return str(meta["type_notes"].value) if "type_notes" in meta else ""


def test_every_case_lands_exactly_in_both_destinations(
    pg: PgServer, cases_db: str, exported: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    # numeric with NaN: never 0; the column lands as PostgreSQL's exact text, and the metadata says so.
    assert both(tmp_path, "num_nan", "id, n, n38") == source(
        pg, cases_db, "SELECT id, n::text, n38::text FROM num_nan ORDER BY id")
    assert types_of(tmp_path, "num_nan") == {"id": "INTEGER", "n": "VARCHAR", "n38": "VARCHAR"}
    assert "n: numeric holds NaN" in notes(exported["num_nan"])
    assert "n38: numeric(38,10) holds NaN" in notes(exported["num_nan"])
    assert "cast: {n: double}" in notes(exported["num_nan"])

    # numeric(50,5) with a value over 38 digits: exact text; one that fits: DECIMAL(38,5).
    assert both(tmp_path, "num_wide", "id, w") == source(pg, cases_db, "SELECT id, w::text FROM num_wide ORDER BY id")
    assert "w: numeric(50,5) has values wider than 38 digits" in notes(exported["num_wide"])
    assert types_of(tmp_path, "num_wide_fits")["w"] == "DECIMAL(38,5)"
    assert both(tmp_path, "num_wide_fits", "id, CAST(w AS VARCHAR)") == source(
        pg, cases_db, "SELECT id, w::text FROM num_wide_fits ORDER BY id")
    assert "DECIMAL(38,5)" in notes(exported["num_wide_fits"])

    # Unconstrained numeric: one probe finds scale 6 and 20 integer digits -> DECIMAL(38,10) (at least 10
    # decimals while the values leave room, so tomorrow's 7-decimal value does not change the type).
    assert types_of(tmp_path, "num_free")["v"] == "DECIMAL(38,10)"
    landed_free = both(tmp_path, "num_free", "id, v")
    assert landed_free == source(pg, cases_db, "SELECT id, v FROM num_free ORDER BY id")
    assert [str(v) for _, v in landed_free if v is not None] == [
        "1.5000000000", "123.4567890000", "-99999999999999999999.1000000000", "0E-10"]
    # 30 integer digits leave no room for 10 decimals: the scale found (2) is used.
    assert types_of(tmp_path, "num_free_tight")["v"] == "DECIMAL(38,2)"
    assert both(tmp_path, "num_free_tight", "id, v") == source(pg, cases_db, "SELECT id, v FROM num_free_tight ORDER BY id")
    # numeric(2,5): a scale over the precision, which DuckDB's DECIMAL cannot declare.
    assert types_of(tmp_path, "num_odd_scale")["v"] == "DECIMAL(38,5)"
    assert both(tmp_path, "num_odd_scale", "id, CAST(v AS VARCHAR)") == [(1, "0.00012")]
    # ... and too wide for any DECIMAL: exact text.
    assert types_of(tmp_path, "num_free_huge")["v"] == "VARCHAR"
    assert both(tmp_path, "num_free_huge", "id, v") == source(
        pg, cases_db, "SELECT id, v::text FROM num_free_huge ORDER BY id")

    # Infinity has no DECIMAL form either.
    assert both(tmp_path, "num_inf", "id, v") == [(1, "Infinity"), (2, "-Infinity"), (3, "2.5")]
    assert "v: numeric holds NaN or Infinity (2 values)" in notes(exported["num_inf"])

    # Intervals, negative ones included: text that PostgreSQL parses back to the same months/days/microseconds.
    assert types_of(tmp_path, "iv")["iv"] == "VARCHAR"
    texts = both(tmp_path, "iv", "id, iv")
    parts = (
        "extract(year from x)*12 + extract(month from x), extract(day from x), "
        "(extract(hour from x)*3600 + extract(minute from x)*60)*1000000 + extract(microseconds from x)"
    )
    original = source(pg, cases_db, f"SELECT id, {parts} FROM (SELECT id, iv AS x FROM iv) s ORDER BY id")
    with pg.connect(cases_db) as conn:
        back = [
            (i, *conn.execute(f"SELECT {parts} FROM (SELECT %s::interval AS x) s", [t]).fetchone())  # type: ignore[misc]
            for i, t in texts
        ]
    assert back == original
    assert "iv: interval landed as text" in notes(exported["iv"])
    # DuckDB reads the landed text back as the same interval.
    with warehouse.connect() as con:
        assert con.execute(
            "SELECT CAST(iv AS INTERVAL) = INTERVAL '-1 day -02:00:03.5' FROM fid_public.iv WHERE id = 1"
        ).fetchone() == (True,)

    # A domain lands as its base type.
    assert types_of(tmp_path, "dom") == {"id": "INTEGER", "y": "INTEGER", "m": "DECIMAL(12,2)"}
    assert both(tmp_path, "dom", "id, y, m") == source(pg, cases_db, "SELECT id, y, m FROM dom ORDER BY id")

    # enum, json, jsonb, timestamptz (epoch microseconds), timetz.
    wh_types = types_of(tmp_path, "en")
    assert wh_types["feeling"] == "VARCHAR" and wh_types["docb"] == "JSON" and wh_types["tz"] == "VARCHAR"
    rows = both(tmp_path, "en", "id, feeling, CAST(doc AS VARCHAR), CAST(docb AS VARCHAR), epoch_us(happened), tz")
    assert [r[:5] for r in rows] == [
        (i, f, d, b, None if a is None else int(a)) for i, f, d, b, a in source(
            pg, cases_db,
            "SELECT id, feeling::text, doc::text, docb::text, (extract(epoch from happened) * 1000000)::bigint "
            "FROM en ORDER BY id")
    ]
    # timetz: PostgreSQL reads the landed text back as the same time and offset.
    with pg.connect(cases_db) as conn:
        for i, *_, tz in rows:
            same = conn.execute("SELECT %s::timetz::text IS NOT DISTINCT FROM tz::text FROM en WHERE id = %s",
                                [tz, i]).fetchone()
            assert same == (True,), (i, tz)
    for expected in ("feeling: enum mood landed as text", "doc: json landed as JSON", "docb: jsonb landed as JSON",
                     "tz: time with time zone landed as text"):
        assert expected in notes(exported["en"])

    # A partitioned table: the parent once, with all its partitions' rows, exactly once.
    assert both(tmp_path, "payment", "id, paid, amount") == source(
        pg, cases_db, "SELECT id, paid, amount FROM payment ORDER BY id")

    # Names outside [A-Za-z0-9_]: readable keys, exact source names in the SQL.
    assert both(tmp_path, "Order_Details", 'id, "Unit Price"') == source(
        pg, cases_db, 'SELECT id, "Unit Price" FROM "Order Details" ORDER BY id')
    assert both(tmp_path, "a_b", "id") == [(1,)]
    assert both(tmp_path, "Cafe", "id") == [(1,), (2,)]
    assert both(tmp_path, "it_s_q_x", "id") == [(3,)]
    dots = "t_" + hashlib.sha1(b"..").hexdigest()[:8]
    assert both(tmp_path, dots, "id") == [(4,)]
    # Nothing landed outside the data folder.
    assert not (tmp_path / "data" / "parquet" / "fid" / "id").exists()
    assert {p.name for p in (tmp_path / "data" / "parquet" / "fid" / "public").iterdir()} == EXPECTED_KEYS


def test_cast_double_keeps_nan_and_is_noted(
    pg: PgServer, cases_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        "name": "fid", "connection": pg_connection_yaml(pg, cases_db), "start_date": "2024-01-01",
        "tables": [{"name": "num_double", "cast": {"d": "double"}}],
    })
    d = load(defs_dir, monkeypatch)
    key = dg.AssetKey(["fid", "public", "num_double"])
    result = run_partition(d, [key], "2024-01-02")
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata  # type: ignore[union-attr]
    assert "d: numeric cast to double as the YAML asks (cast:)" in str(meta["type_notes"].value)
    # NaN, not 0, in both destinations.
    assert both(tmp_path, "num_double", "id, typeof(d), CAST(d AS VARCHAR)") == [(1, "DOUBLE", "nan"), (2, "DOUBLE", "2.5")]


def test_cast_to_decimal_over_nan_fails_before_writing(
    pg: PgServer, cases_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        "name": "fid", "connection": pg_connection_yaml(pg, cases_db), "start_date": "2024-01-01",
        "tables": [{"name": "num_double", "cast": {"d": "decimal(10,2)"}}, {"name": "dom", "cast": {"nope": "text"}}],
    })
    d = load(defs_dir, monkeypatch)
    result = run_partition(d, list(d.resolve_all_asset_keys()), "2024-01-02")
    assert not result.success
    messages = [e.event_specific_data.error.to_string() for e in result.all_events  # type: ignore[union-attr]
                if e.event_type_value == "STEP_FAILURE"]
    assert any("fid.num_double" in m and "column d" in m and "cast: {d: double}" in m for m in messages), messages
    assert any("fid.dom" in m and "cast: names nope" in m for m in messages), messages
    # Refused before anything was written.
    assert not (tmp_path / "data" / "parquet").exists() or not list((tmp_path / "data" / "parquet").rglob("*.parquet"))


def test_bad_cast_word_names_the_field(
    pg: PgServer, cases_db: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        "name": "fid", "connection": pg_connection_yaml(pg, cases_db), "start_date": "2024-01-01",
        "tables": [{"name": "num_double", "cast": {"d": "float128"}}],
    })
    text = load_problems(defs_dir, monkeypatch)
    assert "cast.d" in text and "float128" in text and "double" in text


def test_partition_named_in_tables_is_exportable(
    pg: PgServer, cases_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        "name": "fid", "connection": pg_connection_yaml(pg, cases_db), "start_date": "2024-01-01",
        "tables": [{"name": "payment_2024_01"}],
    })
    d = load(defs_dir, monkeypatch)
    result = run_partition(d, list(d.resolve_all_asset_keys()), "2024-01-02")
    assert result.success
    assert both(tmp_path, "payment_2024_01", "id") == [(1,), (2,)]


def test_tables_differing_only_in_case_are_refused_then_named_apart(
    pg: PgServer, pg_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute('CREATE TABLE "Orders" (id int); INSERT INTO "Orders" VALUES (1);'
                     "CREATE TABLE orders (id int); INSERT INTO orders VALUES (2), (3);")
    yaml = {"name": "fid", "connection": pg_connection_yaml(pg, pg_db), "start_date": "2024-01-01"}
    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", yaml)
    text = load_problems(defs_dir, monkeypatch)
    assert "'Orders'" in text and "'orders'" in text and "asset_name" in text

    write_component(defs_dir, "fid", "adu_assets.DatabaseExport", {
        **yaml, "tables": [{"name": "Orders", "asset_name": "orders_upper"}, {"name": "orders"}]})
    d = load(defs_dir, monkeypatch)
    assert sorted(k.path[-1] for k in d.resolve_all_asset_keys()) == ["orders", "orders_upper"]
    result = run_partition(d, list(d.resolve_all_asset_keys()), "2024-01-02")
    assert result.success
    assert both(tmp_path, "orders_upper", "id") == [(1,)]
    assert both(tmp_path, "orders", "id") == [(2,), (3,)]


@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp", "date", "stamp"])
def test_window_read_by_postgres_itself_selects_the_same_rows(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path, column_type: str
) -> None:
    """A table read through postgres_query (NaN numeric) filters its window in PostgreSQL's SQL: the same
    rows as the scanner path (`window_filter`) selects for an identical table without NaN."""
    from datetime import UTC, datetime

    from adu_assets.io_managers.landing import land
    from adu_assets.sources.connection import ConnectionConfig
    from adu_assets.sources.databases import open_table_stream

    values = "(1, '2024-04-30 23:59:59'), (2, '2024-05-01 00:00:00'), (3, '2024-05-01 23:59:59.999999'), " \
             "(4, '2024-05-02 00:00:00'), (5, '2024-05-02 12:00:00')"
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE DOMAIN stamp AS timestamptz")  # a domain compares as its base type
        for table, n in (("via_query", "'NaN'"), ("via_scanner", "1")):
            conn.execute(f"CREATE TABLE {table} (id int, at {column_type}, n numeric(10,2) DEFAULT {n})")
            conn.execute(f"INSERT INTO {table} (id, at) VALUES {values}")
    cfg = ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=pg_db, user=pg.user,
                           password_env=pg_password_env)
    window = (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC))
    landed_ids = {}
    for table in ("via_query", "via_scanner"):
        stream = open_table_stream(cfg, schema="public", table=table, label="w", incremental_column="at",
                                   window=window, partition_keys=["2024-05-01"])
        assert ("postgres_query" in stream.sql) == (table == "via_query")
        try:
            meta = land(stream, ["parquet"], tmp_path, dg.AssetKey(["w", "public", table]))
        finally:
            stream.close()
        with duckdb.connect() as con:
            landed_ids[table] = [r[0] for r in con.execute(
                f"SELECT id FROM read_parquet('{meta['path'].value}') ORDER BY id").fetchall()]
    expected = [2, 3]
    assert landed_ids == {"via_query": expected, "via_scanner": expected}


ODD_DDL = """
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN year AS integer;
CREATE DOMAIN year2 AS year;
CREATE TABLE {table} (id int, b bit(3), ip inet, pt point, x xml, o oid, t3 time(3), ts3 timestamp(3),
  ua uuid[], p pair, y2 year2, ta text[], i8 int8[], f4 real, hv timestamp, n numeric(10,2) DEFAULT {n});
INSERT INTO {table} (id, b, ip, pt, x, o, t3, ts3, ua, p, y2, ta, i8, f4, hv) VALUES
  (1, B'101', '10.0.0.1/24', '(1,2)', '<a/>', 42, '10:00:00.123', '2024-01-01 10:00:00.123',
   '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}', ROW(1, 'x'), 2000, '{{"a b",NULL}}', '{{1,NULL}}', 0.1, '-infinity'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity');
"""


@pytest.mark.parametrize("path", ["scanner", "postgres_query"])
def test_odd_types_land_the_same_in_both_destinations_and_are_noted(
    pg: PgServer, pg_db: str, pg_password_env: str, dagster_home: Path, tmp_path: Path, path: str
) -> None:
    from adu_assets.io_managers.landing import land
    from adu_assets.sources.connection import ConnectionConfig
    from adu_assets.sources.databases import open_table_stream

    table = "odd"
    with pg.connect(pg_db) as conn:
        conn.execute(ODD_DDL.format(table=table, n="'NaN'" if path == "postgres_query" else "1"))
    cfg = ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=pg_db, user=pg.user,
                           password_env=pg_password_env)
    stream = open_table_stream(cfg, schema="public", table=table, label="fid", incremental_column=None,
                               window=None, partition_keys=["2024-01-02"])
    assert ("postgres_query" in stream.sql) == (path == "postgres_query")
    try:
        meta = land(stream, ["parquet", "duckdb"], tmp_path / "data", dg.AssetKey(["fid", "public", table]))
    finally:
        stream.close()
    text = str(meta["type_notes"].value)
    for expected in ("b: bit(3) read as text", "ip: inet read as text", "x: xml read as text"):
        assert expected in text
    if path == "postgres_query":
        assert "pt: point read as VARCHAR (the table is read through postgres_query" in text
        assert "p: pair read as VARCHAR" in text
    rows = both(tmp_path, table, "id, b, ip, x, t3, ts3, ua, ta, i8, f4, CAST(hv AS VARCHAR), y2")
    assert rows[0][1:4] == ("101", "10.0.0.1/24", "<a/>")
    assert str(rows[0][4]) == "10:00:00.123000" and str(rows[0][5]) == "2024-01-01 10:00:00.123000"
    assert rows[0][7:10] == (["a b", None], [1, None], pytest.approx(0.1, rel=1e-7))
    assert [r[10] for r in rows] == ["-infinity", "infinity"]
    assert rows[0][11] == 2000  # a domain over a domain over integer lands as INTEGER
