"""Upsert into PostgreSQL: our `upsert()` against COPY, row-by-row and a hand-written reference, in one run.

Scenario (PERFORMANCE.md goals 2 and 6): an orders table; half of the incoming keys already exist, 10% of those are
flagged processed='Y' and must be skipped, and the other existing ones all carry a changed value.

    python -m bench.bench_upsert            # 1.5M rows
    python -m bench.bench_upsert --small    # 50k rows, for CI
    python -m bench.bench_upsert --rows 300000 --repeat 5

Each round times COPY (the floor), our upsert() and the hand-written reference on the same rows and the same freshly
prepared target; each ratio is taken within one round, and the median over rounds is the headline (the machine is
shared, so absolute times vary). Row-by-row is timed once on a 10k-row sample. Not a test.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from adu_assets.io_managers.upsert import DestinationConfig, upsert
from adu_assets_tests.pg_server import PgServer, running_postgres

DDL = """
CREATE TABLE {name} (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status      varchar(12) NOT NULL,
    amount      numeric(12, 2),
    ordered_at  timestamp,
    note        text,
    processed   char(1) NOT NULL DEFAULT 'N'
)
"""
COLUMNS = ["order_id", "customer_id", "status", "amount", "ordered_at", "note"]


def make_rows(n: int, offset: int = 0, variant: int = 0) -> pa.Table:
    rng = np.random.default_rng(42 + variant)
    ids = np.arange(offset, offset + n, dtype=np.int64)
    statuses = np.array(["NEW", "PAID", "SHIPPED", "CANCELLED"])
    return pa.table(
        {
            "order_id": ids,
            "customer_id": rng.integers(1, 100_000, n),
            "status": pa.array(statuses[(ids + variant) % 4]),
            "amount": pa.array(rng.integers(100, 10_000_000, n) / 100.0).cast(pa.decimal128(12, 2)),
            "ordered_at": pa.array(
                (np.datetime64("2026-01-01") + (ids % 86_400_000).astype("timedelta64[s]")).astype(
                    "datetime64[us]"
                )
            ),
            "note": pa.array([f"note {variant}"] * n),
        }
    )


def copy_table(conn: Any, table: str, data: pa.Table) -> None:
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False))
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(data.column_names)}) FROM STDIN (FORMAT csv)") as cp,
    ):
        view = buf.getbuffer()
        for i in range(0, len(view), 1 << 20):
            cp.write(view[i : i + (1 << 20)])


def prepare_target(pg: PgServer, db: str, name: str, existing: pa.Table) -> None:
    """The target: the existing half of the keys, 10% of them processed='Y'."""
    with pg.connect(db) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")
        c.execute(DDL.format(name=name))
        copy_table(c, name, existing)
        c.execute(f"UPDATE {name} SET processed = 'Y' WHERE order_id % 10 = 0")
        c.execute(f"VACUUM ANALYZE {name}")


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_copy(pg: PgServer, db: str, data: pa.Table) -> float:
    with pg.connect(db) as c:
        c.execute("DROP TABLE IF EXISTS floor_copy")
        c.execute(DDL.format(name="floor_copy"))
    with pg.connect(db, autocommit=False) as c:

        def run() -> None:
            copy_table(c, "floor_copy", data)
            c.commit()

        return timed(run)


def bench_row_by_row(pg: PgServer, db: str, data: pa.Table) -> float:
    """The earlier IntakeGateway design: SELECT the key, then INSERT or UPDATE, one row at a time."""
    rows = data.to_pylist()

    def run() -> None:
        with pg.connect(db, autocommit=False) as c, c.cursor() as cur:
            for r in rows:
                cur.execute("SELECT processed FROM orders WHERE order_id = %s", (r["order_id"],))
                found = cur.fetchone()
                if found is None:
                    cur.execute(
                        "INSERT INTO orders (order_id, customer_id, status, amount, ordered_at, note) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        [r[k] for k in COLUMNS],
                    )
                elif found[0] != "Y":
                    cur.execute(
                        "UPDATE orders SET customer_id = %s, status = %s, amount = %s, ordered_at = %s, "
                        "note = %s WHERE order_id = %s",
                        [r[k] for k in COLUMNS[1:]] + [r["order_id"]],
                    )
            c.commit()

    return timed(run)


def bench_reference(pg: PgServer, db: str, data: pa.Table) -> float:
    """Hand-written: one COPY into a temp table, one guarded INSERT ... ON CONFLICT, no counts, no checks."""

    def run() -> None:
        with pg.connect(db, autocommit=False) as c:
            c.execute("CREATE TEMP TABLE stage (LIKE orders INCLUDING DEFAULTS) ON COMMIT DROP")
            copy_table(c, "stage", data)
            vals = COLUMNS[1:]
            c.execute(
                f"INSERT INTO orders AS t ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM stage "
                f"ON CONFLICT (order_id) DO UPDATE SET {', '.join(f'{v} = EXCLUDED.{v}' for v in vals)} "
                f"WHERE t.processed <> 'Y' AND ({', '.join(f't.{v}' for v in vals)}) IS DISTINCT FROM "
                f"({', '.join(f'EXCLUDED.{v}' for v in vals)})"
            )
            c.commit()

    return timed(run)


def n_tup_upd(pg: PgServer, db: str, table: str) -> int:
    with pg.connect(db) as c:
        c.execute("SELECT pg_stat_force_next_flush()")
    with pg.connect(db) as c:
        row = c.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
        return int(row[0]) if row else 0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--small", action="store_true", help="50k rows (CI)")
    parser.add_argument("--row-by-row-sample", type=int, default=10_000)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of COPY, ours and reference; ratios are per round"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="destination.batch_size (default: ours)")
    args = parser.parse_args(argv)
    n = 50_000 if args.small else args.rows
    half = n // 2
    logging.basicConfig(level=logging.WARNING)

    # Incoming: keys [half, half + n): the first half of them exist already (with other values), the rest are new.
    existing = make_rows(n, offset=0, variant=0).slice(half)
    incoming = make_rows(n, offset=half, variant=1)
    # Row-by-row is timed on a subset with the same mix (half existing keys, half new) and extrapolated as rows/s.
    sub = pa.concat_tables(
        [incoming.slice(0, args.row_by_row_sample // 2), incoming.slice(n - args.row_by_row_sample // 2)]
    )
    expected_skipped = sum(1 for k in range(half, n) if k % 10 == 0)

    os.environ.setdefault("ADU_DATA_DIR", "/tmp/adu_bench_upsert")
    rounds: list[dict[str, float]] = []
    with running_postgres(settings={"shared_buffers": "1GB"}) as pg:
        db = "bench"
        pg.create_database(db)
        os.environ["ADU_BENCH_PG_PASSWORD"] = pg.password
        dest = DestinationConfig.model_validate(
            {
                "connection": {
                    "kind": "postgres",
                    "host": pg.host,
                    "port": pg.port,
                    "database": db,
                    "user": pg.user,
                    "password_env": "ADU_BENCH_PG_PASSWORD",
                },
                "table": "orders",
                "mode": "upsert",
                "keys": ["order_id"],
                "skip_when": {"column": "processed", "equals": "Y"},
                "batch_size": args.batch_size,
            }
        )
        # Every round times the three on the same rows, into the same freshly prepared table (VACUUM ANALYZEd,
        # untimed), with the same skip condition; the ratios come from one round, so load on a shared machine
        # affects both sides of each ratio alike.
        for _ in range(max(1, args.repeat)):
            t_copy = bench_copy(pg, db, incoming)

            prepare_target(pg, db, "orders", existing)
            upd_before = n_tup_upd(pg, db, "orders")
            result = upsert(dest, incoming, run_id="bench")
            assert result.skipped == expected_skipped, (result.skipped, expected_skipped)
            assert result.inserted == n - half and result.errors == 0, result
            # Only changed rows were rewritten: skipped and identical rows left alone.
            assert n_tup_upd(pg, db, "orders") - upd_before == result.updated, "rows rewritten needlessly"
            r: dict[str, float] = {"copy": t_copy, "ours": result.seconds}

            if not args.no_reference:
                prepare_target(pg, db, "orders", existing)
                r["ref"] = bench_reference(pg, db, incoming)
            rounds.append(r)

        prepare_target(pg, db, "orders", existing)
        t_rbr = bench_row_by_row(pg, db, sub)
    rbr_rps = sub.num_rows / t_rbr

    print(
        f"upsert benchmark: {n:,} rows ({half:,} existing keys, {result.skipped:,} skipped, "
        f"{result.updated:,} updated, {result.inserted:,} inserted), {len(rounds)} round(s)"
    )
    for i, r in enumerate(rounds, 1):
        ref = f"   reference {r['ref']:6.2f} s  {n / r['ref']:>9,.0f} rows/s" if "ref" in r else ""
        print(
            f"  round {i}: COPY {r['copy']:6.2f} s  {n / r['copy']:>9,.0f} rows/s   "
            f"upsert() {r['ours']:6.2f} s  {n / r['ours']:>9,.0f} rows/s{ref}"
        )
        line = f"           upsert/COPY rows/s {r['copy'] / r['ours']:.3f}"
        if "ref" in r:
            line += f"   upsert/reference time {r['ours'] / r['ref']:.3f}"
        print(line + f"   upsert/row-by-row {n / r['ours'] / rbr_rps:.1f}x")
    print(f"  row by row ({sub.num_rows:,} rows): {t_rbr:6.2f} s  {rbr_rps:>9,.0f} rows/s")
    r1 = median([r["copy"] / r["ours"] for r in rounds])
    r2 = median([n / r["ours"] / rbr_rps for r in rounds])
    print("  median over rounds:")
    print(
        f"  ratio upsert/COPY rows/s       : {r1:.3f}  (goal >= 0.35)  {'OK' if r1 >= 0.35 else 'BELOW GOAL'}"
    )
    print(
        f"  ratio upsert/row-by-row rows/s : {r2:.1f}x (goal >= 10x)   {'OK' if r2 >= 10 else 'BELOW GOAL'}"
    )
    if not args.no_reference:
        r3 = median([r["ours"] / r["ref"] for r in rounds])
        print(
            f"  time upsert/reference          : {r3:.3f}  (goal <= 1.25)  {'OK' if r3 <= 1.25 else 'BELOW GOAL'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
