"""The public read paths (`adu sql`, `warehouse.connect()`, a plain DuckDB ATTACH), retention, and the one-off
import of a 0.1 data folder (`data.parquet` files and `warehouse.duckdb`)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from adu_assets.io_managers.landing import land, landed_files
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.databases import TableStream, extension_path, new_duckdb
from adu_assets.warehouse import LandingStore, connect, import_0_1_data

KEY = dg.AssetKey(["shop", "main", "orders"])
ADU = [sys.executable, "-c", "import sys; from adu_assets.cli import main; sys.exit(main())"]


def write(store: LandingStore | Path, day: str, sql: str, key: dg.AssetKey = KEY) -> dict[str, object]:
    stream = TableStream(con=new_duckdb(), sql=sql, table=TableInfo("main", key.path[-1]), source_label="t",
                         partition_keys=[day])
    try:
        return land(stream, ["parquet", "duckdb"], store, key)
    finally:
        stream.close()


def test_adu_sql_and_connect_read_the_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("ADU_DATA_DIR", str(data))
    write(data, "2024-01-01", "SELECT i AS id, 'o''brien|x' AS who FROM range(3) t(i)")
    out = subprocess.run(
        [*ADU, "sql", "--format", "json",
         "SELECT id, who, CAST(adu_partition AS VARCHAR) AS day FROM shop_main.orders ORDER BY id"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": i, "who": "o'brien|x", "day": "2024-01-01"} for i in range(3)]
    table = subprocess.run([*ADU, "sql", "SELECT count(*) AS n FROM shop_main.orders"],
                           capture_output=True, text=True, check=True).stdout
    assert table.splitlines()[0].strip() == "n" and table.splitlines()[2].strip() == "3"
    # Read-only: a write through `adu sql` is refused and changes nothing.
    bad = subprocess.run([*ADU, "sql", "DELETE FROM shop_main.orders"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "read-only" in bad.stderr.lower()
    with closing(connect()) as con:
        assert con.execute("SELECT count(*) FROM shop_main.orders").fetchone() == (3,)

    # The plain DuckDB way, as the README shows it for other tools.
    with duckdb.connect() as con:
        con.execute(f"LOAD '{extension_path('ducklake')}'")
        con.execute(f"LOAD '{extension_path('sqlite')}'")
        con.execute(f"ATTACH 'ducklake:sqlite:{data}/warehouse.sqlite' AS warehouse (READ_ONLY)")
        assert con.execute("SELECT sum(id) FROM warehouse.shop_main.orders").fetchone() == (3,)


def test_reader_holding_a_connection_never_blocks_a_writer(tmp_path: Path) -> None:
    store = LandingStore(data_dir=str(tmp_path / "data"))
    write(store, "2024-01-01", "SELECT 1 AS id")
    with closing(store.connect()) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM shop_main.orders").fetchone() == (1,)
        write(store, "2024-01-02", "SELECT 2 AS id")  # an analyst's open connection does not stop the export
    with closing(store.connect()) as con:
        assert con.execute("SELECT count(*) FROM shop_main.orders").fetchone() == (2,)


def test_retention_keeps_old_versions_for_time_travel(tmp_path: Path) -> None:
    store = LandingStore(data_dir=str(tmp_path / "data"), retention_days=7)
    first = write(store, "2024-01-01", "SELECT 1 AS id")
    write(store, "2024-01-01", "SELECT 2 AS id")
    assert len(landed_files(store.root(), KEY, "2024-01-01")) == 2  # the old file stays for time travel
    with closing(store.connect()) as con:
        assert con.execute("SELECT id FROM shop_main.orders").fetchall() == [(2,)]
        version = first["warehouse_snapshot"].value  # type: ignore[attr-defined]
        assert con.execute(f"SELECT id FROM shop_main.orders AT (VERSION => {version})").fetchall() == [(1,)]
    # Back to the default: the next write removes what no snapshot within 0 days needs.
    write(LandingStore(data_dir=str(store.root())), "2024-01-02", "SELECT 3 AS id")
    assert len(landed_files(store.root(), KEY, "2024-01-01")) == 1


def test_import_of_a_0_1_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_tree = data / "parquet" / "shop" / "main" / "orders"
    with duckdb.connect() as con:
        for day, n in (("2024-01-01", 3), ("2024-01-02", 2)):
            (old_tree / f"adu_partition={day}").mkdir(parents=True)
            con.execute(f"COPY (SELECT i AS id FROM range({n}) t(i)) TO '{old_tree}/adu_partition={day}/data.parquet'")
    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA shop_main")
        con.execute("CREATE TABLE shop_main.orders AS SELECT 99 AS id, DATE '2024-01-01' AS adu_partition")
        con.execute("CREATE SCHEMA inv_main")
        con.execute("CREATE TABLE inv_main.stock AS SELECT i AS n, DATE '2024-02-01' + CAST(i % 2 AS INT) AS adu_partition "
                    "FROM range(4) t(i)")
        con.execute("CREATE SCHEMA drops")
        con.execute("CREATE TABLE drops.drops AS SELECT 1 AS x, 'a/b.csv' AS adu_partition UNION ALL SELECT 2, 'c.csv'")

    landed = import_0_1_data(LandingStore(data_dir=str(data)))
    assert landed == {"shop_main.orders": 5, "inv_main.stock": 4, "drops.drops": 2}
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        # The Parquet tree wins over warehouse.duckdb for a table both had (it is what glob readers saw).
        assert con.execute("SELECT count(*), sum(id) FROM shop_main.orders").fetchone() == (5, 4)
        assert con.execute("SELECT CAST(adu_partition AS VARCHAR), count(*) FROM inv_main.stock GROUP BY 1 ORDER BY 1"
                           ).fetchall() == [("2024-02-01", 2), ("2024-02-02", 2)]
        assert con.execute("SELECT adu_partition, x FROM drops.drops ORDER BY x").fetchall() == [("a/b.csv", 1), ("c.csv", 2)]
    assert not list(old_tree.glob("*/data.parquet")) and not (data / "warehouse.duckdb").exists()
    assert (data / "0.1-backup" / "warehouse.duckdb").exists()
    assert len(landed_files(data, KEY)) == 2
    # A later export of the table replaces its partition as usual.
    write(data, "2024-01-01", "SELECT CAST(7 AS BIGINT) AS id")
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        assert con.execute("SELECT count(*), sum(id) FROM shop_main.orders").fetchone() == (3, 8)
