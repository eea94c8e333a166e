"""The upsert landing layer against a real DuckDB file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.upsert import (
    DestinationConfig,
    DestinationError,
    UpsertIOManager,
    check_destination_columns,
    upsert,
)


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "dest.duckdb"
    with duckdb.connect(str(path)) as c:
        c.execute(
            """
            CREATE SCHEMA sales;
            CREATE TABLE sales.orders (
                order_id  INTEGER PRIMARY KEY,
                item      VARCHAR NOT NULL,
                qty       INTEGER CHECK (qty > 0),
                placed    DATE,
                processed VARCHAR DEFAULT 'N'
            );
            INSERT INTO sales.orders VALUES
                (1, 'apple', 1, DATE '2026-01-01', 'N'),
                (2, 'pear',  2, DATE '2026-01-01', 'Y'),
                (3, 'plum',  3, DATE '2026-01-01', 'N');
            """
        )
    return {
        "connection": {"kind": "duckdb", "path": str(path)},
        "table": "sales.orders",
        "mode": "upsert",
        "keys": ["order_id"],
        "skip_when": {"column": "processed", "equals": "Y"},
    }


def rows(dest: dict[str, Any], sql: str = "SELECT * FROM sales.orders ORDER BY order_id") -> list[Any]:
    with duckdb.connect(dest["connection"]["path"]) as c:
        return c.execute(sql).fetchall()


def incoming() -> pa.Table:
    return pa.table(
        {"order_id": [1, 2, 3, 4], "item": ["apple", "PEAR", "plum2", "kiwi"], "qty": [1, 9, 3, 4]}
    )


def test_insert_update_skip_unchanged_and_idempotent(target: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(target)
    first = upsert(dest, incoming(), run_id="r1")
    assert (first.inserted, first.updated, first.unchanged, first.skipped, first.errors) == (1, 1, 1, 1, 0)
    assert first.table == "sales.orders"
    got = {r[0]: (r[1], r[2], r[4]) for r in rows(target)}
    assert got == {1: ("apple", 1, "N"), 2: ("pear", 2, "Y"), 3: ("plum2", 3, "N"), 4: ("kiwi", 4, "N")}
    second = upsert(dest, incoming(), run_id="r2")
    assert (second.inserted, second.updated, second.unchanged, second.skipped, second.errors) == (
        0,
        0,
        3,
        1,
        0,
    )
    assert {r[0]: (r[1], r[2], r[4]) for r in rows(target)} == got


def test_bad_rows_isolated_with_reason(target: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate({**target, "batch_size": 2})
    data = pa.table(
        {
            "order_id": [10, 11, 12, 13, 14],
            "item": ["a", None, "c", "d", "e"],  # 11: NOT NULL
            "qty": [1, 1, -1, 1, 1],  # 12: CHECK
            "placed": ["2026-03-01", "2026-03-01", "2026-03-01", "31/02/2026", None],  # 13: not a date
        }
    )
    result = upsert(dest, data, run_id="bad")
    assert (result.inserted, result.errors) == (2, 3)
    assert [r[0] for r in rows(target)] == [1, 2, 3, 10, 14]
    assert result.error_rows_path is not None
    errs = {r["ADU_KEY"]: r["ADU_REASON"] for r in pq.read_table(result.error_rows_path).to_pylist()}
    assert set(errs) == {"order_id=11", "order_id=12", "order_id=13"}
    assert (
        "NOT NULL" in errs["order_id=11"] and "CHECK" in errs["order_id=12"] and "DATE" in errs["order_id=13"]
    )


def test_insert_mode_duplicate_key_found_by_bisection_and_error_table(target: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(
        {**target, "mode": "insert", "keys": [], "skip_when": None, "error_table": "sales.orders_ADU_ERRORS"}
    )
    result = upsert(
        dest, pa.table({"order_id": [20, 3, 21, 22], "item": ["n", "dup", "n", "n"]}), run_id="ins"
    )
    assert (result.inserted, result.errors, result.error_table) == (3, 1, "sales.orders_ADU_ERRORS")
    kept = rows(target, 'SELECT "ADU_RUN_ID", "ADU_KEY", "ADU_REASON" FROM sales."orders_ADU_ERRORS"')
    assert len(kept) == 1 and kept[0][:2] == ("ins", "order_id=3")
    assert "PRIMARY KEY" in kept[0][2] or "Duplicate key" in kept[0][2]
    assert [r[0] for r in rows(target)] == [1, 2, 3, 20, 21, 22]


def test_missing_column_and_table_are_clear_errors(target: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(target)
    assert check_destination_columns(dest, ["order_id", "qty"]) == {"order_id": "INTEGER", "qty": "INTEGER"}
    with pytest.raises(DestinationError, match=r"sales\.orders has no column 'colour'"):
        upsert(dest, pa.table({"order_id": [9], "item": ["x"], "colour": ["red"]}), run_id="x")
    assert len(rows(target)) == 3
    with pytest.raises(DestinationError, match="does not exist"):
        check_destination_columns(DestinationConfig.model_validate({**target, "table": "sales.nope"}), ["a"])


def test_io_manager_metadata(
    target: dict[str, Any], dagster_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @dg.asset(metadata={"adu/destination": target}, io_manager_key="upsert")
    def orders_feed() -> pa.Table:
        return incoming()

    caplog.set_level(logging.INFO)
    instance = dg.DagsterInstance.get()
    res = dg.materialize([orders_feed], resources={"upsert": UpsertIOManager()}, instance=instance)
    md = res.asset_materializations_for_node("orders_feed")[0].metadata
    assert [md[k].value for k in ("inserted", "updated", "unchanged", "skipped", "errors")] == [1, 1, 1, 1, 0]
    assert md["dagster/row_count"].value == 4
    assert md["dagster/table_name"].value == "sales.orders"
    messages = [e.user_message for e in instance.all_logs(res.run_id)]
    assert any("upsert into sales.orders: 4 in, 1 inserted" in m for m in messages)
