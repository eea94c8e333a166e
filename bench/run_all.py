"""Run every benchmark, each in its own process, and print their ratio lines.

python -m bench.run_all           # full size (minutes; lineitem SF1, 1.5M-row upsert, ...)
python -m bench.run_all --small   # CI size: proves the benchmarks still run; ratios are noisy at this scale
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    "bench_export",
    "bench_upsert",
    "bench_api",
    "bench_checks",
    "bench_sensor",
    "bench_defs",
    "bench_celery",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    here = Path(__file__).parent
    failed = []
    for name in args.only or BENCHES:
        if not (here / f"{name}.py").exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--small"] if args.small else [])
        code = subprocess.call(cmd, cwd=here.parent)
        print(f"== {name}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
