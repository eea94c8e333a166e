"""SIGKILL at each point of a multi-day range write, then a re-run: the tree and the warehouse agree row for
row, and the killed write never shows. Real processes, real files, a real DuckDB source file.

The child (this module run with `python -m`) lands three days of `events` from the source file and kills
itself with SIGKILL at the point named on its command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from adu_assets.warehouse import LandingStore

KEY = dg.AssetKey(["crash", "main", "events"])
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]
ROWS = 30_000  # 10,000 a day


def make_source(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"CREATE TABLE events AS SELECT i AS id, TIMESTAMPTZ '2024-03-01 00:00:00+00' + "
            f"to_seconds(CAST(i * 86400 // {ROWS // 3} AS BIGINT)) AS at, CAST(i / 7 AS DECIMAL(12,3)) AS v "
            f"FROM range({ROWS}) t(i)"
        )


def child(data_dir: str, source: str, version: int, point: str) -> None:
    from adu_assets.io_managers import landing
    from adu_assets.sources.catalog import TableInfo
    from adu_assets.sources.databases import TableStream, new_duckdb

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    con = new_duckdb()
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")

    def killer(i: int) -> bool:
        if i == ROWS // 2:  # half-way through the source, with files of two days being written
            die()
        return True

    where = ""
    if point == "source":
        con.create_function("killer", killer, ["BIGINT"], "BOOLEAN", side_effects=True)
        where = "WHERE killer(id)"
    elif point == "files":
        landing._rows_by_partition = lambda *a, **k: die()  # type: ignore[assignment]
    elif point == "commit":
        original = landing._commit

        class Proxy:
            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "COMMIT":
                    die()
                return con.execute(sql, *args)

        landing._commit = lambda c, *a: original(Proxy(), *a)  # type: ignore[assignment,arg-type]
    elif point == "retire":
        landing.retire_superseded = lambda *a, **k: die()  # type: ignore[assignment]
    stream = TableStream(
        con=con,
        sql=f"SELECT id, \"at\", v * {version} AS v, {version} AS version FROM src.events {where}",
        table=TableInfo("main", "events"),
        source_label="crash test",
        partition_keys=DAYS,
        partition_expr="strftime(CAST(\"at\" AS TIMESTAMPTZ), '%Y-%m-%d')",
    )
    meta = landing.land(stream, ["parquet", "duckdb"], Path(data_dir), KEY)
    print(json.dumps({"rows": meta["dagster/row_count"].value}))


def run_child(data: Path, source: Path, version: int, point: str = "none") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adu_assets_tests.test_warehouse_crash", str(data), str(source), str(version), point],
        capture_output=True, text=True, timeout=300,
    )


def warehouse(data: Path) -> list[tuple[Any, ...]]:
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        return con.execute(
            "SELECT id, \"at\", v, version, adu_partition FROM crash_main.events ORDER BY id"
        ).fetchall()


def tree(data: Path) -> list[tuple[Any, ...]]:
    """What the README's glob query returns."""
    glob = data / "parquet" / "crash" / "main" / "events" / "*" / "*.parquet"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            f"SELECT id, \"at\", v, version, adu_partition FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY id"
        ).fetchall()


def leftovers(data: Path) -> list[str]:
    """Files in the table's folders that are not whole, registered data files of the current snapshot."""
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        current = {
            Path(str(r[0])).name
            for r in con.execute("SELECT data_file FROM ducklake_list_files('warehouse', 'events', schema => 'crash_main')").fetchall()
        }
    base = data / "parquet" / "crash" / "main" / "events"
    return sorted(p.name for p in base.rglob("*") if p.is_file() and p.name not in current)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.duckdb"
    make_source(path)
    return path


@pytest.mark.parametrize("point", ["source", "files", "commit", "retire"])
def test_sigkill_then_rerun(tmp_path: Path, source: Path, point: str) -> None:
    data = tmp_path / "data"
    first = run_child(data, source, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    before = warehouse(data)
    assert len(before) == ROWS and {r[3] for r in before} == {1}
    assert tree(data) == before

    killed = run_child(data, source, 2, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    after_kill = warehouse(data)
    if point == "retire":
        # Killed after its commit: the new version is whole in the warehouse.
        assert len(after_kill) == ROWS and {r[3] for r in after_kill} == {2}
    else:
        assert after_kill == before  # nothing of the killed write is visible
    # No half-written file is ever visible to a `*.parquet` glob.
    base = data / "parquet" / "crash" / "main" / "events"
    for f in base.glob("*/*.parquet"):
        duckdb.sql(f"SELECT count(*) FROM '{f}'").fetchall()

    rerun = run_child(data, source, 3)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = warehouse(data)
    assert len(final) == ROWS and {r[3] for r in final} == {3}
    assert len({r[0] for r in final}) == ROWS
    assert tree(data) == final
    assert leftovers(data) == []
    assert not list((data / ".adu" / "writers").glob("*.lock"))


def test_startup_sweep_removes_orphans_of_dead_writers_only(tmp_path: Path, source: Path) -> None:
    data = tmp_path / "data"
    assert run_child(data, source, 1).returncode == 0
    assert run_child(data, source, 2, "files").returncode == -signal.SIGKILL
    assert leftovers(data)  # the killed writer's complete files
    # A live writer's not-yet-committed file: its lock is held by this test process.
    from adu_assets.io_managers.landing import Writer

    store = LandingStore(data_dir=str(data))
    with Writer(store) as live:
        pending = data / "parquet" / "crash" / "main" / "events" / "adu_partition=2024-03-01" / f"{live.id}-{'0' * 32}.parquet"
        pending.write_bytes(b"not yet committed")
        assert store.sweep_orphans() == 3
        assert leftovers(data) == [pending.name]
    pending.unlink()
    assert warehouse(data) == tree(data)


def test_files_of_another_hosts_writer_are_kept_until_its_lock_is_a_day_old(tmp_path: Path, source: Path) -> None:
    data = tmp_path / "data"
    assert run_child(data, source, 1).returncode == 0
    store = LandingStore(data_dir=str(data))
    writer = "cd" * 8
    lock = store.writers_dir() / f"{writer}.lock"
    lock.write_text("other-host.example\n4242\n")  # unlocked here: its flock lives on the other host
    pending = data / "parquet" / "crash" / "main" / "events" / "adu_partition=2024-03-01" / f"{writer}-{'1' * 32}.parquet"
    pending.write_bytes(b"being committed on another host")
    assert store.sweep_orphans() == 0 and pending.exists() and lock.exists()
    old = time.time() - 25 * 3600
    os.utime(lock, (old, old))
    assert store.sweep_orphans() == 1 and not pending.exists() and lock.exists()


def test_forced_warehouse_failure_changes_neither_destination(tmp_path: Path, source: Path) -> None:
    data = tmp_path / "data"
    assert run_child(data, source, 1).returncode == 0
    before_rows, before_files = warehouse(data), sorted((data / "parquet").rglob("*.parquet"))
    # The catalog refuses the new files at COMMIT, after the Parquet files were written.
    import sqlite3

    with closing(sqlite3.connect(data / "warehouse.sqlite")) as cat:
        cat.execute(
            "CREATE TRIGGER forced_failure BEFORE INSERT ON ducklake_data_file "
            "BEGIN SELECT RAISE(ABORT, 'forced warehouse failure'); END"
        )
        cat.commit()
    failed = run_child(data, source, 2)
    with closing(sqlite3.connect(data / "warehouse.sqlite")) as cat:
        cat.execute("DROP TRIGGER forced_failure")
        cat.commit()
    assert failed.returncode != 0
    assert "forced warehouse failure" in failed.stderr, failed.stderr[-2000:]
    assert warehouse(data) == before_rows
    assert sorted((data / "parquet").rglob("*.parquet")) == before_files
    assert tree(data) == before_rows


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
