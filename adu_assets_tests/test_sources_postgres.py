"""PostgreSQL through DuckDB's scanner, against a real server: types, discovery, quoting, errors."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.landing import land
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import SourceError, discover, open_table_stream
from adu_assets_tests.pg_server import PgServer

TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id int PRIMARY KEY, amount numeric(15,2), happened timestamptz, day date, blob bytea, ratio real,
    tags text[], feeling mood, doc json, docb jsonb, ident uuid, price money, words tsvector
);
INSERT INTO typed VALUES
 (1, 12345.67, '2024-05-01 10:00:00+02', '2024-05-01', '\\x00ff', 0.5, '{a,b}', 'happy', '{"k": 1}', '{"k": 2}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 9.99, to_tsvector('simple', 'hello world'));
CREATE VIEW typed_view AS SELECT id FROM typed;
CREATE TABLE "users""; drop table typed; --" (id int);
INSERT INTO "users""; drop table typed; --" VALUES (7);
"""


def conn_cfg(pg: PgServer, db: str, env: str) -> ConnectionConfig:
    return ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=db, user=pg.user, password_env=env)


@pytest.fixture
def typed_db(pg: PgServer, pg_db: str) -> str:
    with pg.connect(pg_db) as conn:
        conn.execute(TYPES_DDL)
    return pg_db


def export(cfg: ConnectionConfig, table: str, tmp_path: Path, **kw: object) -> tuple[dict[str, object], Path]:
    stream = open_table_stream(
        cfg, schema="public", table=table, label="t", incremental_column=kw.get("incremental_column"),  # type: ignore[arg-type]
        window=kw.get("window"), partition_keys=kw.get("partition_keys", ["2024-05-01"]),  # type: ignore[arg-type]
    )
    try:
        meta = land(stream, ["parquet"], tmp_path, dg.AssetKey(["t", "public", table]))
    finally:
        stream.close()
    # One uniquely named file a partition, in the partition's folder.
    folder = Path(str(meta["path"].value))  # type: ignore[attr-defined]
    return meta, next(folder.glob("*.parquet"), folder)


def test_types_survive_to_parquet(pg: PgServer, typed_db: str, pg_password_env: str, tmp_path: Path) -> None:
    meta, path = export(conn_cfg(pg, typed_db, pg_password_env), "typed", tmp_path)
    table = pq.read_table(path)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["amount"] == "decimal128(15, 2)"
    assert schema["happened"] == "timestamp[us, tz=UTC]"
    assert schema["day"] == "date32[day]"
    assert schema["blob"] == "binary"
    assert schema["ratio"] == "float"
    assert schema["tags"].startswith("list<")
    row = table.to_pylist()[0]
    assert row["amount"] == Decimal("12345.67")
    assert row["happened"] == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert row["blob"] == b"\x00\xff"
    assert row["tags"] == ["a", "b"]
    assert row["feeling"] == "happy"
    assert '"k"' in row["doc"]
    assert str(row["ident"]).replace("-", "").endswith("6bb9bd380a11") or row["ident"] is not None
    # Types with no faithful Parquet type arrive as text, and the metadata says so.
    notes = meta["type_notes"].value  # type: ignore[attr-defined]
    assert "price: money read as text" in notes
    assert "words: tsvector read as text" in notes
    assert meta["dagster/row_count"].value == 1  # type: ignore[attr-defined]


def test_discovery_lists_base_tables_only(pg: PgServer, typed_db: str, pg_password_env: str) -> None:
    tables = discover(conn_cfg(pg, typed_db, pg_password_env), "public", label="t")
    names = sorted(t.name for t in tables)
    assert names == ['typed', 'users"; drop table typed; --']
    typed = next(t for t in tables if t.name == "typed")
    assert ("amount", "numeric(15,2)") in [(c.name, c.type) for c in typed.columns]


def test_hostile_table_name_is_one_quoted_identifier(
    pg: PgServer, typed_db: str, pg_password_env: str, tmp_path: Path
) -> None:
    meta, path = export(conn_cfg(pg, typed_db, pg_password_env), 'users"; drop table typed; --', tmp_path)
    assert pq.read_table(path).drop_columns(["adu_partition"]).to_pylist() == [{"id": 7}]
    with pg.connect(typed_db) as conn:
        assert conn.execute("SELECT count(*) FROM typed").fetchone() == (1,)


def test_unknown_table_and_column_are_clear_errors(pg: PgServer, typed_db: str, pg_password_env: str) -> None:
    cfg = conn_cfg(pg, typed_db, pg_password_env)
    with pytest.raises(SourceError, match=r"table public.nope was not found at the source \(tables found: typed"):
        open_table_stream(cfg, schema="public", table="nope", label="t", incremental_column=None, window=None,
                          partition_keys=["2024-05-01"])
    with pytest.raises(SourceError, match="column 'missing' is not in public.typed"):
        open_table_stream(cfg, schema="public", table="typed", label="t", incremental_column="missing",
                          window=None, partition_keys=["2024-05-01"])


def test_wrong_password_error_names_source_not_secret(
    pg: PgServer, typed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_PW", "canary-wrong-Zx81")
    cfg = conn_cfg(pg, typed_db, "WRONG_PW")
    with pytest.raises(SourceError) as err:
        discover(cfg, "public", label="orders_db")
    text = str(err.value)
    assert "cannot open source orders_db" in text
    assert "password authentication failed" in text
    assert "canary-wrong-Zx81" not in text


def test_incremental_window_and_range_split(pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE ev (id int, at timestamptz)")
        conn.execute(
            "INSERT INTO ev VALUES (1, '2024-05-01 00:00:00+00'), (2, '2024-05-01 23:59:59+00'), "
            "(3, '2024-05-02 12:00:00+00'), (4, '2024-05-04 01:00:00+00'), (5, '2024-04-30 23:59:59+00')"
        )
    cfg = conn_cfg(pg, pg_db, pg_password_env)
    window = (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 4, tzinfo=UTC))
    meta, _ = export(cfg, "ev", tmp_path, incremental_column="at", window=window,
                     partition_keys=["2024-05-01", "2024-05-02", "2024-05-03"])
    assert meta["dagster/row_count"].value == 3  # type: ignore[attr-defined]
    assert meta["rows_by_partition"].value == {"2024-05-01": 2, "2024-05-02": 1, "2024-05-03": 0}  # type: ignore[attr-defined]
    base = tmp_path / "parquet" / "t" / "public" / "ev"
    ids = {p.parent.name: sorted(pq.read_table(p).column("id").to_pylist()) for p in base.glob("*/*.parquet")}
    # A day without rows has no file: the warehouse holds no rows for it.
    assert ids == {"adu_partition=2024-05-01": [1, 2], "adu_partition=2024-05-02": [3]}


def test_one_table_is_planned_from_its_own_catalog_rows(
    pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export reads PostgreSQL's catalog for its one table: names that differ only in case stay apart,
    the schema is not listed, and a table whose columns differ only in case is refused by name."""
    import adu_assets.sources.databases as databases

    with pg.connect(pg_db) as conn:
        conn.execute('CREATE TABLE "Mixed" (a int, label text)')
        conn.execute("CREATE TABLE mixed (x date, y numeric(5,2) NOT NULL)")
        conn.execute("""INSERT INTO "Mixed" VALUES (1, 'upper')""")
        conn.execute("INSERT INTO mixed VALUES ('2024-05-01', 1.50)")
        conn.execute('CREATE TABLE twins (id int, "Amount" numeric, amount numeric)')
        conn.execute("CREATE SCHEMA other")
        for i in range(30):
            conn.execute(f"CREATE TABLE other.t{i} (id int, v text)")

    def listed(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole schema was listed to plan one PostgreSQL table")

    monkeypatch.setattr(databases, "_discover_attached", listed)
    cfg = conn_cfg(pg, pg_db, pg_password_env)
    for name, rows in (("Mixed", [{"a": 1, "label": "upper"}]), ("mixed", [{"x": datetime(2024, 5, 1).date(), "y": Decimal("1.50")}])):
        for _ in range(2):  # the second landing finds the warehouse table the first one made
            meta, path = export(cfg, name, tmp_path)
            assert pq.read_table(path).drop_columns(["adu_partition"]).to_pylist() == rows
    stream = open_table_stream(cfg, schema="public", table="mixed", label="t", incremental_column=None,
                               window=None, partition_keys=["2024-05-01"])
    stream.close()
    assert [(c.name, c.type, c.nullable) for c in stream.table.columns] == [
        ("x", "date", True), ("y", "numeric(5,2)", False)
    ]
    with pytest.raises(SourceError, match=r"public.twins has columns whose names differ only in letter case \(Amount, amount\)"):
        open_table_stream(cfg, schema="public", table="twins", label="t", incremental_column=None, window=None,
                          partition_keys=["2024-05-01"])
    with pytest.raises(SourceError, match=r"table public.MIXED was not found at the source \(tables found: Mixed, mixed, twins\)"):
        open_table_stream(cfg, schema="public", table="MIXED", label="t", incremental_column=None, window=None,
                          partition_keys=["2024-05-01"])
