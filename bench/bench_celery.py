"""Scale-out benchmark: the same 12 export steps (6 PostgreSQL tables x 2 daily partitions) on 1 and on 2
Celery workers (`adu worker --concurrency 1`), through a real redis-server, reported as a ratio.

Two `dagster asset materialize` runs (one per partition) start at once, as a schedule's backfill would; the
clock runs from their launch to the end of both, with the workers already started. Pools do not limit
here (max_parallel 6), so the ratio measures what a second worker adds, not what a pool allows.

What the ratio means on a 2-core machine: both workers share the same 2 cores and the same local
PostgreSQL, and every export already uses every core inside DuckDB, so a second worker can only overlap
the waits (broker round trips, Dagster start-up of each step, source queries, writes). A ratio near 1
says the host, not the number of workers, is the limit; on real hosts each worker brings its own cores,
and exports bound by the source's latency or the network gain most. The in-process line (full mode)
is one host without Celery, for scale: Celery's fixed cost per step is paid back only with more hosts.

    python -m bench.bench_celery            # 200k rows per table and partition
    python -m bench.bench_celery --small    # 2k rows, for CI: proves the path still runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from adu_assets_tests.pg_server import PgServer, running_postgres
from adu_assets_tests.redis_server import RedisServer, running_redis

PARTITIONS = ["2026-03-01", "2026-03-02"]
TABLES = [f"facts_{i}" for i in range(6)]
CLI = "import sys; from adu_assets.cli import main; sys.exit(main(sys.argv[1:]))"
TIMEOUT_S = 1800


def make_source(pg: PgServer, rows_per_day: int) -> None:
    pg.create_database("bench_src")
    with pg.connect("bench_src") as conn:
        for t in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(
                f"CREATE TABLE {t} AS SELECT g AS id, TIMESTAMPTZ '2026-03-01 00:00:00+00' + "
                f"(g % 2) * INTERVAL '1 day' + (g % 1440) * INTERVAL '1 minute' AS ts, "
                f"(g::bigint * 7919) % 100000 / 100.0 AS amount, md5(g::text) AS note "
                f"FROM generate_series(1, {2 * rows_per_day}) g"
            )
            conn.execute(f"CREATE INDEX ON {t} (ts)")
            conn.execute(f"ANALYZE {t}")


def environment(pg: PgServer, redis: RedisServer, work: Path, round_name: str) -> dict[str, str]:
    home = work / round_name / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "telemetry": {"enabled": False},
                "storage": {
                    "postgres": {
                        "postgres_db": {
                            "hostname": pg.host,
                            "port": pg.port,
                            "username": pg.user,
                            "password": {"env": "DAGSTER_PG_PASSWORD"},
                            "db_name": f"hist_{round_name}",
                            "scheme": "postgresql+psycopg2",
                        }
                    }
                },
            }
        )
    )
    with pg.connect() as conn:
        for db in (f"hist_{round_name}", f"cat_{round_name}"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
    defs = work / "defs"
    if not defs.exists():
        (defs / "bench").mkdir(parents=True)
        attributes = {
            "name": "bench",
            "connection": {
                "kind": "postgres",
                "host": pg.host,
                "port": pg.port,
                "database": "bench_src",
                "user": pg.user,
                "password_env": "BENCH_PG_PASSWORD",
                "max_parallel": 6,
            },
            "schema": "public",
            "start_date": PARTITIONS[0],
            "tables": [{"name": t, "incremental_column": "ts"} for t in TABLES],
        }
        (defs / "bench" / "defs.yaml").write_text(
            yaml.safe_dump({"type": "adu_assets.DatabaseExport", "attributes": attributes}, sort_keys=False)
        )
    data = work / round_name / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADU_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DAGSTER_PG_PASSWORD=pg.password,
        BENCH_PG_PASSWORD=pg.password,
        PGPASSWORD=pg.password,
        ADU_DEFS_DIR=str(defs),
        ADU_STATE_DIR=str(work / "state"),
        ADU_DATA_DIR=str(data),
        ADU_WAREHOUSE_CATALOG=f"postgresql://{pg.user}@{pg.host}:{pg.port}/cat_{round_name}",
        ADU_CELERY_BROKER=redis.url(),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return env


def start_workers(env: dict[str, str], n: int, work: Path) -> list[subprocess.Popen[bytes]]:
    procs, logs = [], []
    for i in range(n):
        log = work / f"worker_{n}_{i}.log"
        with open(log, "wb") as fh:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CLI, "worker", "--concurrency", "1", "--name", f"bench{n}-{i}"],
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    deadline = time.monotonic() + 180
    while not all("ready." in log.read_text(errors="replace") for log in logs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop(procs)
            raise RuntimeError(
                "workers did not start:\n" + "\n".join(log.read_text()[-1500:] for log in logs)
            )
        time.sleep(0.5)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait(timeout=10)


def run_both_partitions(env: dict[str, str]) -> float:
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "adu_assets.definitions",
                "--select",
                "*",
                "--partition",
                p,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for p in PARTITIONS
    ]
    for r in runs:
        out, _ = r.communicate(timeout=TIMEOUT_S)
        if r.returncode != 0:
            raise RuntimeError(out.decode(errors="replace")[-4000:])
    return time.perf_counter() - start


def landed_rows(env: dict[str, str]) -> int:
    from adu_assets.warehouse import LandingStore, connect

    # The catalog's password travels in PGPASSWORD, as for the runs.
    os.environ["PGPASSWORD"] = env["PGPASSWORD"]
    store = LandingStore(data_dir=env["ADU_DATA_DIR"], catalog=env["ADU_WAREHOUSE_CATALOG"])
    with connect(store) as con:
        return sum(
            int(con.execute(f'SELECT count(*) FROM "bench_public"."{t}"').fetchone()[0]) for t in TABLES
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args(argv)
    rows_per_day = 2_000 if args.small else 200_000
    with (
        tempfile.TemporaryDirectory(prefix="adu-bench-celery-") as tmp,
        running_postgres() as pg,
        running_redis() as redis,
    ):
        work = Path(tmp)
        make_source(pg, rows_per_day)
        expected = len(TABLES) * 2 * rows_per_day
        print(
            f"12 steps: {len(TABLES)} tables x {len(PARTITIONS)} partitions, {rows_per_day} rows each; "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        times: dict[str, float] = {}
        if not args.small:
            env = environment(pg, redis, work, "inprocess")
            times["in-process"] = run_both_partitions(env)
            assert landed_rows(env) == expected
        for n in (1, 2):
            env = environment(pg, redis, work, f"w{n}")
            env["ADU_EXECUTOR"] = "celery"
            redis.client().flushdb()
            workers = start_workers(env, n, work)
            try:
                times[f"{n} worker(s)"] = run_both_partitions(env)
            finally:
                stop(workers)
            rows = landed_rows(env)
            if rows != expected:
                raise RuntimeError(f"{n} worker(s) landed {rows} rows, expected {expected}")
        for name, seconds in times.items():
            print(f"{name:12s}: {seconds:7.2f} s for both runs")
        ratio = times["1 worker(s)"] / times["2 worker(s)"]
        print(
            f"ratio 1 worker / 2 workers: {ratio:.3f}x (>1 means the second worker helped; "
            f"on {os.cpu_count()} shared cores expect about 1, see the module docstring)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
