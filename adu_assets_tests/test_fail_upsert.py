# ruff: noqa: F811  (the fixtures `orders` and `target` are imported from the upsert tests and used as arguments)
"""Issue 11 point 5: an upsert whose rows the database rejects is not a success. Past
destination.max_error_rows / max_error_fraction (default: every row rejected) the run fails and names the
error file or table; below it the rejected rows are kept and the run succeeds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from adu_assets.io_managers.upsert import DestinationConfig, TooManyRejectedRows, UpsertIOManager, upsert
from adu_assets_tests.pg_server import PgServer
from adu_assets_tests.test_io_upsert_duckdb import rows as duck_rows
from adu_assets_tests.test_io_upsert_duckdb import target  # noqa: F401  (fixture)
from adu_assets_tests.test_io_upsert_postgres import orders  # noqa: F401  (fixture)
from adu_assets_tests.test_io_upsert_postgres import rows as pg_rows


def materialize(dest: dict[str, Any], data: pa.Table) -> dg.ExecuteInProcessResult:
    @dg.asset(metadata={"adu/destination": dest}, io_manager_key="upsert", name="feed")
    def feed() -> pa.Table:
        return data

    return dg.materialize(
        [feed],
        resources={"upsert": UpsertIOManager()},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )


def failure(result: dg.ExecuteInProcessResult) -> Any:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.event_specific_data


def test_postgres_every_row_rejected_fails_the_run_naming_the_error_file(
    pg: PgServer,
    pg_db: str,
    orders: dict[str, Any],
    dagster_home: Path,
) -> None:
    before = pg_rows(pg, pg_db)
    n = 400
    data = pa.table(
        {"order_id": list(range(100, 100 + n)), "item": ["x"] * n, "qty": [-1] * n}
    )  # CHECK (qty > 0)
    result = materialize(orders, data)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    data_ = failure(result)
    text = data_.error.to_string()
    assert f"{n} of {n} rows rejected" in text and "every row was rejected" in text
    assert "0 accepted rows were committed" in text
    path = re.search(r"(/\S+?\.parquet)", text).group(1)  # type: ignore[union-attr]
    errs = pq.read_table(path)
    assert errs.num_rows == n and "CHECK" in errs.column("ADU_REASON")[0].as_py()
    md = {k: getattr(v, "value", v) for k, v in data_.user_failure_data.metadata.items()}
    assert md["errors"] == n and md["inserted"] == 0 and md["error_rows_path"] == path
    assert pg_rows(pg, pg_db) == before
    # Failed once: the UpsertIOManager's failure is not retried.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]


def test_postgres_max_error_rows_names_the_error_table(
    pg: PgServer,
    pg_db: str,
    orders: dict[str, Any],
    dagster_home: Path,
) -> None:
    dest = {**orders, "error_table": "orders_rejects", "max_error_rows": 1}
    data = pa.table({"order_id": [60, 61, 62, 63], "item": ["a", "b", "c", "d"], "qty": [1, -1, 1, -2]})
    result = materialize(dest, data)
    assert not result.success
    text = failure(result).error.to_string()
    assert "2 of 4 rows rejected" in text and "more than destination.max_error_rows = 1 allow" in text
    assert "public.orders_rejects" in text and "2 accepted rows were committed" in text
    assert [r[0] for r in pg_rows(pg, pg_db, 'SELECT "ADU_KEY" FROM orders_rejects ORDER BY 1')] == [
        "order_id=61",
        "order_id=63",
    ]
    # Within the limit the same kind of load is a success that reports its rejected rows.
    ok = materialize(
        {**dest, "max_error_rows": 2},
        pa.table({"order_id": [70, 71, 72], "qty": [1, -1, -1], "item": ["a", "b", "c"]}),
    )
    assert ok.success
    (mat,) = ok.get_asset_materialization_events()
    assert mat.materialization.metadata["errors"].value == 2  # type: ignore[union-attr]


def test_postgres_partial_rejects_pass_by_default(
    pg: PgServer,
    pg_db: str,
    orders: dict[str, Any],
    dagster_home: Path,
) -> None:
    result = materialize(orders, pa.table({"order_id": [80, 81], "item": ["a", "b"], "qty": [1, -1]}))
    assert result.success


def test_duckdb_limits(target: dict[str, Any]) -> None:
    every = pa.table({"order_id": [10, 11], "item": [None, None]})  # item NOT NULL
    with pytest.raises(TooManyRejectedRows) as err:
        upsert(DestinationConfig.model_validate(target), every, run_id="r1")
    assert "2 of 2 rows rejected" in str(err.value) and err.value.result.error_rows_path
    assert str(err.value.result.error_rows_path) in str(err.value)
    assert pq.read_table(err.value.result.error_rows_path).num_rows == 2

    quarter = pa.table({"order_id": [20, 21, 22, 23], "item": ["a", "b", "c", None]})
    with pytest.raises(TooManyRejectedRows, match=r"max_error_fraction = 0.2"):
        upsert(DestinationConfig.model_validate({**target, "max_error_fraction": 0.2}), quarter, run_id="r2")
    # Committed before failing: the accepted rows stay, so a re-run after the fix only adds the rest.
    assert [r[0] for r in duck_rows(target)] == [1, 2, 3, 20, 21, 22]
    result = upsert(
        DestinationConfig.model_validate({**target, "max_error_fraction": 0.25}),
        pa.table({"order_id": [30, 31, 32, 33], "item": ["a", "b", "c", None]}),
        run_id="r3",
    )
    assert (result.inserted, result.errors) == (3, 1)
    with pytest.raises(TooManyRejectedRows, match=r"max_error_rows = 0"):
        upsert(
            DestinationConfig.model_validate({**target, "max_error_rows": 0}),
            pa.table({"order_id": [40], "item": [None]}),
            run_id="r4",
        )


def test_limit_fields_are_validated(target: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="max_error_fraction must be at most 1"):
        DestinationConfig.model_validate({**target, "max_error_fraction": 5})
    with pytest.raises(ValidationError, match="max_error_rows must be at least 0"):
        DestinationConfig.model_validate({**target, "max_error_rows": -1})
