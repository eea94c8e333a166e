"""Parquet and DuckDB landing on real files: atomic replace, idempotence, schema evolution."""

from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.landing import land, partition_file, warehouse_path
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.databases import TableStream, new_duckdb

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
    with duckdb.connect(str(warehouse_path(root)), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_metadata_and_both_destinations(tmp_path: Path) -> None:
    meta = run("SELECT i AS id, 'x' || i AS name FROM range(3) t(i)", tmp_path)
    assert meta["dagster/row_count"].value == 3  # type: ignore[attr-defined]
    cols = [(c.name, c.type) for c in meta["dagster/column_schema"].columns]  # type: ignore[attr-defined]
    assert cols == [("id", "BIGINT"), ("name", "VARCHAR")]
    assert str(meta["path"].value).endswith("src/main/items/adu_partition=2024-01-01/data.parquet")  # type: ignore[attr-defined]
    assert meta["dagster/table_name"].endswith("warehouse.duckdb:src_main.items")  # type: ignore[attr-defined]
    assert "| id | name |" in meta["preview"].value  # type: ignore[attr-defined]
    assert meta["rows_per_s"].value >= 0  # type: ignore[attr-defined]
    assert warehouse_rows(tmp_path, "SELECT count(*), min(adu_partition) FROM src_main.items")[0][0] == 3


def test_rerun_is_idempotent_and_replaces_only_its_partition(tmp_path: Path) -> None:
    run("SELECT i AS id FROM range(3) t(i)", tmp_path, ["2024-01-01"])
    run("SELECT i AS id FROM range(10, 12) t(i)", tmp_path, ["2024-01-02"])
    run("SELECT i AS id FROM range(3) t(i)", tmp_path, ["2024-01-01"])
    rows = warehouse_rows(tmp_path, "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM src_main.items GROUP BY 1 ORDER BY 1")
    assert rows == [("2024-01-01", 3), ("2024-01-02", 2)]
    assert pq.read_table(partition_file(tmp_path, KEY, "2024-01-01")).num_rows == 3


def test_crash_mid_write_keeps_previous_version(tmp_path: Path) -> None:
    run("SELECT i AS id FROM range(5) t(i)", tmp_path)
    # The query fails while rows are being written (error() raises on the 4th row).
    bad = "SELECT CASE WHEN i < 3 THEN i ELSE error('source went away') END AS id FROM range(100000) t(i)"
    with pytest.raises(duckdb.Error, match="source went away"):
        run(bad, tmp_path)
    assert sorted(pq.read_table(partition_file(tmp_path, KEY, "2024-01-01")).column("id").to_pylist()) == [0, 1, 2, 3, 4]
    assert warehouse_rows(tmp_path, "SELECT count(*) FROM src_main.items") == [(5,)]
    leftovers = [p for p in (tmp_path / "parquet").rglob("*") if ".staging" in str(p)]
    assert leftovers == []


def test_new_source_column_is_added_to_warehouse(tmp_path: Path) -> None:
    run("SELECT 1 AS id", tmp_path, ["2024-01-01"], ("duckdb",))
    run("SELECT 2 AS id, 'new' AS extra", tmp_path, ["2024-01-02"], ("duckdb",))
    rows = warehouse_rows(tmp_path, "SELECT id, extra FROM src_main.items ORDER BY id")
    assert rows == [(1, None), (2, "new")]


def test_warehouse_only_range_is_split_by_column_day(tmp_path: Path) -> None:
    sql = ("SELECT i AS id, TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(CAST(i * 12 AS BIGINT)) AS at "
           "FROM range(4) t(i)")
    meta = run(sql, tmp_path, ["2024-01-01", "2024-01-02"], ("duckdb",),
               partition_expr="strftime(CAST(\"at\" AS TIMESTAMPTZ), '%Y-%m-%d')")
    assert meta["dagster/row_count"].value == 4  # type: ignore[attr-defined]
    rows = warehouse_rows(tmp_path, "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM src_main.items GROUP BY 1 ORDER BY 1")
    assert rows == [("2024-01-01", 2), ("2024-01-02", 2)]
