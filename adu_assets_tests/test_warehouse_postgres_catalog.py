"""The warehouse with a real PostgreSQL catalog (the multi-host setting): the password only ever comes from
the environment, and several processes commit to it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.io_managers.landing import land, landed_files
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.databases import TableStream, new_duckdb
from adu_assets.warehouse import LandingStore, WarehouseConfigError, postgres_catalog_dsn
from adu_assets_tests.pg_server import PgServer

KEY = dg.AssetKey(["pgcat", "public", "items"])


def catalog_url(pg: PgServer, db: str) -> str:
    return f"postgresql://{pg.user}@{pg.host}:{pg.port}/{db}"


def write(data: Path, day: str, n: int, tag: str) -> dict[str, object]:
    stream = TableStream(
        con=new_duckdb(), sql=f"SELECT i AS id, '{tag}' AS tag FROM range({n}) t(i)", table=TableInfo("public", "items"),
        source_label="t", partition_keys=[day],
    )
    try:
        return land(stream, ["parquet", "duckdb"], data, KEY)
    finally:
        stream.close()


def test_landing_with_a_postgres_catalog(pg: PgServer, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", catalog_url(pg, pg_db))
    monkeypatch.setenv("PGPASSWORD", pg.password)
    data = tmp_path / "data"
    write(data, "2024-01-01", 3, "a")
    write(data, "2024-01-02", 2, "a")
    meta = write(data, "2024-01-01", 4, "b")
    assert meta["warehouse_catalog"] == f"postgresql://{pg.host}:{pg.port}/{pg_db}"
    assert pg.password not in json.dumps({k: str(v) for k, v in meta.items()})
    assert not (data / "warehouse.sqlite").exists()

    store = LandingStore(data_dir=str(data))
    with closing(store.connect()) as con:
        rows = con.execute(
            "SELECT CAST(adu_partition AS VARCHAR), count(*), min(tag) FROM pgcat_public.items GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("2024-01-01", 4, "b"), ("2024-01-02", 2, "a")]
    assert [len(landed_files(data, KEY, d)) for d in ("2024-01-01", "2024-01-02")] == [1, 1]
    frame = store.landed_frame(KEY, ["parquet"], ["2024-01-01"]).collect()
    assert sorted(frame["id"].to_list()) == [0, 1, 2, 3]

    # A crashed writer's file (its lock is gone) is swept; the registered files are checked in PostgreSQL.
    orphan = data / "parquet" / "pgcat" / "public" / "items" / "adu_partition=2024-01-02" / f"{'ab' * 8}-{'0' * 32}.parquet"
    orphan.write_bytes(b"partial")
    assert store.sweep_orphans() == 1 and not orphan.exists()
    assert [len(landed_files(data, KEY, d)) for d in ("2024-01-01", "2024-01-02")] == [1, 1]

    # The catalog lives in PostgreSQL, and nothing in it holds the password.
    with pg.connect(pg_db) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'ducklake_%'").fetchall()}
        assert {"ducklake_snapshot", "ducklake_data_file", "ducklake_metadata"} <= tables
        for table in tables:
            dump = conn.execute(f'SELECT CAST(t AS TEXT) FROM "{table}" t').fetchall()
            assert not any(pg.password in str(r[0]) for r in dump), table

    # Without the password in the environment the catalog cannot be opened, and the error does not leak it.
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(WarehouseConfigError) as err:
        store.connect()
    assert "cannot open the warehouse catalog" in str(err.value) and pg.password not in str(err.value)


def test_password_in_the_url_is_refused() -> None:
    with pytest.raises(WarehouseConfigError, match="must not contain a password") as err:
        postgres_catalog_dsn("postgresql://adu:s3cret-pw@db.example:5432/lake")
    assert "s3cret-pw" not in str(err.value)
    assert postgres_catalog_dsn("postgresql://adu@db.example/lake") == "host=db.example port=5432 dbname=lake user=adu"


def test_two_processes_commit_to_one_postgres_catalog(pg: PgServer, pg_db: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, ADU_WAREHOUSE_CATALOG=catalog_url(pg, pg_db), PGPASSWORD=pg.password, PYTHONPATH=os.getcwd())
    procs = [
        subprocess.Popen([sys.executable, "-m", "adu_assets_tests.test_warehouse_postgres_catalog", str(data), str(i)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    os.environ["PGPASSWORD"] = pg.password
    try:
        store = LandingStore(data_dir=str(data), catalog=catalog_url(pg, pg_db))
        with closing(store.connect()) as con:
            rows = con.execute(
                "SELECT CAST(adu_partition AS VARCHAR), count(*), count(DISTINCT tag) FROM pgcat_public.items GROUP BY 1 ORDER BY 1"
            ).fetchall()
    finally:
        del os.environ["PGPASSWORD"]
    assert rows == [("2024-02-01", 50, 1), ("2024-02-02", 50, 1), ("2024-02-03", 50, 1)]


if __name__ == "__main__":
    me = int(sys.argv[2])
    for r in range(3):
        for day in ("2024-02-01", f"2024-02-0{2 + me}"):
            write(Path(sys.argv[1]), day, 50, f"{me}-{r}")
