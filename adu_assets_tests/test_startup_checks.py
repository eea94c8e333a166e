"""Checks evaluated inside the export's own step (issue 14) and crashed checks that say why (issue 11.7).

A real DuckDB source file, real runs on a real (temporary) Dagster instance: one op per table, one result
per check and partition (also in a single-run range backfill), a failed blocking check stops downstream,
and a crash shows the check, partition and reason instead of "Execution failed".
"""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets_tests.defs_helpers import load, run_partition, write_component

ORDERS = dg.AssetKey(["src", "main", "orders"])
ITEMS = dg.AssetKey(["src", "main", "items"])


def make_source(path: Path, *, negative_on: str | None = None) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE orders (id BIGINT, amount DOUBLE, ordered_at TIMESTAMP)")
        # Three rows a day on 2024-01-01..2024-01-03.
        con.execute(
            "INSERT INTO orders SELECT i, i * 1.5, TIMESTAMP '2024-01-01' + INTERVAL (i // 3) DAY "
            "+ INTERVAL (i % 3) HOUR FROM range(9) t(i)"
        )
        if negative_on:
            con.execute(f"INSERT INTO orders VALUES (100, -5, TIMESTAMP '{negative_on} 12:00')")
        con.execute("CREATE TABLE items (sku VARCHAR, qty INTEGER)")
        con.execute("INSERT INTO items VALUES ('a', 1), ('b', 2)")


def component(source: Path, **orders_extra: Any) -> dict[str, Any]:
    return {
        "name": "src",
        "connection": {"kind": "duckdb", "path": str(source)},
        "schema": "main",
        "start_date": "2024-01-01",
        "destinations": ["parquet"],
        "tables": [
            {
                "name": "orders",
                "incremental_column": "ordered_at",
                "checks": {
                    "columns": {"amount": {"ge": 0}},
                    "unique": ["id"],
                    "row_count": {"min": 1},
                    "blocking": True,
                },
                **orders_extra,
            },
            {"name": "items"},
        ],
    }


@pytest.fixture
def defs_dir(tmp_path: Path, dagster_home: Path) -> Path:
    d = tmp_path / "user_defs"
    d.mkdir()
    return d


def evaluations(result: dg.ExecuteInProcessResult) -> list[Any]:
    return [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def with_downstream(d: dg.Definitions) -> dg.Definitions:
    @dg.asset(
        key=["report", "orders_total"],
        deps=[ORDERS],
        partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
    )
    def orders_total() -> None:
        return None

    return dg.Definitions.merge(d, dg.Definitions(assets=[orders_total]))


def test_fast_checks_run_in_the_export_step_slow_ones_stay_separate(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_source(tmp_path / "src.duckdb")
    write_component(
        defs_dir,
        "src",
        "adu_assets.DatabaseExport",
        component(
            tmp_path / "src.duckdb",
            profile=True,
            checks={"drift": {"threshold": 0.5}, "row_count": {"min": 1}},
        ),
    )
    d = load(defs_dir, monkeypatch)
    orders = d.resolve_assets_def(ORDERS)
    # One op for the table carries schema and row_count ...
    assert {k.name for k in orders.check_keys} == {"schema", "row_count"}
    graph = d.resolve_asset_graph()
    all_checks = {k.name for k in graph.asset_check_keys if k.asset_key == ORDERS}
    # ... and drift / profile are their own ops, so a slow report never holds the export step.
    assert all_checks == {"schema", "row_count", "drift", "profile"}
    ops = {a.op.name for a in d.assets or [] if isinstance(a, dg.AssetsDefinition)}
    assert len(ops) == 2  # orders, items: not one op per check
    spec = next(iter(orders.check_specs))
    assert spec.partitions_def is not None


def test_single_partition_and_range_results_keep_their_partition(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_source(tmp_path / "src.duckdb")
    write_component(defs_dir, "src", "adu_assets.DatabaseExport", component(tmp_path / "src.duckdb"))
    d = load(defs_dir, monkeypatch)

    result = run_partition(d, [ORDERS, ITEMS], "2024-01-02")
    assert result.success
    evals = evaluations(result)
    by = {(e.asset_key, e.check_name): e for e in evals}
    assert set(by) == {(ORDERS, "schema"), (ORDERS, "rules"), (ORDERS, "row_count"), (ITEMS, "schema")}
    assert all(e.partition == "2024-01-02" and e.passed for e in evals)
    # Each result names the materialization it checked.
    assert all(e.target_materialization_data is not None for e in evals)
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert steps == {"src__main__orders", "src__main__items"}

    # A single-run range backfill: one step, one result per check and partition.
    result = run_partition(d, [ORDERS], ("2024-01-01", "2024-01-03"))
    assert result.success
    evals = evaluations(result)
    got = sorted((e.check_name, e.partition, e.passed) for e in evals)
    assert got == sorted(
        (name, f"2024-01-0{day}", True) for name in ("schema", "rules", "row_count") for day in (1, 2, 3)
    )
    # Dagster's own record per partition: the UI's partition view reads these.
    instance = dg.DagsterInstance.get()
    check_key = dg.AssetCheckKey(ORDERS, "rules")
    records = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=20)
    assert {r.event.asset_check_evaluation.partition for r in records if r.event} >= {  # type: ignore[union-attr]
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
    }


def test_failed_blocking_check_stops_downstream_and_names_the_partition(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_source(tmp_path / "src.duckdb", negative_on="2024-01-02")
    write_component(defs_dir, "src", "adu_assets.DatabaseExport", component(tmp_path / "src.duckdb"))
    d = with_downstream(load(defs_dir, monkeypatch))
    job = d.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[ORDERS, dg.AssetKey(["report", "orders_total"])],
        partition_key="2024-01-02",
        raise_on_error=False,
    )
    assert not result.success
    rules = [e for e in evaluations(result) if e.check_name == "rules"]
    assert len(rules) == 1 and not rules[0].passed and rules[0].partition == "2024-01-02"
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    # The data landed (so it can be inspected), but nothing downstream ran on it.
    assert materialized == {ORDERS}

    # Another day without the bad row passes and lets downstream run.
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[ORDERS, dg.AssetKey(["report", "orders_total"])],
        partition_key="2024-01-03",
        raise_on_error=False,
    )
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {
        ORDERS,
        dg.AssetKey(["report", "orders_total"]),
    }


def test_a_crashing_check_reports_reason_and_partition(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adu_assets.checks.asset_checks as asset_checks
    import adu_assets.checks.drift as drift

    make_source(tmp_path / "src.duckdb")
    write_component(
        defs_dir,
        "src",
        "adu_assets.DatabaseExport",
        component(tmp_path / "src.duckdb", checks={"columns": {"amount": {"ge": 0}}, "drift": {}}),
    )
    d = load(defs_dir, monkeypatch)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pandera exploded on column amount\nsecond line")

    def drift_boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("evidently could not compare")

    monkeypatch.setattr(asset_checks, "validate_rules", boom)
    monkeypatch.setattr(drift, "run_drift", drift_boom)
    job = d.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[ORDERS],
        partition_key="2024-01-02",
        raise_on_error=False,
    )
    evals = {e.check_name: e for e in evaluations(result)}
    rules = evals["rules"]
    assert not rules.passed
    assert rules.partition == "2024-01-02"
    assert rules.description.startswith(
        "The rules check crashed on partition 2024-01-02: RuntimeError: pandera"
    )
    assert "second line" not in rules.description
    assert "pandera exploded" in rules.metadata["error"].value
    assert "boom" in rules.metadata["traceback"].value
    # The crash is reported, the other checks still ran.
    assert evals["schema"].passed
    # A separate check op (drift) crashing: same, instead of a bare "Execution failed".
    drift_eval = evals["drift"]
    assert not drift_eval.passed and drift_eval.partition == "2024-01-02"
    assert "drift check crashed on partition 2024-01-02: ValueError: evidently could not compare" in (
        drift_eval.description
    )


def test_separate_check_ops_record_each_partition_of_a_range(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adu_assets.checks.drift as drift
    from adu_assets.checks.rules import CheckOutcome

    make_source(tmp_path / "src.duckdb")
    write_component(
        defs_dir,
        "src",
        "adu_assets.DatabaseExport",
        component(tmp_path / "src.duckdb", checks={"drift": {"threshold": 0.5}}),
    )
    d = load(defs_dir, monkeypatch)
    compared: list[int] = []

    def fake_drift(previous: Any, current: Any, cfg: Any, report: Path) -> CheckOutcome:
        compared.append(current.collect().height)
        return CheckOutcome(True, "WARN", f"no drift in {current.collect().height} rows")

    monkeypatch.setattr(drift, "run_drift", fake_drift)
    result = run_partition(d, [ORDERS], ("2024-01-01", "2024-01-03"))
    assert result.success
    got = sorted((e.check_name, e.partition) for e in evaluations(result) if e.check_name == "drift")
    assert got == [("drift", "2024-01-01"), ("drift", "2024-01-02"), ("drift", "2024-01-03")]
    # Each partition is checked on its own rows (3 a day), not the whole range at once.
    assert compared == [3, 3, 3]
