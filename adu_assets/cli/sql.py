"""`adu sql "SELECT ..."`: query the warehouse from a shell, on one snapshot, without blocking writers.

Tables are `"<name>_<schema>"."<table>"` (the warehouse is attached as `warehouse` and selected), so
`adu sql 'SELECT count(*) FROM shop_main.orders'` works as it reads. Output is an aligned text table, or
CSV / JSON lines for scripts. Read-only: a write is refused by DuckDB.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query on the warehouse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", help='SQL, e.g. "SELECT count(*) FROM shop_main.orders"; "-" reads it from stdin')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--max-rows", type=int, default=1000, help="rows to print in table format (default 1000)")
    p.add_argument("--data-dir", help="data folder (default ADU_DATA_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adu_assets.secrets import redact
    from adu_assets.warehouse import LandingStore, WarehouseConfigError

    query = sys.stdin.read() if args.query == "-" else args.query
    store = LandingStore(data_dir=args.data_dir) if args.data_dir else LandingStore()
    try:
        con = store.connect(for_user=True)
    except WarehouseConfigError as e:
        print(f"adu sql: {e}", file=sys.stderr)
        return 2
    try:
        rel = con.execute(query)
        if rel.description is None:
            return 0
        names = [d[0] for d in rel.description]
        if args.format == "csv":
            import csv

            writer = csv.writer(sys.stdout)
            writer.writerow(names)
            while batch := rel.fetchmany(10_000):
                writer.writerows(batch)
        elif args.format == "json":
            import json

            while batch := rel.fetchmany(10_000):
                for row in batch:
                    print(json.dumps(dict(zip(names, row, strict=True)), default=str))
        else:
            rows = rel.fetchmany(args.max_rows + 1)
            _print_table(names, rows[: args.max_rows])
            if len(rows) > args.max_rows:
                print(f"(more than {args.max_rows} rows; use --max-rows or --format csv)")
    except Exception as e:
        print(f"adu sql: {redact(str(e))}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def _print_table(names: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
