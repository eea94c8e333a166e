"""The Dagster UI in headless Chromium: launch a demo partition from the asset page and see its row count.

The webserver runs the demo code location on loopback. Runs start straight from the webserver
(DefaultRunCoordinator), so no daemon is needed here; the queued path is covered by test_deploy_processes.
The browser side is adu_assets_tests/browser/materialize_from_ui.js (playwright-core driving Debian's
chromium: no browser download). Screenshots land in adu_assets_tests/out/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from adu_assets_tests.pg_server import free_port
from adu_assets_tests.test_deploy_processes import (
    DagsterProcess,
    listed_assets,
    processes,
    wait_for,
    webserver_ready,
)

HERE = Path(__file__).resolve().parent
BROWSER_DIR = HERE / "browser"
OUT = HERE / "out" / "browser"
CHROMIUM = Path(os.environ.get("ADU_CHROMIUM", "/usr/bin/chromium"))
PARTITION = "2026-03-01"

INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


def ensure_chromium() -> Path:
    """Debian's chromium, installed on first use; skipped (loudly) only when it cannot be installed."""
    if CHROMIUM.exists():
        return CHROMIUM
    why = "not root, cannot apt-get install" if os.geteuid() != 0 else ""
    if not why and not shutil.which("apt-get"):
        why = "apt-get is not available"
    if not why:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                why = f"`{' '.join(cmd)}` failed: {proc.stderr[-500:]}"
                break
    if CHROMIUM.exists():
        return CHROMIUM
    message = (
        f"BROWSER CHECK NOT RUN: {CHROMIUM} is missing and the Debian package 'chromium' could not be "
        f"installed ({why or 'installed, but the binary is still missing'}). Install it with "
        "`apt-get install -y chromium` or point ADU_CHROMIUM at a Chromium binary."
    )
    print(message, file=sys.stderr)
    pytest.skip(message)


def ensure_playwright_core() -> Path:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the browser check (Debian packages nodejs and npm)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        # playwright-core never downloads a browser; the variable makes that explicit.
        env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (
            f"npm ci in {BROWSER_DIR} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return Path(node)


@pytest.mark.slow
def test_materialize_from_the_ui_shows_row_count(tmp_path: Path) -> None:
    chromium = ensure_chromium()
    node = ensure_playwright_core()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        ADU_DATA_DIR=str(tmp_path / "data"),
        ADU_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()

    with processes() as procs:
        procs.append(
            DagsterProcess(
                "webserver",
                [
                    str(Path(sys.executable).parent / "dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-m",
                    "adu_assets.definitions",
                ],
                env,
                logs,
            )
        )
        wait_for("the webserver", webserver_ready(base), 120, procs)
        wait_for("the demo assets", listed_assets(base), 180, procs)

        browser = subprocess.run(
            [str(node), "materialize_from_ui.js", base, "shop/main/products", PARTITION, str(OUT), "240"],
            cwd=BROWSER_DIR,
            env=dict(env, ADU_CHROMIUM=str(chromium)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert browser.returncode == 0, (
            f"browser script failed (screenshots in {OUT}):\n{browser.stderr[-3000:]}\n"
            + "\n".join(p.tail() for p in procs)
        )
        seen = json.loads(browser.stdout.strip().splitlines()[-1])

    assert seen["runStatus"] == "Success"
    assert seen["rowCount"] == "200"
    for shot in seen["screenshots"]:
        data = Path(shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, shot
    assert (OUT / "ui-3-partition-row-count.png").exists()

    # The only run in this fresh instance is the one the UI launched, and it is the one the UI showed.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.run_id for r in runs] == [seen["runId"]]
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert runs[0].tags["dagster/partition"] == PARTITION
        record = instance.get_latest_materialization_event(dg.AssetKey(["shop", "main", "products"]))
        assert record is not None and record.run_id == seen["runId"]
