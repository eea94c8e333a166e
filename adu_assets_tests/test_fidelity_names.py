"""Asset keys for source names outside [A-Za-z0-9_]: readable, valid, never a path escape; clashes refused."""

import dagster as dg
import pytest

from adu_assets.components.database_export import DatabaseExport, TableConfig
from adu_assets.model_bounds import asset_key_name, key_part


@pytest.mark.parametrize(
    ("source", "part"),
    [
        ("orders", "orders"),
        ("Order Details", "Order_Details"),
        ("a/b", "a_b"),
        ("../../etc", "etc"),
        ("Café ☕", "Cafe"),
        ('it\'s "q"', "it_s_q"),
        ("  spaced  out ", "spaced_out"),
    ],
)
def test_key_part_is_readable_and_valid(source: str, part: str) -> None:
    assert key_part(source) == part
    dg.AssetKey(["x", part])  # a valid key part
    assert asset_key_name(part) == part


@pytest.mark.parametrize("source", ["日本", "..", "/", "", "☕"])
def test_nothing_readable_left_gives_a_stable_hashed_part(source: str) -> None:
    part = key_part(source)
    assert part.startswith("t_") and len(part) == 10 and part == key_part(source)
    assert "/" not in part and ".." not in part


def export(**kw: object) -> DatabaseExport:
    return DatabaseExport.model_validate({
        "name": "src", "connection": {"kind": "duckdb", "path": "/nonexistent.duckdb"}, "start_date": "2024-01-01",
        **kw,
    })


def test_asset_key_sanitizes_schema_and_table_and_honours_asset_name() -> None:
    component = export(schema="Sales Data", tables=[{"name": "Order Details"}, {"name": "x", "asset_name": "y"}])
    assert component.asset_key("Order Details") == dg.AssetKey(["src", "Sales_Data", "Order_Details"])
    assert component.asset_key("x") == dg.AssetKey(["src", "Sales_Data", "y"])


def test_clashing_names_are_refused_naming_both() -> None:
    component = export()
    with pytest.raises(ValueError, match=r"tables 'a/b' and 'a b' .* same asset key 'src/public/a_b'"):
        component.check_unique_keys([TableConfig(name="a/b"), TableConfig(name="a b")])
    with pytest.raises(ValueError, match=r"tables 'Orders' and 'orders'.*asset_name"):
        component.check_unique_keys([TableConfig(name="Orders"), TableConfig(name="orders")])


def test_component_name_must_be_ascii() -> None:
    with pytest.raises(ValueError, match="ASCII letters"):
        asset_key_name("café")
    with pytest.raises(ValueError, match="ASCII letters"):
        TableConfig(name="t", asset_name="a b")
