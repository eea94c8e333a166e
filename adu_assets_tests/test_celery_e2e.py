"""Scale-out end to end: a real redis-server broker, two `adu worker` processes, a real PostgreSQL source,
Dagster's history in PostgreSQL, and the DuckLake warehouse with its catalog in PostgreSQL.

Two source databases (alpha: `max_parallel: 1`, beta: `max_parallel: 2`) with 3 tables each are exported for
2 daily partitions: two runs (one per partition, started at once as two `dagster asset materialize`), so
12 steps go through the broker to the workers. Each source table reads slowly (a row-level security policy
sleeps per row, for the read-only role the export uses), so queries overlap and a thread can count them
in pg_stat_activity while the runs go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from adu_assets_tests.defs_helpers import materialize_cmd
from adu_assets_tests.pg_server import PgServer
from adu_assets_tests.redis_server import RedisServer

PARTITIONS = ["2026-03-01", "2026-03-02"]
SOURCES = {"alpha": 1, "beta": 2}  # name -> max_parallel
TABLES = ["orders", "Shipments", "line_items"]
READER = "adu_reader"
READER_PASSWORD = "reader-" + "x9Q2"
CLI = "import sys; from adu_assets.cli import main; sys.exit(main(sys.argv[1:]))"
RUN_TIMEOUT_S = 420


def make_source(pg: PgServer, name: str, sleep_per_row: float) -> None:
    db = f"celery_src_{name}"
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,)).fetchone():
            conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
    with pg.connect(db) as conn:
        conn.execute(
            "CREATE FUNCTION slow_read(integer) RETURNS boolean LANGUAGE sql VOLATILE AS "
            f"$$ SELECT pg_sleep({sleep_per_row}) IS NOT NULL $$"
        )
        for i, table in enumerate(TABLES):
            q = f'"{table}"'
            conn.execute(
                f"CREATE TABLE {q} (id integer PRIMARY KEY, ts timestamptz NOT NULL, amount numeric(10,2), note text)"
            )
            # Per table and day a different number of rows, so a step landing another's rows shows.
            conn.execute(
                f"INSERT INTO {q} SELECT g, TIMESTAMPTZ '2026-03-01 00:00:00+00' + (g % 2) * INTERVAL '1 day' "
                f"+ g * INTERVAL '1 minute', g * 1.25 + {i}, '{name}:{table}:' || g FROM generate_series(1, {8 + 2 * i}) g"
            )
            # Row-level security applies to the read-only role only (owners and superusers bypass it).
            conn.execute(f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY")
            conn.execute(f"CREATE POLICY slow ON {q} FOR SELECT USING (slow_read(id))")
            conn.execute(f"GRANT SELECT ON {q} TO {READER}")
        conn.execute(f"GRANT EXECUTE ON FUNCTION slow_read(integer) TO {READER}")


def client_pids(ports: set[int]) -> dict[int, int]:
    """Which local process owns each loopback TCP port (from /proc), to tell one step's two connections
    from two steps."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports:
                inodes[f"socket:[{fields[9]}]"] = port
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target in inodes:
                    found[inodes[target]] = int(proc.name)
        except OSError:
            continue
    return found


class QueryCounter:
    """Polls pg_stat_activity and keeps, per source database, the most export queries seen at once."""

    def __init__(self, pg: PgServer) -> None:
        self.pg = pg
        self.peak: Counter[str] = Counter()
        self.at_peak: dict[str, list[tuple[object, ...]]] = {}
        self.limits = {f"celery_src_{name}": limit for name, limit in SOURCES.items()}
        self.over_limit: list[tuple[object, ...]] = []
        self.peak_processes: Counter[str] = Counter()
        self.peak_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with self.pg.connect() as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT datname, pid, client_port, left(query, 120) FROM pg_stat_activity "
                    "WHERE usename = %s AND state = 'active'",
                    (READER,),
                ).fetchall()
                now = Counter(r[0] for r in rows)
                for d, n in now.items():
                    if n > self.peak[d]:
                        self.peak[d] = n
                        self.at_peak[d] = [r[1:] for r in rows if r[0] == d]
                    if n > self.limits.get(d, n):
                        # More connections than the pool allows: are they one step's, or several steps'?
                        owners = client_pids({int(r[2]) for r in rows if r[0] == d})
                        self.over_limit.append(
                            (d, n, sorted(set(owners.values())), [r[1:] for r in rows if r[0] == d])
                        )
                    pids = (
                        len(set(client_pids({int(r[2]) for r in rows if r[0] == d}).values())) if n > 1 else n
                    )
                    self.peak_processes[d] = max(self.peak_processes[d], pids)
                self.peak_total = max(self.peak_total, sum(now.values()))
                self.samples += 1
                time.sleep(0.02)

    def __enter__(self) -> QueryCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def write_catalog(defs_dir: Path, pg: PgServer) -> None:
    for name, max_parallel in SOURCES.items():
        folder = defs_dir / name
        folder.mkdir(parents=True)
        attributes = {
            "name": name,
            "connection": {
                "kind": "postgres",
                "host": pg.host,
                "port": pg.port,
                "database": f"celery_src_{name}",
                "user": READER,
                "password_env": "ADU_TEST_READER_PASSWORD",
                "max_parallel": max_parallel,
            },
            "schema": "public",
            "start_date": PARTITIONS[0],
            "tables": [{"name": t, "incremental_column": "ts"} for t in TABLES],
        }
        (folder / "defs.yaml").write_text(
            yaml.safe_dump({"type": "adu_assets.DatabaseExport", "attributes": attributes}, sort_keys=False)
        )


def instance_yaml() -> str:
    # Run history in PostgreSQL, as deploy/dagster.yaml: workers on other hosts write the same event log.
    return yaml.safe_dump(
        {
            "telemetry": {"enabled": False},
            "storage": {
                "postgres": {
                    "postgres_db": {
                        "hostname": {"env": "DAGSTER_PG_HOST"},
                        "port": {"env": "DAGSTER_PG_PORT"},
                        "username": {"env": "DAGSTER_PG_USER"},
                        "password": {"env": "DAGSTER_PG_PASSWORD"},
                        "db_name": {"env": "DAGSTER_PG_DB"},
                        "scheme": "postgresql+psycopg2",
                    }
                }
            },
        }
    )


@pytest.fixture
def scale_out_env(pg: PgServer, redis_broker: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    for name in SOURCES:
        make_source(pg, name, sleep_per_row=0.08)
    with pg.connect() as conn:
        for db in ("celery_history", "celery_catalog"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())
    defs_dir = tmp_path / "defs"
    write_catalog(defs_dir, pg)
    data = tmp_path / "shared_data"
    data.mkdir()
    # Flush the broker so no task of an earlier test is waiting in it.
    redis_broker.client().flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DAGSTER_PG_HOST=pg.host,
        DAGSTER_PG_PORT=str(pg.port),
        DAGSTER_PG_USER=pg.user,
        DAGSTER_PG_PASSWORD=pg.password,
        DAGSTER_PG_DB="celery_history",
        ADU_DEFS_DIR=str(defs_dir),
        ADU_STATE_DIR=str(tmp_path / "state"),
        ADU_DATA_DIR=str(data),
        ADU_WAREHOUSE_CATALOG=f"postgresql://{pg.user}@{pg.host}:{pg.port}/celery_catalog",
        PGPASSWORD=pg.password,
        ADU_TEST_READER_PASSWORD=READER_PASSWORD,
        ADU_EXECUTOR="celery",
        ADU_CELERY_BROKER=redis_broker.url(),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    yield env


def start_worker(env: dict[str, str], name: str, log: Path, concurrency: int = 2) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "worker", "--concurrency", str(concurrency), "--name", name],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


def wait_for_workers(env: dict[str, str], logs: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while not all("ready." in p.read_text(errors="replace") for p in logs):
        for proc, p in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{p.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(
                "workers not ready after 120 s:\n" + "\n".join(p.read_text()[-2000:] for p in logs)
            )
        time.sleep(0.5)


def test_twelve_steps_on_two_workers_keep_pool_limits(
    scale_out_env: dict[str, str],
    pg: PgServer,
    redis_broker: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = scale_out_env
    for k, v in env.items():
        if k.startswith(("ADU_", "DAGSTER_")) or k == "PGPASSWORD":
            monkeypatch.setenv(k, v)

    from adu_assets.automation.sensors import apply_pool_limits, merge_pool_limits
    from adu_assets.defs_loader import load_location

    pools = load_location().pools
    limits = merge_pool_limits(pools)
    assert sorted(limits.values()) == [1, 2]
    with dg.DagsterInstance.get() as instance:
        # What adu_pool_limits_sensor does every minute in the daemon.
        apply_pool_limits(instance, limits)

    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    workers = [start_worker(env, f"adu-w{i + 1}", logs[i]) for i in range(2)]
    try:
        wait_for_workers(env, logs, workers)
        for w in workers:
            # `adu worker` became the Celery worker (same pid, so signals reach it), and `ps` shows no broker URL.
            argv = Path(f"/proc/{w.pid}/cmdline").read_bytes().split(b"\0")
            assert b"celery" in argv and b"worker" in argv, argv
            assert not any(redis_broker.password.encode() in a or b"redis://" in a for a in argv), argv
        with QueryCounter(pg) as counter:
            runs = [
                subprocess.Popen(
                    materialize_cmd("*", p),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                for p in PARTITIONS
            ]
            outputs = []
            for proc in runs:
                try:
                    out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    for r in runs:
                        r.kill()
                    raise AssertionError(
                        "runs did not finish in time:\n" + logs[0].read_text()[-3000:]
                    ) from None
                outputs.append(out.decode(errors="replace"))
        worker_logs = "\n".join(p.read_text(errors="replace")[-4000:] for p in logs)
        for proc, out in zip(runs, outputs, strict=True):
            assert proc.returncode == 0, out[-6000:] + "\n--- workers ---\n" + worker_logs
    finally:
        for w in workers:
            stop(w)

    # Worker logs name each task and its duration, but carry no landed values (Celery would log each
    # step's serialized events, row previews included).
    full_logs = "\n".join(p.read_text(errors="replace") for p in logs)
    assert full_logs.count("Task execute_plan[") >= 24
    assert not any(f"{s}:{t}:" in full_logs for s in SOURCES for t in TABLES)
    assert redis_broker.password not in full_logs

    # Every asset materialized, for both partitions.
    keys = [dg.AssetKey([s, "public", t]) for s in SOURCES for t in TABLES]
    with dg.DagsterInstance.get() as instance:
        for key in keys:
            assert instance.get_materialized_partitions(key) == set(PARTITIONS), key
        records = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/partition": PARTITIONS[0]})
        ) + instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": PARTITIONS[1]}))
        assert len(records) == 2
        celery_nodes: set[str] = set()
        adu_workers: set[str] = set()
        for record in records:
            run = record.dagster_run
            assert run.tags["adu/data_dir"] == env["ADU_DATA_DIR"]
            assert run.tags["adu/warehouse_catalog"] == f"postgresql://{pg.host}:{pg.port}/celery_catalog"
            guarded: set[str] = set()
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                event = entry.dagster_event
                assert event is not None
                meta = event.engine_event_data.metadata if event.engine_event_data else {}
                if "Celery worker" in meta:
                    celery_nodes.add(str(meta["Celery worker"].value))
                if "adu/worker" in meta and "took step" in (event.message or ""):
                    adu_workers.add(str(meta["adu/worker"].value))
                    guarded.add(str(event.step_key))
            succeeded = {
                str(e.dagster_event.step_key)
                for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
                if e.dagster_event
            }
            # 6 exports (and their schema checks, each its own step), every one seen by the storage guard.
            assert len([k for k in succeeded if not k.endswith("_schema")]) == 6, succeeded
            assert guarded == succeeded
        # Every pool slot claimed for a step was given back when its result came home.
        for pool in limits:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.slot_count == limits[pool] and info.claimed_slots == [], info
    # Steps ran in two distinct worker processes.
    assert {n.split("@")[0] for n in celery_nodes} == {"adu-w1", "adu-w2"}, celery_nodes
    assert len({w.split(" pid ")[1] for w in adu_workers}) >= 2, adu_workers

    # No source saw more parallel queries than its max_parallel; and there was parallelism to limit.
    print(
        f"peak export queries per source {dict(counter.peak)}, all sources {counter.peak_total}, {counter.samples} samples; at peak {counter.at_peak}; peak client processes {dict(counter.peak_processes)}; over limit {counter.over_limit}"
    )
    assert counter.samples > 20
    # A pool slot is one step, and a worker with --concurrency 1 runs one step in one process: count the
    # client processes that held active queries at once. One step can hold more than one connection for a
    # moment (DuckDB's postgres scanner reads and probes the catalog over several), which the pool does
    # not bound and PostgreSQL's own connection limit does. Without pool limits alpha reaches 2 here.
    assert counter.peak_processes["celery_src_alpha"] == 1, (counter.at_peak, counter.over_limit)
    assert 1 <= counter.peak_processes["celery_src_beta"] <= 2, (counter.at_peak, counter.over_limit)
    assert counter.peak_total >= 2, (counter.peak, counter.peak_total)

    # The warehouse is the DuckLake whose catalog is in PostgreSQL (no embedded catalog was made) ...
    assert not list(Path(env["ADU_DATA_DIR"]).glob("*.sqlite"))
    with pg.connect("celery_catalog") as catalog:
        live = catalog.execute("SELECT table_name FROM ducklake_table WHERE end_snapshot IS NULL").fetchall()
    assert sorted(t for (t,) in live) == sorted(TABLES * len(SOURCES))

    # ... and it holds exactly the source's rows.
    from adu_assets.warehouse import LandingStore, connect

    with connect(LandingStore(data_dir=env["ADU_DATA_DIR"])) as con:
        for source in SOURCES:
            with pg.connect(f"celery_src_{source}") as src:
                for table in TABLES:
                    expected = src.execute(
                        f'SELECT id, amount::text, note FROM "{table}" ORDER BY id'
                    ).fetchall()
                    landed = con.execute(
                        f'SELECT id, CAST(amount AS VARCHAR), note FROM "{source}_public"."{table}" ORDER BY id'
                    ).fetchall()
                    assert landed == expected, (source, table)


def test_worker_on_another_data_folder_refuses_the_step(
    scale_out_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = scale_out_env
    for k, v in env.items():
        if k.startswith(("ADU_", "DAGSTER_")) or k == "PGPASSWORD":
            monkeypatch.setenv(k, v)
    # Same catalog, but a local folder where the shared volume should be: it exists and is writable, so the
    # worker starts; the run's folder has another id, so the step is refused before it writes anything.
    from adu_assets.automation.sensors import apply_pool_limits, merge_pool_limits
    from adu_assets.defs_loader import load_location

    limits = merge_pool_limits(load_location().pools)
    with dg.DagsterInstance.get() as instance:
        apply_pool_limits(instance, limits)
    local = tmp_path / "local_disk"
    local.mkdir()
    log = tmp_path / "worker.log"
    worker = start_worker({**env, "ADU_DATA_DIR": str(local)}, "adu-stray", log, concurrency=1)
    try:
        wait_for_workers(env, [log], [worker])
        proc = subprocess.run(
            materialize_cmd("alpha/public/orders", PARTITIONS[0]),
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    finally:
        stop(worker)
    assert proc.returncode != 0
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        messages = [
            e.dagster_event.message or ""
            for e in instance.all_logs(record.dagster_run.run_id)
            if e.dagster_event
        ]
        # The refused step's pool slot is free again: a stray worker cannot starve a source.
        for pool in limits:
            assert instance.event_log_storage.get_concurrency_info(pool).claimed_slots == []
    refused = [m for m in messages if "refused step alpha__public__orders" in m]
    assert len(refused) == 1, messages
    assert f"data folder {local}" in refused[0] and f"run's data folder {env['ADU_DATA_DIR']}" in refused[0]
    assert "mount the same shared volume" in refused[0]
    assert not any("STEP_START" in m or "Started execution of step" in m for m in messages)
    assert not list(local.rglob("*.parquet")) and not list(Path(env["ADU_DATA_DIR"]).rglob("*.parquet"))


def test_run_on_the_embedded_catalog_fails_at_its_start(scale_out_env: dict[str, str]) -> None:
    # The code server left on the default (SQLite) catalog: no step may go to a worker, which would
    # write a warehouse this host's catalog never sees. No worker runs: nothing is sent to the broker.
    env = {k: v for k, v in scale_out_env.items() if k != "ADU_WAREHOUSE_CATALOG"}
    proc = subprocess.run(
        materialize_cmd("alpha/public/orders", PARTITIONS[0]),
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "the warehouse is the embedded SQLite catalog" in output, output[-3000:]
    assert "ADU_WAREHOUSE_CATALOG=postgresql://" in output
    assert "Submitting celery task" not in output
    assert not list(Path(env["ADU_DATA_DIR"]).rglob("*.parquet"))
