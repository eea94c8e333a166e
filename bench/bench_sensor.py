"""Sensor and definitions-load benchmark: 200 tables, each with an indexed incremental column.

  sensor tick   one `<name>_watermark_sensor` evaluation (build_sensor_context) against a real PostgreSQL
                with 200 tables: the first tick (records 200 watermarks) and a tick after new rows
                landed in 50 tables. Baseline in the same run: 200 separate `SELECT max(...)` round trips
                through the same DuckDB-attached source, which is what a per-table sensor would do.
  defs load     `python -c "from adu_assets.definitions import defs; defs()"` with ADU_DEFS_DIR holding one
                DatabaseExport YAML of 200 tables with `schedule:` set, in a fresh process (median of 3);
                plus `automation_defs` for 200 assets measured in process.
Goals (issue 5 / PERFORMANCE.md): a tick <= 5 s; definitions with 200 tables load in <= 1.5 s (issue 14;
bench_defs.py measures that load in detail, with checks, at 200 and 1,000 tables).

    python -m bench.bench_sensor            # 200 tables x 20,000 rows
    python -m bench.bench_sensor --small    # 200 tables x 200 rows, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from adu_assets_tests.pg_server import PgServer, running_postgres

TABLES = 200
CHANGED = 50
GOAL_TICK_S = 5.0
GOAL_LOAD_S = 1.5


def table_name(i: int) -> str:
    return f"t{i:03d}"


def load_source(pg: PgServer, rows: int) -> None:
    pg.create_database("wm")
    with pg.connect("wm") as conn:
        for i in range(TABLES):
            t = table_name(i)
            conn.execute(f"CREATE TABLE {t} (id bigint, payload text, updated_at timestamptz)")
            # Rows spread over the 30 days before 2024-05-01, generated inside the server.
            conn.execute(
                f"INSERT INTO {t} SELECT g, md5(g::text), "
                f"timestamptz '2024-04-01 00:00+00' + (g * interval '30 days' / {rows}) "
                f"FROM generate_series(1, {rows}) g"
            )
            conn.execute(f"CREATE INDEX ON {t} (updated_at)")
        conn.execute("ANALYZE")


def add_rows(pg: PgServer) -> None:
    with pg.connect("wm") as conn:
        for i in range(CHANGED):
            conn.execute(
                f"INSERT INTO {table_name(i)} VALUES (-1, 'new', timestamptz '2024-05-02 10:00+00' + {i} * interval '1 minute')"
            )


def connection_yaml(pg: PgServer) -> dict[str, object]:
    return {
        "kind": "postgres",
        "host": pg.host,
        "port": pg.port,
        "database": "wm",
        "user": pg.user,
        "password_env": "ADU_BENCH_PG_PASSWORD",
    }


def bench_sensor(pg: PgServer) -> dict[str, float]:
    import dagster as dg

    from adu_assets.automation import WatermarkSpec, automation_defs
    from adu_assets.sources.catalog import quote_ident
    from adu_assets.sources.connection import ConnectionConfig
    from adu_assets.sources.databases import open_source

    cfg = ConnectionConfig.model_validate(connection_yaml(pg))
    partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    names = [table_name(i) for i in range(TABLES)]
    assets_defs = [_stub(["wm", "public", n], partitions) for n in names]
    spec = WatermarkSpec(
        connection=cfg,
        schema="public",
        tables=dict.fromkeys(names, "updated_at"),
        asset_keys={n: dg.AssetKey(["wm", "public", n]) for n in names},
        max_requests_per_tick=50,
    )
    t0 = time.perf_counter()
    auto = automation_defs(
        component_name="wm",
        assets=assets_defs,
        cron="0 2 * * *",
        timezone="UTC",
        partitions_def=partitions,
        watermark=spec,
    )
    d = dg.Definitions.merge(dg.Definitions(assets=assets_defs), auto)
    repo = d.get_repository_def()
    build_s = time.perf_counter() - t0
    sensor = repo.get_sensor_def("wm_watermark_sensor")

    def tick(cursor: str | None) -> tuple[float, str | None, int]:
        started = time.perf_counter()
        with dg.build_sensor_context(
            instance=dg.DagsterInstance.get(), cursor=cursor, repository_def=repo
        ) as ctx:
            data = sensor.evaluate_tick(ctx)
        return time.perf_counter() - started, data.cursor, len(data.run_requests or [])

    # A fresh DAGSTER_HOME creates and migrates its SQLite storage on first use: a one-off, not a tick cost.
    dg.DagsterInstance.get().get_run_records(limit=1)
    first_s, cursor, first_runs = tick(None)
    quiet_s, cursor, quiet_runs = tick(cursor)
    add_rows(pg)
    changed_s, cursor, changed_runs = tick(cursor)
    assert first_runs >= 1 and quiet_runs == 0 and changed_runs >= 1, (first_runs, quiet_runs, changed_runs)
    assert cursor is not None and len(json.loads(cursor)) == TABLES

    started = time.perf_counter()
    with open_source(cfg, label="bench") as con:
        for n in names:
            con.execute(
                "SELECT * FROM postgres_query('src', ?)",
                [f"SELECT max({quote_ident('updated_at')}) FROM public.{quote_ident(n)}"],
            ).fetchall()
    per_table_s = time.perf_counter() - started
    return {
        "build_s": build_s,
        "first_s": first_s,
        "quiet_s": quiet_s,
        "changed_s": changed_s,
        "changed_runs": float(changed_runs),
        "per_table_s": per_table_s,
    }


def _stub(key: list[str], partitions: object) -> object:
    import dagster as dg

    assert isinstance(partitions, dg.PartitionsDefinition)

    @dg.asset(key=key, partitions_def=partitions)
    def _a() -> None: ...

    return _a


def bench_defs_load(pg: PgServer, work: Path) -> list[float]:
    defs_dir = work / "defs"
    (defs_dir / "wm").mkdir(parents=True)
    (defs_dir / "wm" / "defs.yaml").write_text(
        yaml.safe_dump(
            {
                "type": "adu_assets.DatabaseExport",
                "attributes": {
                    "name": "wm",
                    "connection": connection_yaml(pg),
                    "schema": "public",
                    "start_date": "2024-01-01",
                    "schedule": "0 2 * * *",
                    "tables": [
                        {"name": table_name(i), "incremental_column": "updated_at"} for i in range(TABLES)
                    ],
                },
            },
            sort_keys=False,
        )
    )
    env = {
        **os.environ,
        "ADU_DEFS_DIR": str(defs_dir),
        "ADU_STATE_DIR": str(work / "state"),
        "DAGSTER_HOME": str(work / "home"),
    }
    code = (
        "import time; t = time.perf_counter(); from adu_assets.definitions import defs; d = defs(); "
        "n = len(list(d.resolve_all_asset_keys())); "
        "print(time.perf_counter() - t, n, len(list(d.schedules or [])))"
    )
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - started
        inner, assets, schedules = out.stdout.split()
        assert int(assets) == TABLES, out.stdout + out.stderr
        timings.append(wall)
    print(f"  (in-process part of the last load: {float(inner):.2f} s; schedules built: {schedules})")
    return timings


def import_dagster_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dagster"], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="200 rows per table instead of 20,000 (CI)")
    args = parser.parse_args(argv)
    rows = 200 if args.small else 20_000
    with tempfile.TemporaryDirectory(prefix="adu-bench-sensor-") as tmp, running_postgres() as pg:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ["ADU_DATA_DIR"] = str(work / "data")
        os.environ["ADU_BENCH_PG_PASSWORD"] = pg.password
        t0 = time.perf_counter()
        load_source(pg, rows)
        print(
            f"source: {TABLES} PostgreSQL tables x {rows} rows, indexed updated_at ({time.perf_counter() - t0:.1f} s)"
        )

        s = bench_sensor(pg)
        print(f"automation_defs for {TABLES} assets (+ repository) : {s['build_s']:6.2f} s")
        print(
            f"watermark tick, first (records {TABLES} marks)    : {s['first_s']:6.2f} s   goal <= {GOAL_TICK_S} s"
        )
        print(f"watermark tick, nothing new                      : {s['quiet_s']:6.2f} s")
        print(
            f"watermark tick, {CHANGED} tables changed ({int(s['changed_runs'])} runs)   : {s['changed_s']:6.2f} s   "
            f"goal <= {GOAL_TICK_S} s"
        )
        print(
            f"baseline: {TABLES} separate max() queries          : {s['per_table_s']:6.2f} s   "
            f"tick/baseline {s['changed_s'] / s['per_table_s']:5.2f}x"
        )
        loads = bench_defs_load(pg, work)
        dagster_import = import_dagster_s()
        median = statistics.median(loads)
        print(
            f"definitions load, {TABLES} tables + schedule      : {median:6.2f} s   goal <= {GOAL_LOAD_S} s "
            f"(runs: {', '.join(f'{x:.2f}' for x in loads)}; `import dagster` alone {dagster_import:.2f} s, "
            f"ratio {median / dagster_import:4.2f}x)"
        )
        ok = max(s["first_s"], s["changed_s"]) <= GOAL_TICK_S and median <= GOAL_LOAD_S
        print(f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {'goals met' if ok else 'GOAL MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
