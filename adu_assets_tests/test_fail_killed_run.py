"""Issue 11 point 2: a SIGKILLed run worker's run ends. Under a running `dagster-daemon`, with the repository's
dagster.yaml (only the polling intervals shortened), the run is marked FAILURE, the pool slot it held is
given back, and run_retries makes a retry run, which then gets the slot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema

from adu_assets_tests.pg_server import PgServer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "adu_slow_source"
T = TypeVar("T")

SLOW_LOCATION = f'''
import time
import dagster as dg

@dg.asset(pool="{POOL}")
def slow_export(context: dg.AssetExecutionContext) -> int:
    context.log.info("slow export started")
    time.sleep(300)
    return 1

defs = dg.Definitions(assets=[slow_export])
'''


def instance_yaml(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((REPO / name).read_text())
    result = validate_config(dagster_instance_config_schema(), cfg)
    assert result.success, [e.message for e in result.errors or []]
    return dict(cfg)


@pytest.mark.parametrize("name", ["dagster.yaml", "deploy/dagster.yaml"])
def test_instance_files_monitor_runs_and_free_slots(name: str) -> None:
    cfg = instance_yaml(name)
    assert cfg["run_monitoring"]["enabled"] is True
    assert cfg["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert cfg["run_retries"]["enabled"] is True and cfg["run_retries"]["max_retries"] >= 1


def wait_for(what: str, probe: Callable[[], T | None], seconds: float, daemon_log: Path) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    tail = daemon_log.read_text(errors="replace")[-3000:] if daemon_log.exists() else ""
    raise AssertionError(
        f"timed out after {seconds:.0f} s waiting for {what}\n--- daemon log tail ---\n{tail}"
    )


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    home = tmp_path / "home"
    home.mkdir()
    cfg = instance_yaml("dagster.yaml")
    # The shipped settings, with intervals a test can wait for, and runs queued so the daemon launches
    # them through the instance's run launcher (a real run worker process under a real code server).
    cfg["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    cfg["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
    cfg["concurrency"]["pools"]["default_limit"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "slow_location.py").write_text(SLOW_LOCATION)
    (tmp_path / "workspace.yaml").write_text("load_from:\n  - python_file: slow_location.py\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    yield home, tmp_path, env


def dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def parent_pid(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize(
    "victims",
    [
        # The code server notices its worker died and fails the run; monitoring frees the slot.
        "worker",
        # `dagster dev` or the host killed outright (daemon, code server, worker), then started again: nobody
        # is left to notice, only run monitoring's health check (CodeServerRunLauncher) can end the run.
        "everything",
    ],
)
def test_killed_run_worker_fails_frees_its_slot_and_is_retried(
    daemon_home: tuple[Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch, victims: str
) -> None:
    home, folder, env = daemon_home
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    log_path = folder / "daemon.log"
    # Create the SQLite storage once, before the daemon and the launch command race to create it.
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []
    daemons: list[subprocess.Popen[bytes]] = []

    def start_daemon() -> None:
        with open(log_path, "ab") as log:
            daemons.append(
                subprocess.Popen(
                    [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                    cwd=folder,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def kill_daemon(daemon: subprocess.Popen[bytes]) -> None:
        # The daemon, its code server and every run process it started share the daemon's session.
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        daemon.wait(30)

    start_daemon()
    try:
        launched = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "__ASSET_JOB"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert launched.returncode == 0, launched.stderr[-2000:]
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs()

            def worker_pid() -> int | None:
                for entry in instance.all_logs(run.run_id):
                    m = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
                    if m:
                        return int(m.group(1))
                return None

            def holds_slot(run_id: str) -> bool:
                info = instance.event_log_storage.get_concurrency_info(POOL)
                return any(s.run_id == run_id for s in info.claimed_slots)

            def step_running() -> bool:
                return any("slow export started" in (e.message or "") for e in instance.all_logs(run.run_id))

            pid = wait_for("the run worker to start", worker_pid, 180, log_path)
            wait_for(
                "the step to run and hold its pool slot",
                lambda: step_running() and holds_slot(run.run_id),
                180,
                log_path,
            )

            # A healthy run survives several monitoring polls (1 s each; 3 failed checks would fail it).
            time.sleep(6)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
            code_server = parent_pid(pid)
            assert "api grpc" in Path(f"/proc/{code_server}/cmdline").read_text().replace("\0", " ")
            if victims == "worker":
                os.kill(pid, signal.SIGKILL)
            else:
                kill_daemon(daemons[0])
                wait_for(
                    "the worker and code server to die", lambda: dead(pid) and dead(code_server), 30, log_path
                )
                assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
                start_daemon()

            def status() -> dg.DagsterRunStatus:
                return instance.get_run_by_id(run.run_id).status  # type: ignore[union-attr]

            wait_for(
                "the killed run to be marked FAILURE",
                lambda: status() == dg.DagsterRunStatus.FAILURE,
                120,
                log_path,
            )
            wait_for(
                "the killed run's pool slot to be freed", lambda: not holds_slot(run.run_id), 120, log_path
            )

            def retry_run() -> dg.DagsterRun | None:
                runs = [r for r in instance.get_runs() if r.tags.get("dagster/parent_run_id") == run.run_id]
                return runs[0] if runs else None

            retry = wait_for("a retry run", retry_run, 120, log_path)
            assert retry.tags.get("dagster/root_run_id") == run.run_id
            # The retry is not blocked by the dead run's slot: it starts and takes the slot itself.
            wait_for("the retry to take the pool slot", lambda: holds_slot(retry.run_id), 180, log_path)
            if victims == "everything":
                failure = "\n".join(e.message or "" for e in instance.all_logs(run.run_id))
                assert "the run worker is gone" in failure
    finally:
        for daemon in daemons:
            kill_daemon(daemon)


def test_deploy_instance_loads_the_monitored_launcher(
    pg: PgServer, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # deploy/dagster.yaml as the webserver and daemon load it: PostgreSQL storage from DAGSTER_PG_*.
    home = tmp_path / "deploy_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    for name, value in {
        "HOST": pg.host,
        "PORT": str(pg.port),
        "USER": pg.user,
        "PASSWORD": pg.password,
        "DB": pg_db,
    }.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    from adu_assets.automation.run_launcher import CodeServerRunLauncher

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, CodeServerRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        assert instance.run_retries_enabled
