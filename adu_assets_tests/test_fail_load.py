"""Issue 11 point 5 (load): a DatabaseExport whose schema matches no table is an error at load naming the
file and the field, not a source that silently builds zero assets. Like any broken file it does not stop
the other components (point 1): it becomes a load problem and a sensor whose skip reason says it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, load_problems, write_component
from adu_assets_tests.pg_server import PgServer


def test_schema_with_no_tables_is_a_load_error_and_fixing_it_needs_no_refresh(
    pg: PgServer,
    pg_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE orders (id int)")
    defs_dir = tmp_path / "defs"
    cfg = {
        "name": "shop",
        "connection": pg_connection_yaml(pg, pg_db),
        "schema": "Public",
        "start_date": "2024-01-01",
    }
    path = write_component(defs_dir, "shop", "adu_assets.DatabaseExport", cfg)
    text = load_problems(defs_dir, monkeypatch)
    assert f"{path}: schema: DatabaseExport shop: schema 'Public' has no tables" in text
    assert "'public' for PostgreSQL" in text

    # The empty discovery was cached for 'Public'; the corrected schema is discovered without a refresh.
    write_component(defs_dir, "shop", "adu_assets.DatabaseExport", {**cfg, "schema": "public"})
    keys = [k.path for k in load(defs_dir, monkeypatch).resolve_all_asset_keys()]
    assert keys == [["shop", "public", "orders"]]


def test_empty_tables_list_is_a_load_error(
    pg: PgServer,
    pg_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defs_dir = tmp_path / "defs"
    path = write_component(
        defs_dir,
        "shop",
        "adu_assets.DatabaseExport",
        {
            "name": "shop",
            "connection": pg_connection_yaml(pg, pg_db),
            "start_date": "2024-01-01",
            "tables": [],
        },
    )
    text = load_problems(defs_dir, monkeypatch)
    assert f"{path}: tables: DatabaseExport shop: the list is empty" in text
