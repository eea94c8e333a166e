"""Landing in the warehouse (a DuckLake) on real files: one commit per write, idempotence, schema evolution."""

from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.landing import WarehouseSchemaError, land, landed_files
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.databases import TableStream, new_duckdb
from adu_assets.warehouse import LandingStore

KEY = dg.AssetKey(["src", "main", "items"])


def stream_of(sql: str, keys: list[str], partition_expr: str | None = None) -> TableStream:
    return TableStream(
        con=new_duckdb(), sql=sql, table=TableInfo("main", "items"), source_label="test",
        partition_keys=keys, partition_expr=partition_expr,
    )


def run(sql: str, root: Path, keys: list[str] | None = None, destinations: tuple[str, ...] = ("parquet", "duckdb"),
        partition_expr: str | None = None) -> dict[str, object]:
    s = stream_of(sql, keys or ["2024-01-01"], partition_expr)
    try:
        return land(s, list(destinations), root, KEY)
    finally:
        s.close()


def warehouse_rows(root: Path, sql: str) -> list[tuple[object, ...]]:
    con = LandingStore(data_dir=str(root)).connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tree_rows(root: Path, sql_over_t: str) -> list[tuple[object, ...]]:
    """The README's glob query over the Parquet tree, as table `t`."""
    files = landed_files(root, KEY)
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({[str(f) for f in files]!r}, hive_partitioning = true)")
        return con.execute(sql_over_t).fetchall()


def test_metadata_and_both_destinations(tmp_path: Path) -> None:
    meta = run("SELECT i AS id, 'x' || i AS name FROM range(3) t(i)", tmp_path)
    assert meta["dagster/row_count"].value == 3  # type: ignore[attr-defined]
    cols = [(c.name, c.type) for c in meta["dagster/column_schema"].columns]  # type: ignore[attr-defined]
    assert cols == [("id", "BIGINT"), ("name", "VARCHAR")]
    assert str(meta["path"].value).endswith("src/main/items/adu_partition=2024-01-01")  # type: ignore[attr-defined]
    assert meta["dagster/table_name"] == "warehouse.src_main.items"
    assert isinstance(meta["warehouse_snapshot"].value, int)  # type: ignore[attr-defined]
    assert "| id | name |" in meta["preview"].value  # type: ignore[attr-defined]
    assert meta["rows_per_s"].value >= 0  # type: ignore[attr-defined]
    assert warehouse_rows(tmp_path, "SELECT count(*), min(adu_partition) FROM src_main.items")[0][0] == 3
    files = landed_files(tmp_path, KEY, "2024-01-01")
    assert len(files) == 1 and files[0].name != "data.parquet"
    assert pq.read_metadata(files[0]).row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize("destinations", [("parquet",), ("duckdb",), ("warehouse",), ("parquet", "duckdb")])
def test_every_destination_list_lands_tree_and_warehouse_alike(tmp_path: Path, destinations: tuple[str, ...]) -> None:
    run("SELECT i AS id FROM range(4) t(i)", tmp_path, destinations=destinations)
    assert warehouse_rows(tmp_path, "SELECT sum(id) FROM src_main.items") == [(6,)]
    assert tree_rows(tmp_path, "SELECT sum(id) FROM t") == [(6,)]


def test_unknown_destination_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown destination 'oracle'"):
        run("SELECT 1 AS id", tmp_path, destinations=("oracle",))


def test_rerun_is_idempotent_and_replaces_only_its_partition(tmp_path: Path) -> None:
    run("SELECT i AS id FROM range(3) t(i)", tmp_path, ["2024-01-01"])
    run("SELECT i AS id FROM range(10, 12) t(i)", tmp_path, ["2024-01-02"])
    run("SELECT i AS id FROM range(3) t(i)", tmp_path, ["2024-01-01"])
    rows = warehouse_rows(tmp_path, "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM src_main.items GROUP BY 1 ORDER BY 1")
    assert rows == [("2024-01-01", 3), ("2024-01-02", 2)]
    # Superseded files are gone at once (retention_days = 0): the glob query equals the warehouse.
    assert len(landed_files(tmp_path, KEY, "2024-01-01")) == 1
    assert tree_rows(tmp_path, "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM t GROUP BY 1 ORDER BY 1") == rows


def test_failure_mid_write_keeps_previous_version(tmp_path: Path) -> None:
    run("SELECT i AS id FROM range(5) t(i)", tmp_path)
    before = landed_files(tmp_path, KEY)
    # The query fails while rows are being written (error() raises on the 4th row).
    bad = "SELECT CASE WHEN i < 3 THEN i ELSE error('source went away') END AS id FROM range(100000) t(i)"
    with pytest.raises(duckdb.Error, match="source went away"):
        run(bad, tmp_path)
    assert landed_files(tmp_path, KEY) == before
    assert sorted(pq.read_table(before[0]).column("id").to_pylist()) == [0, 1, 2, 3, 4]
    assert warehouse_rows(tmp_path, "SELECT count(*) FROM src_main.items") == [(5,)]
    leftovers = [p for p in (tmp_path / "parquet").rglob("*") if p.is_file() and p not in before]
    assert leftovers == []


def test_new_source_column_is_added_to_warehouse(tmp_path: Path) -> None:
    run("SELECT 1 AS id", tmp_path, ["2024-01-01"], ("duckdb",))
    run("SELECT 2 AS id, 'new' AS extra", tmp_path, ["2024-01-02"], ("duckdb",))
    rows = warehouse_rows(tmp_path, "SELECT id, extra FROM src_main.items ORDER BY id")
    assert rows == [(1, None), (2, "new")]


def test_dropped_source_column_reads_as_null(tmp_path: Path) -> None:
    run("SELECT 1 AS id, 'a' AS gone", tmp_path, ["2024-01-01"])
    run("SELECT 2 AS id", tmp_path, ["2024-01-02"])
    assert warehouse_rows(tmp_path, "SELECT id, gone FROM src_main.items ORDER BY id") == [(1, "a"), (2, None)]


def test_warehouse_only_range_is_split_by_column_day(tmp_path: Path) -> None:
    sql = ("SELECT i AS id, TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(CAST(i * 12 AS BIGINT)) AS at "
           "FROM range(4) t(i)")
    meta = run(sql, tmp_path, ["2024-01-01", "2024-01-02", "2024-01-03"], ("duckdb",),
               partition_expr="strftime(CAST(\"at\" AS TIMESTAMPTZ), '%Y-%m-%d')")
    assert meta["dagster/row_count"].value == 4  # type: ignore[attr-defined]
    assert meta["rows_by_partition"].value == {"2024-01-01": 2, "2024-01-02": 2, "2024-01-03": 0}  # type: ignore[attr-defined]
    rows = warehouse_rows(tmp_path, "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM src_main.items GROUP BY 1 ORDER BY 1")
    assert rows == [("2024-01-01", 2), ("2024-01-02", 2)]
    assert [p.parent.name for p in landed_files(tmp_path, KEY)] == ["adu_partition=2024-01-01", "adu_partition=2024-01-02"]


def test_empty_partition_replaces_old_rows(tmp_path: Path) -> None:
    run("SELECT i AS id FROM range(3) t(i)", tmp_path)
    meta = run("SELECT i AS id FROM range(0) t(i)", tmp_path)
    assert meta["dagster/row_count"].value == 0  # type: ignore[attr-defined]
    assert warehouse_rows(tmp_path, "SELECT count(*) FROM src_main.items") == [(0,)]
    assert landed_files(tmp_path, KEY) == []


def test_widened_decimal_and_integer_land_exactly(tmp_path: Path) -> None:
    run("SELECT CAST(12.34 AS DECIMAL(5,2)) AS v, CAST(7 AS INTEGER) AS n, CAST(1.5 AS FLOAT) AS f", tmp_path, ["2024-01-01"])
    run("SELECT CAST(19983.364 AS DECIMAL(9,3)) AS v, CAST(5000000000 AS BIGINT) AS n, CAST(0.1 AS DOUBLE) AS f",
        tmp_path, ["2024-01-02"])
    con = LandingStore(data_dir=str(tmp_path)).connect()
    try:
        types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'items'").fetchall())
        rows = con.execute("SELECT CAST(v AS VARCHAR), n, f FROM src_main.items ORDER BY adu_partition").fetchall()
    finally:
        con.close()
    assert (types["v"], types["n"], types["f"]) == ("DECIMAL(9,3)", "BIGINT", "DOUBLE")
    assert rows == [("12.340", 7, 1.5), ("19983.364", 5000000000, 0.1)]


@pytest.mark.parametrize(
    ("old", "new"),
    [("CAST(1.5 AS DECIMAL(7,3))", "CAST(1.5 AS DECIMAL(5,2))"),  # narrowing
     ("CAST(1 AS BIGINT)", "CAST(1 AS INTEGER)"),
     ("CAST(1 AS BIGINT)", "'1'"),  # type change
     ("CAST(1.5 AS DECIMAL(5,2))", "CAST(1.5 AS DECIMAL(6,4))")],  # scale up but integer digits down
)
def test_lossy_type_change_fails_before_anything_lands(tmp_path: Path, old: str, new: str) -> None:
    run(f"SELECT 1 AS id, {old} AS v", tmp_path, ["2024-01-01"])
    files = landed_files(tmp_path, KEY)
    store = LandingStore(data_dir=str(tmp_path))
    con = store.connect()
    snapshots = con.execute("SELECT count(*) FROM ducklake_snapshots('warehouse')").fetchall()
    con.close()
    with pytest.raises(WarehouseSchemaError) as err:
        run(f"SELECT 2 AS id, {new} AS v", tmp_path, ["2024-01-01"])
    message = str(err.value)
    assert "src_main.items" in message and "column v" in message
    con = store.connect()
    assert con.execute("SELECT count(*) FROM ducklake_snapshots('warehouse')").fetchall() == snapshots
    old_type = con.execute("SELECT data_type FROM duckdb_columns() WHERE column_name = 'v'").fetchone()
    con.close()
    assert f"warehouse type {old_type[0]}" in message  # type: ignore[index]
    assert landed_files(tmp_path, KEY) == files
    assert warehouse_rows(tmp_path, "SELECT id FROM src_main.items") == [(1,)]


def test_landed_frame_scans_files_lazily_and_falls_back_after_a_schema_change(tmp_path: Path) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    run("SELECT i AS id, CAST(i AS DECIMAL(5,2)) AS v FROM range(3) t(i)", tmp_path, ["2024-01-01"])
    frame = store.landed_frame(KEY, ["parquet"], ["2024-01-01"])
    assert "parquet" in frame.explain().lower()  # a scan of the files: the schema check reads footers only
    assert frame.collect_schema().names() == ["id", "v"]
    assert frame.select("id").collect()["id"].to_list() == [0, 1, 2]
    # After a widening and a new column the old file differs from the table: read through DuckDB instead.
    run("SELECT CAST(5 AS BIGINT) AS id, CAST(1.5 AS DECIMAL(7,3)) AS v, 'x' AS extra", tmp_path, ["2024-01-02"])
    both = store.landed_frame(KEY, ["parquet"], []).collect().sort("id")
    assert both.columns == ["id", "v", "extra"]
    assert [str(x) for x in both["v"].to_list()] == ["0.000", "1.000", "2.000", "1.500"]
    assert both["extra"].to_list() == [None, None, None, "x"]


def test_interval_columns_reach_polars_as_text(tmp_path: Path) -> None:
    run("SELECT 1 AS id, INTERVAL '1 day 2 hours' AS wait", tmp_path)
    frame = LandingStore(data_dir=str(tmp_path)).landed_frame(KEY, ["parquet"], ["2024-01-01"]).collect()
    assert frame.columns == ["id", "wait"]
    assert frame.row(0) == (1, "1 day 02:00:00")


def test_text_partition_of_a_dropped_file(tmp_path: Path) -> None:
    key = dg.AssetKey(["drops"])
    for rel, n in (("a/x.csv", 2), ("b.csv", 3), ("a/x.csv", 1)):
        s = stream_of(f"SELECT i AS id FROM range({n}) t(i)", [rel.replace("/", "__")])
        try:
            land(s, ["parquet", "duckdb"], tmp_path, key, partition_value=rel)
        finally:
            s.close()
    assert warehouse_rows(tmp_path, "SELECT adu_partition, count(*) FROM drops.drops GROUP BY 1 ORDER BY 1") == [
        ("a/x.csv", 1), ("b.csv", 3)]
    assert sorted(p.parent.name for p in landed_files(tmp_path, key)) == ["adu_partition=a__x.csv", "adu_partition=b.csv"]


def test_previous_landed_partition_is_drifts_reference(tmp_path: Path) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
    run("SELECT 1 AS id", tmp_path, ["2024-01-01"])
    run("SELECT 3 AS id", tmp_path, ["2024-01-03"])
    previous = store.previous_landed_frame(KEY, ["parquet"], days, "2024-01-05")
    assert previous is not None and previous.collect()["id"].to_list() == [3]
    assert store.previous_landed_frame(KEY, ["parquet"], days, "2024-01-01") is None
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        store.landed_frame(dg.AssetKey(["src", "main", "never"]), ["parquet"], ["2024-01-01"])
