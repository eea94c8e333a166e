"""Check overhead against the export it guards.

Generates TPC-H lineitem (SF 0.1; `--small`: SF 0.01), then times, in one run:
  (a) the export proxy: DuckDB COPY of that Parquet to a new zstd Parquet file,
  (b) validate_rules with 6 column rules and a unique key on (l_orderkey, l_linenumber),
  (c) infer_schema + compare_schema,
and prints (b)/(a) and (c)/(a); the goal is <= 15% each. It also times importing the check wiring in a
fresh interpreter (it must not pull pandera.polars, evidently or ydata_profiling) and building the
checks of 200 tables. Ratios, not seconds, are what carries between machines.

    .venv/bin/python -m bench.bench_checks [--small] [--repeat N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GOAL_RATIO = 0.15

RULES = {
    "columns": {
        "l_quantity": {"not_null": True, "ge": 1, "le": 50, "dtype": "Decimal"},
        "l_discount": {"ge": 0, "le": 0.1},
        "l_returnflag": {"isin": ["A", "N", "R"], "dtype": "String"},
        "l_linestatus": {"isin": ["O", "F"]},
        "l_shipmode": {"isin": ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"]},
        "l_shipdate": {"dtype": "Date", "ge": "1992-01-01", "not_null": True},
    },
    "unique": ["l_orderkey", "l_linenumber"],
}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def generate_lineitem(scale: float, out_dir: Path) -> Path:
    tpchgen = Path(sys.executable).with_name("tpchgen-cli")
    subprocess.run(
        [str(tpchgen), "parquet", "-s", str(scale), "--tables", "lineitem", "--output-dir", str(out_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out_dir / "lineitem.parquet"


def import_seconds(statement: str, repeat: int) -> float:
    return best_of(repeat, lambda: subprocess.run([sys.executable, "-c", statement], check=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="SF 0.01 and one repetition, for CI")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    scale = 0.01 if args.small else 0.1
    repeat = args.repeat or (1 if args.small else 3)

    import duckdb
    import polars as pl

    from adu_assets.checks.rules import ChecksConfig, validate_rules
    from adu_assets.checks.schema_inference import compare_schema, infer_schema

    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        work = Path(tmp)
        source = generate_lineitem(scale, work)
        target = work / "export.parquet"
        con = duckdb.connect()

        def export() -> None:
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{source}')) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
            )

        cfg = ChecksConfig.model_validate(RULES)
        import pandera.polars  # noqa: F401  (paid once per process; timed separately below)

        outcome = validate_rules(pl.scan_parquet(target if target.exists() else source), cfg)

        def validate() -> None:
            nonlocal outcome
            outcome = validate_rules(pl.scan_parquet(target), cfg)

        baseline = infer_schema(pl.scan_parquet(source))

        def schema() -> None:
            compare_schema(baseline, infer_schema(pl.scan_parquet(target)))

        export()  # warm the file cache for every contender alike
        t_export = best_of(repeat, export)
        t_validate = best_of(repeat, validate)
        t_schema = best_of(repeat, schema)
        rows = outcome.metadata["rows_checked"]
        if not outcome.passed:
            raise SystemExit(f"lineitem should pass the benchmark rules: {outcome.description}")

    t_dagster = import_seconds("import dagster", repeat)
    t_checks = import_seconds("import adu_assets.checks.asset_checks", repeat)
    t_pandera = import_seconds("import pandera.polars", repeat)
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, adu_assets.checks.asset_checks; "
            "print(','.join(m for m in ('pandera.polars', 'evidently', 'ydata_profiling', 'pandas') if m in sys.modules))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    import dagster as dg

    from adu_assets.checks.asset_checks import build_table_checks

    parts = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    full = ChecksConfig.model_validate({**RULES, "row_count": {"min": 1}, "drift": {}})

    def build_200() -> None:
        for i in range(200):
            build_table_checks(
                dg.AssetKey(["bench", "public", f"t{i}"]),
                full,
                load=lambda c: pl.LazyFrame(),
                load_previous=lambda c: None,
                baseline_store_root=lambda: Path(tempfile.gettempdir()),
                profile=True,
                partitions_def=parts,
            )

    t_build = best_of(repeat, build_200)

    print(f"lineitem SF {scale}: {rows:,} rows, best of {repeat}")
    print(f"  (a) export proxy (DuckDB COPY -> zstd parquet)  {t_export:7.3f} s   1.00")
    print(
        f"  (b) validate_rules, 6 columns + unique key      {t_validate:7.3f} s   {t_validate / t_export:.2f}"
    )
    print(f"  (c) infer_schema + compare_schema               {t_schema:7.3f} s   {t_schema / t_export:.3f}")
    print(f"  goal: (b) and (c) <= {GOAL_RATIO:.2f} x (a)")
    print("imports in a fresh interpreter:")
    print(f"  import dagster                          {t_dagster:6.2f} s")
    print(
        f"  import adu_assets.checks.asset_checks   {t_checks:6.2f} s   {t_checks / t_dagster:.2f} x dagster"
    )
    print(f"  import pandera.polars (deferred)        {t_pandera:6.2f} s")
    print(f"  heavy modules loaded by the wiring: {heavy or 'none'}")
    print(f"build_table_checks for 200 tables (5 checks each): {t_build:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
