"""A step's checks read the files the step just committed, without opening the warehouse (issue 14), and
only when that reads the same rows and columns as the warehouse would.

Real DuckDB streams landed in a real DuckLake (SQLite catalog) in a temporary folder.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from adu_assets.io_managers import tables
from adu_assets.io_managers.landing import land_report
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.databases import TableStream, new_duckdb
from adu_assets.warehouse import LandingStore

KEY = dg.AssetKey(["src", "main", "items"])


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "_JUST_LANDED", type(tables._JUST_LANDED)())


def land_in(store: LandingStore, sql: str, keys: list[str], run_id: str, expr: str | None = None) -> None:
    stream = TableStream(
        con=new_duckdb(), sql=sql, table=TableInfo("main", "items"), source_label="test",
        partition_keys=keys, partition_expr=expr,
    )
    try:
        _, report = land_report(stream, ["parquet"], store, KEY)
    finally:
        stream.close()
    tables.remember_landed(run_id, store, KEY, keys, report)


def counting_connects(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = LandingStore.connect

    def counted(self: LandingStore, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, **kwargs)

    monkeypatch.setattr(LandingStore, "connect", counted)
    return calls


def through_warehouse(store: LandingStore, keys: list[str]) -> pl.DataFrame:
    frame = tables.read_landed(store, KEY, keys).collect()
    return frame.sort(frame.columns[0])


def test_the_run_that_landed_reads_its_files_without_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    land_in(store, "SELECT i AS id, i * 1.5 AS amount FROM range(5) t(i)", ["2024-01-01"], "run-1")
    calls = counting_connects(monkeypatch)
    frame = store.landed_frame(KEY, partitions=["2024-01-01"], run_id="run-1").collect()
    assert calls == []
    assert frame.columns == ["id", "amount"]
    # Another run, or no run, reads the warehouse: the same rows and types.
    store.landed_frame(KEY, partitions=["2024-01-01"], run_id="run-2")
    assert frame.sort("id").equals(through_warehouse(store, ["2024-01-01"]))
    assert len(calls) == 2


def test_one_partition_of_a_range_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    land_in(
        store,
        "SELECT i AS id, DATE '2024-01-01' + CAST(i % 3 AS INTEGER) AS day FROM range(9) t(i)",
        ["2024-01-01", "2024-01-02", "2024-01-03"],
        "run-1",
        expr="day",
    )
    calls = counting_connects(monkeypatch)
    one = store.landed_frame(KEY, partitions=["2024-01-02"], run_id="run-1").collect()
    assert calls == []
    assert sorted(one["id"].to_list()) == [1, 4, 7]


def test_files_retired_by_a_later_write_fall_back_to_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    land_in(store, "SELECT i AS id FROM range(3) t(i)", ["2024-01-01"], "run-1")
    # Another process re-lands the partition (retention 0 deletes run-1's files).
    land_in(store, "SELECT i AS id FROM range(10, 12) t(i)", ["2024-01-01"], "run-2")
    calls = counting_connects(monkeypatch)
    frame = store.landed_frame(KEY, partitions=["2024-01-01"], run_id="run-1").collect()
    assert len(calls) == 1
    assert sorted(frame["id"].to_list()) == [10, 11]


def test_a_column_the_new_files_lack_is_read_through_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    land_in(store, "SELECT i AS id, 'x' AS gone FROM range(2) t(i)", ["2024-01-01"], "run-0")
    # The source dropped `gone`: the warehouse table keeps it (NULL in the new rows), the new files do not.
    land_in(store, "SELECT i AS id FROM range(2) t(i)", ["2024-01-02"], "run-1")
    calls = counting_connects(monkeypatch)
    frame = store.landed_frame(KEY, partitions=["2024-01-02"], run_id="run-1").collect()
    assert len(calls) == 1
    assert frame.columns == ["id", "gone"]
    assert frame["gone"].null_count() == 2


def test_an_empty_partition_reads_the_warehouse_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LandingStore(data_dir=str(tmp_path))
    land_in(store, "SELECT i AS id FROM range(0) t(i)", ["2024-01-01"], "run-1")
    frame = store.landed_frame(KEY, partitions=["2024-01-01"], run_id="run-1").collect()
    assert frame.columns == ["id"]
    assert frame.height == 0
