"""The type map in the Vertica reader, through `open_table_stream` with a fake driver and a real landing.

numeric wider than 38 digits lands as the server's exact text (an Arrow decimal256 would reach DuckDB as
DOUBLE), intervals as text, and a YAML `cast:` is honoured in the SELECT and noted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets.io_managers.landing import land
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import SourceError, open_table_stream
from adu_assets.warehouse import LandingStore

CATALOG = [
    ("s", "Order Details", "id", "int", False),
    ("s", "Order Details", "wide", "numeric(60,10)", True),
    ("s", "Order Details", "amount", "numeric(15,2)", True),
    ("s", "Order Details", "iv", "interval day to second", True),
    ("s", "Order Details", "at", "timestamptz", True),
]
WIDE = "12345678901234567890123456789012345678901234567890.0123456789"


class Cursor:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.description: list[tuple[Any, ...]] | None = None
        self.rows: list[Sequence[Any]] = []

    def execute(self, operation: str, parameters: Sequence[Any], **kw: Any) -> Cursor:
        self.server.executed.append(operation)
        if "v_catalog" in operation:
            self.rows = list(CATALOG)
            self.description = [(n,) for n in ("table_schema", "table_name", "column_name", "data_type", "n")]
        else:
            self.rows = [
                [1, WIDE, 12.5, "-1 02:03:04", datetime(2024, 1, 1, 7, tzinfo=UTC)],
                [2, None, None, None, None],
            ]
            self.description = [(c[2],) for c in CATALOG]
        return self

    def fetchmany(self, size: int) -> list[Sequence[Any]]:
        chunk, self.rows = self.rows[:size], self.rows[size:]
        return chunk

    def close(self) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.executed: list[str] = []

    def connect(self, **kw: Any) -> Any:
        server = self

        class Conn:
            def cursor(self) -> Cursor:
                return Cursor(server)

            def close(self) -> None:
                pass

        return Conn()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    import vertica_python

    s = Server()
    monkeypatch.setattr(vertica_python, "connect", s.connect)
    monkeypatch.setenv("ADU_TEST_VERTICA_PASSWORD", "pw")
    return s


CFG = ConnectionConfig(
    kind="vertica", host="127.0.0.1", database="dw", user="adu", password_env="ADU_TEST_VERTICA_PASSWORD"
)


def test_wide_numeric_and_interval_land_as_exact_text_and_cast_is_honoured(server: Server, tmp_path: Path) -> None:
    stream = open_table_stream(
        CFG, schema="s", table="order details", label="v", incremental_column=None, window=None,
        partition_keys=["2024-01-01"], casts={"AMOUNT": "double"},
    )
    notes = list(stream.notes)
    try:
        land(stream, ["parquet", "duckdb"], tmp_path, dg.AssetKey(["v", "s", "Order_Details"]))
    finally:
        stream.close()
    select = server.executed[-1]
    assert 'CAST("wide" AS VARCHAR(65000)) AS "wide"' in select
    assert 'CAST("amount" AS FLOAT) AS "amount"' in select
    assert 'FROM "s"."Order Details"' in select
    assert notes == [
        "wide: numeric(60,10) read as text",
        "amount: numeric(15,2) cast to double as the YAML asks (cast:)",
        "iv: interval day to second read as text",
    ]
    files = str(tmp_path / "parquet" / "v" / "s" / "Order_Details" / "adu_partition=*" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        cols = "id, typeof(wide), wide, typeof(amount), amount, iv, epoch_us(\"at\")"
        parquet = con.execute(f"SELECT {cols} FROM read_parquet('{files}') ORDER BY id").fetchall()
    with LandingStore(data_dir=str(tmp_path)).connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        wh = con.execute(f"SELECT {cols} FROM v_s.Order_Details ORDER BY id").fetchall()
    assert parquet == wh
    assert parquet[0] == (1, "VARCHAR", WIDE, "DOUBLE", 12.5, "-1 02:03:04", 1704092400000000)
    assert Decimal(parquet[0][2]) == Decimal(WIDE)


def test_cast_naming_an_unknown_column_is_refused(server: Server) -> None:
    with pytest.raises(SourceError, match=r"v\.Order Details: cast: names nope, not in s\.Order Details"):
        open_table_stream(
            CFG, schema="s", table="Order Details", label="v", incremental_column=None, window=None,
            partition_keys=["2024-01-01"], casts={"nope": "text"},
        )
    # Refused before any data query ran.
    assert all("v_catalog" in sql for sql in server.executed)
