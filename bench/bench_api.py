"""API ingestion against bare concurrent httpx fetching of the same pages (PERFORMANCE.md goal 3: >= 0.8x).

A threaded server in its own process (so it does not share our GIL) answers every page after a fixed
latency. The baseline fetches all pages with httpx at the same concurrency and only reads the bytes. The
measured path is `api_ingest.ingest`: fetch, raw Parquet landing, JSON decoding of the mapped paths and
mapping, i.e. everything up to the rows handed to the upsert. Both run in this process, one after the
other, against the same server; with --repeat they alternate, so a noisy neighbour hits both alike.
--legacy also times the earlier two-step path (`fetch_to_parquet`, then `load_records` + `apply_mappings`).

    .venv/bin/python bench/bench_api.py            # 200 pages x 500 records, 20 ms per page
    .venv/bin/python bench/bench_api.py --small    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_page(page: int, per_page: int, total: int) -> bytes:
    start = (page - 1) * per_page
    items = [
        {
            "id": i,
            "name": f"  employee {i} ",
            "email": f"e{i}@example.internal",
            "salary": f"{1000 + i % 977}.50",
            "active": "yes" if i % 3 else "no",
            "hired": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T09:30:00+01:00",
            "profile": {"address": {"city": f"city{i % 50}", "zip": f"{10000 + i % 9000}"}, "level": i % 7},
            "tags": ["a", "b"] if i % 2 else ["c"],
        }
        for i in range(start, min(start + per_page, total))
    ]
    return json.dumps({"data": {"items": items}, "meta": {"total": total, "page": page}}).encode()


def serve(port_queue: Any, pages: int, per_page: int, latency: float) -> None:
    total = pages * per_page
    bodies = {p: make_page(p, per_page, total) for p in range(1, pages + 2)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            body = bodies.get(int(query.get("page", ["1"])[0]), make_page(pages + 1, per_page, total))
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def bare_httpx(url: str, pages: int, per_page: int, concurrency: int) -> tuple[float, int]:
    import httpx

    with httpx.Client(limits=httpx.Limits(max_connections=concurrency + 1), trust_env=False) as client:

        def get(page: int) -> int:
            resp = client.get(url, params={"page": str(page), "page_size": str(per_page)})
            resp.raise_for_status()
            return len(resp.content)

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            size = sum(pool.map(get, range(1, pages + 1)))
        return time.perf_counter() - started, size


MAPPINGS: list[dict[str, Any]] = [
    {"source": "id", "target": "EMPLOYEE_ID", "transforms": ["to_int"]},
    {"source": "name", "target": "NAME", "transforms": ["trim", "upper"]},
    {"source": "email", "target": "EMAIL", "transforms": ["lower"]},
    {"source": "salary", "target": "SALARY", "transforms": ["to_float"]},
    {"source": "active", "target": "ACTIVE", "transforms": ["to_bool"]},
    {"source": "hired", "target": "HIRED", "transforms": ["to_timestamp"]},
    {"source": "profile.address.city", "target": "CITY", "transforms": ["upper"]},
    {"source": "profile.level", "target": "LEVEL", "transforms": ["to_int"]},
]


def request_config(url: str, per_page: int, concurrency: int) -> Any:
    from adu_assets.sources.http import RequestConfig

    return RequestConfig(
        url=url,
        records_path="data.items",
        concurrency=concurrency,
        pagination={"type": "page", "page_size": per_page, "total_path": "meta.total"},
    )


def pipeline(
    url: str, per_page: int, concurrency: int, out: Path
) -> tuple[float, int, int, float, str | None]:
    from adu_assets.sources.api_ingest import ingest
    from adu_assets.sources.mapping import MappingConfig

    mappings = [MappingConfig(**m) for m in MAPPINGS]
    started = time.perf_counter()
    result = ingest(request_config(url, per_page, concurrency), {}, out, mappings)
    total_s = time.perf_counter() - started
    assert result.errors.height == 0, result.errors.head()
    return total_s, result.records, result.rows.height, result.fetch_seconds, result.fallback_reason


def legacy(url: str, per_page: int, concurrency: int, out: Path) -> tuple[float, float]:
    from adu_assets.sources.http import fetch_to_parquet
    from adu_assets.sources.mapping import MappingConfig, apply_mappings, load_records

    mappings = [MappingConfig(**m) for m in MAPPINGS]
    started = time.perf_counter()
    fetched = fetch_to_parquet(request_config(url, per_page, concurrency), {}, out)
    fetch_s = time.perf_counter() - started
    apply_mappings(load_records(fetched.raw_files), mappings)
    return time.perf_counter() - started, fetch_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a short run for CI")
    parser.add_argument("--pages", type=int)
    parser.add_argument("--per-page", type=int)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="alternate baseline and ingest this many times")
    parser.add_argument("--legacy", action="store_true", help="also time fetch_to_parquet + load_records")
    args = parser.parse_args()
    pages = args.pages or (40 if args.small else 200)
    per_page = args.per_page or (200 if args.small else 500)

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=serve, args=(ports, pages, per_page, args.latency_ms / 1000), daemon=True)
    proc.start()
    ratios: list[float] = []
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/employees"
        # Warm both paths once (imports, connection setup) so neither pays first-call costs in the timing.
        bare_httpx(url, 2, per_page, args.concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            pipeline(url, per_page, args.concurrency, Path(tmp) / "warm")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"pages={pages} records_per_page={per_page} latency_ms={args.latency_ms} "
            f"concurrency={args.concurrency}"
        )
        for run in range(1, args.repeat + 1):
            bare_s, size = bare_httpx(url, pages, per_page, args.concurrency)
            with tempfile.TemporaryDirectory() as tmp:
                total_s, records, rows, fetch_s, fallback = pipeline(
                    url, per_page, args.concurrency, Path(tmp) / "raw"
                )
            assert records == rows == pages * per_page, (records, rows)
            bare_rps = pages * per_page / bare_s
            ours_rps = records / total_s
            ratios.append(ours_rps / bare_rps)
            print(f"run {run}: payload_mb={size / 1e6:.1f}")
            print(f"  bare_httpx_seconds={bare_s:.3f} records_per_s={bare_rps:,.0f}")
            print(
                f"  ingest_seconds={total_s:.3f} (fetch and landing {fetch_s:.3f}, "
                f"mapping tail {total_s - fetch_s:.3f}) records_per_s={ours_rps:,.0f} rows_mapped={rows}"
                + (f" FALLBACK: {fallback}" if fallback else "")
            )
            print(f"  throughput_ratio={ratios[-1]:.2f} (goal >= 0.8)")
            if args.legacy:
                with tempfile.TemporaryDirectory() as tmp:
                    old_s, old_fetch_s = legacy(url, per_page, args.concurrency, Path(tmp) / "raw")
                print(
                    f"  legacy fetch_to_parquet+load_records+apply_mappings={old_s:.3f} "
                    f"(fetch {old_fetch_s:.3f}) ratio={bare_s / old_s:.2f}"
                )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        proc.terminate()
        proc.join(5)

    if len(ratios) > 1:
        print(
            f"throughput_ratio min={min(ratios):.2f} median={statistics.median(ratios):.2f} max={max(ratios):.2f}"
        )
    print(f"peak_rss_mb={rss:.0f} (after warm-up: {rss_before:.0f})")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
