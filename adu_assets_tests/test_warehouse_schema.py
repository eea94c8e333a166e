"""Schema changes at a real PostgreSQL source: the warehouse widens losslessly or refuses, never rounds.

0.1 kept a DECIMAL(7,2) warehouse column after the source became numeric(9,3), and INSERT BY NAME rounded
19983.364 to 19983.36 on every later partition while the run succeeded.
"""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.io_managers.landing import WarehouseSchemaError, land, landed_files
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import open_table_stream
from adu_assets.warehouse import LandingStore
from adu_assets_tests.pg_server import PgServer

KEY = dg.AssetKey(["pg", "public", "payment"])


def export(pg: PgServer, db: str, data: Path, day: int) -> dict[str, object]:
    cfg = ConnectionConfig(kind="postgres", host=pg.host, port=pg.port, database=db, user=pg.user,
                           password_env="ADU_TEST_PG_PASSWORD")
    window = (datetime(2024, 5, day, tzinfo=UTC), datetime(2024, 5, day + 1, tzinfo=UTC))
    stream = open_table_stream(cfg, schema="public", table="payment", label="t", incremental_column="paid_at",
                               window=window, partition_keys=[f"2024-05-{day:02d}"])
    try:
        return land(stream, ["parquet", "duckdb"], data, KEY)
    finally:
        stream.close()


def rows(data: Path) -> list[tuple[object, ...]]:
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        return con.execute("SELECT id, amount, qty FROM pg_public.payment ORDER BY id").fetchall()


def column_type(data: Path, column: str) -> str:
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        row = con.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 'payment' AND column_name = ?",
                          [column]).fetchone()
    assert row is not None
    return str(row[0])


def test_widening_at_the_source_lands_exactly_in_both(pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE payment (id int, amount numeric(7,2), qty smallint, paid_at timestamptz)")
        conn.execute("INSERT INTO payment VALUES (1, 12345.67, 3, '2024-05-01 10:00+00')")
    export(pg, pg_db, data, 1)
    with pg.connect(pg_db) as conn:
        conn.execute("ALTER TABLE payment ALTER amount TYPE numeric(9,3), ALTER qty TYPE bigint")
        conn.execute("INSERT INTO payment VALUES (2, 19983.364, 5000000000, '2024-05-02 10:00+00')")
    export(pg, pg_db, data, 2)
    assert column_type(data, "amount") == "DECIMAL(9,3)" and column_type(data, "qty") == "BIGINT"
    assert rows(data) == [(1, Decimal("12345.670"), 3), (2, Decimal("19983.364"), 5000000000)]
    [new_file] = landed_files(data, KEY, "2024-05-02")
    import pyarrow.parquet as pq

    assert pq.read_table(new_file).column("amount").to_pylist() == [Decimal("19983.364")]


def test_narrowing_at_the_source_fails_and_commits_nothing(pg: PgServer, pg_db: str, pg_password_env: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE payment (id int, amount numeric(9,3), qty bigint, paid_at timestamptz)")
        conn.execute("INSERT INTO payment VALUES (1, 19983.364, 1, '2024-05-01 10:00+00')")
    export(pg, pg_db, data, 1)
    before_rows, before_files = rows(data), landed_files(data, KEY)
    with pg.connect(pg_db) as conn:
        conn.execute("ALTER TABLE payment ALTER amount TYPE numeric(7,2)")
        conn.execute("UPDATE payment SET paid_at = '2024-05-01 11:00+00'")
    with pytest.raises(WarehouseSchemaError) as err:
        export(pg, pg_db, data, 1)
    message = str(err.value)
    assert "pg_public.payment" in message and "column amount" in message
    assert "DECIMAL(9,3)" in message and "DECIMAL(7,2)" in message
    assert rows(data) == before_rows and landed_files(data, KEY) == before_files
    assert column_type(data, "amount") == "DECIMAL(9,3)"
