"""Four writer processes replace the same and different partitions of one table while a reader loops.

Every write of a partition lands exactly ROWS rows tagged with (writer, round). At every moment a reader may
see a partition with no rows yet or with exactly ROWS rows of one single write: never a mix (a lost delete),
never more (a duplicate), never an error. Commit conflicts on the SQLite catalog are retried inside `land`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb

from adu_assets.warehouse import LandingStore

KEY = dg.AssetKey(["conc", "main", "t"])
ROWS = 2_000
ROUNDS = 5
# Writers 0 and 1 share day 1, writers 2 and 3 share day 2; each also owns a day of its own.
DAYS = {0: ["2024-01-01", "2024-01-03"], 1: ["2024-01-01", "2024-01-04"],
        2: ["2024-01-02", "2024-01-05"], 3: ["2024-01-02", "2024-01-06"]}


def writer(data_dir: str, me: int) -> None:
    from adu_assets.io_managers.landing import land
    from adu_assets.sources.catalog import TableInfo
    from adu_assets.sources.databases import TableStream, new_duckdb

    errors = 0
    for r in range(ROUNDS):
        for day in DAYS[me]:
            stream = TableStream(
                con=new_duckdb(),
                sql=f"SELECT i AS id, '{me}-{r}' AS tag, CAST(i / 3 AS DECIMAL(10,2)) AS v FROM range({ROWS}) t(i)",
                table=TableInfo("main", "t"), source_label="conc", partition_keys=[day],
            )
            try:
                land(stream, ["parquet", "duckdb"], Path(data_dir), KEY)
            except Exception as e:
                errors += 1
                print(f"writer {me}: {e}", file=sys.stderr)
            finally:
                stream.close()
    print(json.dumps({"errors": errors}))


def test_four_writers_and_a_reader(tmp_path: Path) -> None:
    data = tmp_path / "data"
    procs = [
        subprocess.Popen([sys.executable, "-m", "adu_assets_tests.test_warehouse_concurrency", str(data), str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    store = LandingStore(data_dir=str(data))
    reads, read_errors, bad = 0, [], []
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        try:
            with closing(store.connect()) as con:
                exists = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'warehouse' AND table_name = 't'"
                ).fetchone()
                if exists and exists[0]:
                    rows = con.execute(
                        "SELECT CAST(adu_partition AS VARCHAR), count(*), count(DISTINCT tag), sum(v) "
                        "FROM conc_main.t GROUP BY 1"
                    ).fetchall()
                    reads += 1
                    bad += [r for r in rows if r[1] != ROWS or r[2] != 1]
        except Exception as e:  # any reader error fails the test
            read_errors.append(str(e))
        time.sleep(0.05)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-2000:] for o in outs]
    assert [json.loads(o[0].strip().splitlines()[-1])["errors"] for o in outs] == [0, 0, 0, 0], [
        o[1][-2000:] for o in outs]
    assert read_errors == []
    assert bad == []
    assert reads > 0

    with closing(store.connect()) as con:
        final = con.execute(
            "SELECT CAST(adu_partition AS VARCHAR), count(*), count(DISTINCT tag), count(DISTINCT id), min(tag) "
            "FROM conc_main.t GROUP BY 1 ORDER BY 1"
        ).fetchall()
    days = sorted({d for ds in DAYS.values() for d in ds})
    assert [r[0] for r in final] == days
    assert all(r[1] == ROWS and r[2] == 1 and r[3] == ROWS for r in final), final
    # Each own day ends with its writer's last round; shared days with the last round of one of their writers.
    tags = {r[0]: r[4] for r in final}
    for me, (shared, own) in DAYS.items():
        assert tags[own] == f"{me}-{ROUNDS - 1}"
        assert tags[shared] in {f"{w}-{ROUNDS - 1}" for w, days in DAYS.items() if shared in days}
    # At rest the tree holds exactly the warehouse's rows.
    glob = data / "parquet" / "conc" / "main" / "t" / "*" / "*.parquet"
    tree = duckdb.sql(
        f"SELECT CAST(adu_partition AS VARCHAR), count(*), count(DISTINCT tag), count(DISTINCT id), min(tag) "
        f"FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert tree == final
    print(f"{reads} consistent reads during the writes")


if __name__ == "__main__":
    writer(sys.argv[1], int(sys.argv[2]))
