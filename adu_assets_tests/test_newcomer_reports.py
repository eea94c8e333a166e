"""Drift and profile reports open from the UI: a clickable URL, and their key findings as markdown.

The URL test serves the deploy's own `location /reports/` block (cut from deploy/nginx.conf) with a real
nginx on 127.0.0.1 and fetches the URL the check put into its metadata.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import numpy as np
import polars as pl
import pytest

from adu_assets.checks.asset_checks import to_check_result
from adu_assets.checks.drift import run_drift
from adu_assets.checks.profiling import write_profile
from adu_assets.checks.reports import check_metadata, report_url
from adu_assets.checks.rules import DriftConfig

ROOT = Path(__file__).resolve().parents[1]
# The asset key folder as asset_checks.report_path writes it: percent-encoded, so "%" is in the name.
KEY_FOLDER = quote("shop/main/orders", safe="")


def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(3)
    n = 2000
    reference = pl.DataFrame(
        {
            "total": rng.normal(100, 10, n),
            "country": rng.choice(["FR", "DE", "US"], n),
            "qty": rng.integers(1, 5, n),
        }
    )
    current = reference.with_columns(pl.col("total") * 3 + 50)  # only `total` moves
    return reference, current


def test_drift_metadata_has_url_and_markdown_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADU_REPORTS_URL", "https://adu.example.internal/reports/")
    report = tmp_path / "data" / "reports" / KEY_FOLDER / "drift-2026-03-01.html"
    reference, current = frames()
    out = run_drift(reference.lazy(), current.lazy(), DriftConfig(threshold=0.5), report)

    assert out.metadata["drifted_columns"] == ["total"]
    # What Dagster records: the check result built from the outcome.
    meta = to_check_result(out).metadata
    url = meta["report_url"]
    assert isinstance(url, dg.UrlMetadataValue)
    # The on-disk "%2F" reaches nginx as "%252F", which it decodes back to the folder's real name.
    assert url.value == "https://adu.example.internal/reports/shop%252Fmain%252Forders/drift-2026-03-01.html"
    findings = meta["findings"]
    assert isinstance(findings, dg.MarkdownMetadataValue)
    md = findings.value
    assert md.startswith("**1 of 3 columns drifted**")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| total | **yes** |")  # the drifted column first
    assert {r.split("|")[1].strip() for r in rows} == {"total", "country", "qty"}
    assert f"[Full report]({url.value})" in md
    assert out.metadata["report_path"] == str(report)


def test_without_reports_url_there_is_no_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADU_REPORTS_URL", raising=False)
    reference, current = frames()
    out = run_drift(reference, current, DriftConfig(), tmp_path / "drift.html")
    assert "report_url" not in out.metadata
    assert out.metadata["report_path"] == str(tmp_path / "drift.html")
    assert "Full report" not in out.metadata["findings"]
    assert report_url(tmp_path / "drift.html") is None


def test_profile_findings_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADU_REPORTS_URL", "http://127.0.0.1:9/reports")
    frame = pl.DataFrame(
        {
            "id": list(range(300)),
            "constant": ["same"] * 300,
            "maybe": [None if i % 4 == 0 else float(i) for i in range(300)],
            "pipe|name": ["a|b"] * 150 + ["c"] * 150,
        }
    )
    html = tmp_path / "data" / "reports" / KEY_FOLDER / "profile-2026-03-01.html"
    meta = check_metadata(write_profile(frame, html, title="shop/main/orders"))
    assert isinstance(meta["findings"], dg.MarkdownMetadataValue)
    md = meta["findings"].value
    assert md.startswith("**300 rows, 4 columns**"), md
    assert "[constant] has a constant value" in md
    assert "[maybe] 75 (25.0%) missing values" in md
    maybe_row = next(line for line in md.splitlines() if line.startswith("| maybe |"))
    assert "| 25.0% |" in maybe_row and "| 1 | 299 |" in maybe_row  # min 1.0 .. max 299.0 as plain numbers
    assert "np.float64" not in md
    assert r"pipe\|name" in md  # a column name cannot break the table
    assert (
        meta["report_url"].value
        == "http://127.0.0.1:9/reports/shop%252Fmain%252Forders/profile-2026-03-01.html"
    )

    empty = write_profile(frame.head(0), tmp_path / "empty.html")
    assert empty["findings"].startswith("**No rows to profile**")


def reports_location() -> str:
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    match = re.search(r"\n(\s*location /reports/ \{.*?\n\s*\})", text, re.S)
    assert match, "deploy/nginx.conf has no `location /reports/` block"
    block = match.group(1)
    # Each server of the deploy file has it (editors and viewers).
    assert text.count("location /reports/ {") == 2
    return block


@pytest.mark.slow
def test_nginx_serves_the_reported_url(monkeypatch: pytest.MonkeyPatch) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("REPORT URL CHECK NOT RUN: nginx is missing (scripts/test installs nginx-light)")
    # nginx's workers read the files as an unprivileged user: a world-readable folder.
    root = Path(tempfile.mkdtemp(prefix="adu-reports-"))
    root.chmod(0o755)
    try:
        data = root / "data"
        monkeypatch.setenv("ADU_DATA_DIR", str(data))
        port = _free_port()
        monkeypatch.setenv("ADU_REPORTS_URL", f"http://127.0.0.1:{port}/reports")
        report = data / "reports" / KEY_FOLDER / "drift-2026-03-01.html"
        reference, current = frames()
        meta = check_metadata(run_drift(reference, current, DriftConfig(), report).metadata)
        for p in [data, *report.parents][: len(report.relative_to(root).parts)]:
            p.chmod(0o755)
        block = reports_location().replace("/srv/adu-data/", f"{data}/")
        conf = root / "nginx.conf"
        conf.write_text(
            "events {}\nhttp {\n"
            f"  access_log {root}/access.log;\n"
            f"  server {{\n    listen 127.0.0.1:{port};\n{block}\n  }}\n}}\n"
        )
        proc = subprocess.Popen(
            [
                nginx,
                "-p",
                str(root),
                "-c",
                str(conf),
                "-g",
                f"daemon off; pid {root}/nginx.pid; error_log {root}/error.log;",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            body, headers = b"", {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(meta["report_url"].value, timeout=5) as resp:
                        body, headers = resp.read(), dict(resp.headers)
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.2)
            assert body == report.read_bytes(), (
                (root / "error.log").read_text() if (root / "error.log").exists() else ""
            )
            assert headers["Content-Type"].startswith("text/html")
            assert "sandbox" in headers["Content-Security-Policy"]
            # Read-only: nothing but GET (and HEAD).
            req = urllib.request.Request(meta["report_url"].value, data=b"x", method="PUT")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert err.value.code in (403, 405)
            # Nothing outside the reports folder.
            (data / "warehouse.duckdb").write_text("secret-ish")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/reports/../warehouse.duckdb", timeout=5)
            assert err.value.code in (400, 403, 404)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
