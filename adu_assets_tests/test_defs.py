"""Whole-definitions smoke test: the demo and a large generated catalog load, with invariants on every asset."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.definitions import defs as location_defs
from adu_assets_tests.defs_helpers import load, write_component

REPO = Path(__file__).resolve().parents[1]


def assert_invariants(d: dg.Definitions) -> None:
    specs = list(d.resolve_all_asset_specs())
    assert specs
    graph = d.resolve_asset_graph()
    checked = {k.asset_key for k in graph.asset_check_keys}
    for check_key in graph.asset_check_keys:
        # Every check result is recorded per partition (in-step checks and separate check ops alike).
        check_spec = graph.get_check_spec(check_key)
        assert check_spec.partitions_def is not None, check_key.to_user_string()
    for spec in specs:
        assets_def = d.resolve_assets_def(spec.key)
        # One op per table (checks are evaluated inside it), so a table runs, retries and fails alone;
        # its pool bounds the parallel queries on its source.
        assert assets_def.keys == {spec.key}, spec.key.to_user_string()
        assert assets_def.op.pool, f"{spec.key.to_user_string()} has no pool"
        where = spec.key.to_user_string()
        assert spec.group_name, where
        assert spec.kinds, where
        assert spec.partitions_def is not None, where
        assert spec.description, where
        assert len(spec.key.path) in (1, 3), where
        assert spec.group_name == spec.key.path[0], where
        assert spec.key in checked, f"{where} has no asset check"


def test_demo_definitions(dagster_home: Path) -> None:
    d = location_defs()
    assert_invariants(d)
    keys = {k.to_user_string() for k in d.resolve_all_asset_keys()}
    assert {"shop/main/orders", "shop/main/customers", "shop/main/products"} <= keys
    assert {"inventory/main/warehouses", "inventory/main/stock_levels"} <= keys
    orders = d.resolve_assets_def(dg.AssetKey(["shop", "main", "orders"]))
    assert orders.backfill_policy == dg.BackfillPolicy.single_run()
    assert d.resolve_assets_def(
        dg.AssetKey(["shop", "main", "customers"])
    ).backfill_policy == dg.BackfillPolicy.multi_run(1)


def test_two_hundred_tables(tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defs_dir = tmp_path / "big"
    for s in range(4):
        write_component(
            defs_dir,
            f"src{s}",
            "adu_assets.DatabaseExport",
            {
                "name": f"src{s}",
                "connection": {
                    "kind": "postgres",
                    "host": "db.internal",
                    "database": f"db{s}",
                    "user": "adu",
                    "password_env": "NOT_NEEDED_AT_LOAD",
                },
                "start_date": "2024-01-01",
                "tables": [
                    {"name": f"table_{i}", "incremental_column": "updated_at" if i % 2 else None}
                    for i in range(50)
                ],
            },
        )
    # Loading must not connect anywhere: the host above does not exist.
    d = load(defs_dir, monkeypatch)
    assert len(list(d.resolve_all_asset_keys())) == 200
    assert_invariants(d)


def test_dagster_definitions_validate_cli(dagster_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "adu_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation successful" in proc.stdout + proc.stderr


def test_components_load_and_run_without_definitions_py(dagster_home: Path) -> None:
    """`dg.components.load_defs(adu_assets.defs)` alone is a working code location: the components carry
    the landing store and the table IO manager, so an export lands in the warehouse without definitions.py."""
    import adu_assets.defs
    from adu_assets.demo import ensure_demo_sources
    from adu_assets.warehouse import connect

    ensure_demo_sources()
    d = dg.components.load_defs(adu_assets.defs, project_root=REPO)
    key = dg.AssetKey(["shop", "main", "customers"])
    result = d.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.get(), asset_selection=[key], partition_key="2026-03-01"
    )
    assert result.success
    with connect() as con:
        row = con.execute("SELECT count(*) FROM shop_main.customers").fetchone()
    assert row is not None and row[0] == 2000
