"""Profiling reports, and proof that drift and profiling stay off the network (inside `unshare -n`)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from adu_assets.checks.profiling import write_profile
from adu_assets_tests.pg_server import PgServer
from adu_assets_tests.test_checks_rules import load_chinook, read_table

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracks(pg: PgServer) -> pl.DataFrame:
    load_chinook(pg)
    return read_table(pg, "SELECT * FROM track ORDER BY track_id")


def test_profile_writes_html_from_a_sample(tracks: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "track.parquet"
    tracks.write_parquet(path)
    html_path = tmp_path / "reports" / "profile-2024-01-01.html"
    meta = write_profile(pl.scan_parquet(path), html_path, sample_rows=1000, seed=3)
    assert meta["path"] == str(html_path)
    assert meta["rows_profiled"] == 1000 and meta["rows_total"] == tracks.height == 3503
    assert meta["sampled"] is True and meta["seconds"] > 0
    html = html_path.read_text(encoding="utf-8")
    for column in ("composer", "milliseconds", "unit_price"):
        assert column in html
    # assets are inlined: nothing for a browser to fetch
    assert '<script src="http' not in html and '<link rel="stylesheet" href="http' not in html


def test_profile_of_an_empty_partition(tmp_path: Path) -> None:
    meta = write_profile(pl.DataFrame({"a": []}, schema={"a": pl.Int64}), tmp_path / "empty.html")
    assert meta["rows_profiled"] == 0
    assert "No rows to profile" in (tmp_path / "empty.html").read_text()


# --- air-gap proof ---------------------------------------------------------------------------------------

# Runs in a network namespace that has only loopback. An audit hook records every DNS lookup and socket
# connect, so a library that tries the network and swallows the error (ydata-profiling's analytics does)
# is still caught.
AIRGAP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    attempts = []
    def hook(event, args):
        if event == "socket.getaddrinfo":
            attempts.append(["getaddrinfo", str(args[0])])
        elif event == "socket.connect":
            attempts.append(["connect", repr(args[1])])
    sys.addaudithook(hook)
    from pathlib import Path
    import polars as pl
    mode, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    frame = pl.read_parquet(data)
    result = {}
    if mode == "checks":
        from adu_assets.checks.drift import run_drift
        from adu_assets.checks.profiling import write_profile
        from adu_assets.checks.rules import DriftConfig
        shifted = frame.with_columns(pl.col("milliseconds") * 2)
        drift = run_drift(frame, shifted, DriftConfig(columns=["milliseconds", "bytes"]), out / "drift.html")
        result["drift_passed"] = drift.passed
        result["profile"] = write_profile(frame, out / "profile.html")
    else:
        # the control: ydata-profiling as it ships, analytics switch unset
        from ydata_profiling import ProfileReport
        ProfileReport(frame.to_pandas(), minimal=True, progress_bar=False).to_html()
    result["attempts"] = attempts
    (out / "result.json").write_text(json.dumps(result))
    """
)


def _run_airgapped(mode: str, data: Path, out: Path, env: dict[str, str]) -> dict[str, object]:
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-n", "true"], check=False).returncode != 0
    ):
        pytest.skip("unshare -n is not permitted here (needs root or CAP_SYS_ADMIN)")
    script = out / "airgap.py"
    script.write_text(AIRGAP_SCRIPT)
    cmd = f"ip link set lo up && exec {sys.executable} {script} {mode} {data} {out}"
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", cmd], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())  # type: ignore[no-any-return]


def _non_loopback(attempts: list[list[str]]) -> list[list[str]]:
    loopback = ("127.0.0.1", "::1", "localhost")
    return [a for a in attempts if not any(host in a[1] for host in loopback) and not a[1].startswith("'/")]


@pytest.fixture
def airgap_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("YDATA_PROFILING_NO_ANALYTICS", "DO_NOT_TRACK")}
    env["PYTHONPATH"] = str(PROJECT)
    return env


def test_drift_and_profiling_never_touch_the_network(
    tracks: pl.DataFrame, tmp_path: Path, airgap_env: dict[str, str]
) -> None:
    data = tmp_path / "track.parquet"
    tracks.write_parquet(data)
    result = _run_airgapped("checks", data, tmp_path, airgap_env)
    assert result["drift_passed"] is False  # milliseconds doubled: 1 of 2 columns drifted
    assert (tmp_path / "drift.html").stat().st_size > 10_000
    assert (tmp_path / "profile.html").stat().st_size > 10_000
    assert _non_loopback(result["attempts"]) == []  # type: ignore[arg-type]


def test_the_airgap_probe_catches_ydata_analytics(
    tracks: pl.DataFrame, tmp_path: Path, airgap_env: dict[str, str]
) -> None:
    """Without our switch, ydata-profiling tries to reach packages.ydata.ai: the probe above can fail."""
    data = tmp_path / "track.parquet"
    tracks.head(200).write_parquet(data)
    result = _run_airgapped("control", data, tmp_path, airgap_env)
    assert ["getaddrinfo", "packages.ydata.ai"] in _non_loopback(result["attempts"])  # type: ignore[arg-type]
