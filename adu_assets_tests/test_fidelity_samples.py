"""Northwind and Chinook exported through discovery: every table equal in the source, Parquet and the warehouse.

Equal means: the same row count, the same sum of every numeric column and the same md5 of every text
column's sorted values, and beyond that the same multiset of whole rows, value for value (numerics as exact
Decimals, timestamps as epoch microseconds, `real` compared at its own 32-bit precision).
"""

import hashlib
import struct
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from adu_assets import warehouse
from adu_assets_tests.conftest import pg_connection_yaml, sample_data
from adu_assets_tests.defs_helpers import load, run_partition, write_component
from adu_assets_tests.pg_server import PgServer

FLOAT4_OID = 700


@pytest.fixture
def defs_dir(tmp_path: Path, dagster_home: Path) -> Path:
    d = tmp_path / "user_defs"
    d.mkdir()
    return d


def canon(value: Any, float4: bool) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return ("dec", value.normalize() if value else Decimal(0))
    if isinstance(value, float):
        return ("f", struct.unpack("f", struct.pack("f", value))[0] if float4 else value)
    if isinstance(value, int):
        return ("dec", Decimal(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return ("ts", int((value - datetime(1970, 1, 1)).total_seconds() * 1_000_000))
        return ("tstz", int(value.timestamp() * 1_000_000))
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value)
    return value


def summary(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Count, per-column sums of numbers and md5 of sorted text: the issue's checksums."""
    out: dict[str, Any] = {"count": len(rows)}
    for i in range(len(rows[0]) if rows else 0):
        values = [r[i] for r in rows if r[i] is not None]
        if values and all(isinstance(v, tuple) and v[0] == "dec" for v in values):
            out[f"sum{i}"] = sum(v[1] for v in values)
        elif values and all(isinstance(v, str) for v in values):
            out[f"md5_{i}"] = hashlib.md5("\x1f".join(sorted(values)).encode()).hexdigest()
    return out


def compare_database(pg: PgServer, database: str, component: str, root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with pg.connect(database) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM public."{table}"')
            names = [d.name for d in cur.description or []]
            float4 = [d.type_code == FLOAT4_OID for d in cur.description or []]
            expected = sorted((tuple(canon(v, f) for v, f in zip(r, float4, strict=True)) for r in cur.fetchall()), key=repr)
            cols = ", ".join(f'"{n}"' for n in names)
            files = sorted((root / "parquet" / component / "public" / table).glob("adu_partition=*/*.parquet"))
            # An empty table has no data files in the warehouse's tree (DuckLake registers none for it).
            parquet_rows: list[tuple[object, ...]] = []
            if files:
                with duckdb.connect() as con:
                    con.execute("SET TimeZone = 'UTC'")
                    listed = ", ".join(f"'{f}'" for f in files)
                    parquet_rows = con.execute(f"SELECT {cols} FROM read_parquet([{listed}])").fetchall()
            with warehouse.connect() as con:
                wh_rows = con.execute(f'SELECT {cols} FROM "{component}_public"."{table}"').fetchall()
            for where, rows in (("parquet", parquet_rows), ("warehouse", wh_rows)):
                landed = sorted((tuple(canon(v, f) for v, f in zip(r, float4, strict=True)) for r in rows), key=repr)
                assert summary(landed) == summary(expected), f"{database}.{table} in {where}"
                assert landed == expected, f"{database}.{table} in {where}"
            counts[table] = len(expected)
    return counts


def test_northwind_and_chinook_land_exactly(
    pg: PgServer, pg_db: str, chinook: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pg.run_sql_file(pg_db, sample_data("northwind", "northwind.sql"))
    for name, database in (("nw", pg_db), ("chinook", chinook)):
        write_component(defs_dir, name, "adu_assets.DatabaseExport", {
            "name": name, "connection": pg_connection_yaml(pg, database), "start_date": "2024-01-01"})
    d = load(defs_dir, monkeypatch)
    keys = list(d.resolve_all_asset_keys())
    assert len(keys) == 14 + 11
    result = run_partition(d, keys, "2024-01-02")
    failures = [e.event_specific_data.error.to_string() for e in result.all_events  # type: ignore[union-attr]
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures
    root = tmp_path / "data"
    nw = compare_database(pg, pg_db, "nw", root)
    assert nw["order_details"] == 2155 and nw["orders"] == 830 and len(nw) == 14
    ch = compare_database(pg, chinook, "chinook", root)
    assert ch["invoice_line"] == 2240 and ch["track"] == 3503 and len(ch) == 11
