"""`CodeServerRunLauncher`: Dagster's DefaultRunLauncher, plus the health check run monitoring needs.

The default launcher starts each run worker as a child of the code server that loaded the code. When only
the worker dies (SIGKILL, OOM), that code server notices and fails the run. When the code server dies with
it (a killed process group, `dagster dev` killed, a restarted code-server container), nobody is left to
notice: the run stays STARTED forever and keeps its pool slots, so later runs of that source wait forever.
The default launcher cannot tell, so run monitoring skips its runs.

This launcher answers run monitoring's question by asking the code server that launched the run (the
address Dagster records in the run's `.dagster/grpc_info` tag) whether that run is still executing there.
An unreachable code server, or one that does not know the run (a new server at the same address), means
the worker is gone: after `UNREACHABLE_CHECKS` answers in a row (so a code server that is merely busy or
restarting is not taken for dead), monitoring marks the run failed, run_retries makes its retry, and
`free_slots_after_run_end_seconds` gives its pool slots back. Runs without the tag (run in the process
that asked for them, e.g. `dagster asset materialize`) are reported as running: nothing can be checked.
"""

from __future__ import annotations

import json
from typing import Any

from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

# Consecutive failed checks before a run is declared dead; with run_monitoring.poll_interval_seconds = 30
# that is about 1.5 minutes.
UNREACHABLE_CHECKS = 3
_CHECK_TIMEOUT_S = 10


class CodeServerRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose runs run monitoring can check (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._misses: dict[str, int] = {}

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        verdict, why = self._ask_code_server(run)
        if verdict:
            self._misses.pop(run.run_id, None)
            return CheckRunHealthResult(WorkerStatus.RUNNING, why)
        misses = self._misses.get(run.run_id, 0) + 1
        self._misses[run.run_id] = misses
        if misses < UNREACHABLE_CHECKS:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"{why} (check {misses} of {UNREACHABLE_CHECKS} before failing the run)"
            )
        self._misses.pop(run.run_id, None)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"{why}: the run worker is gone ({UNREACHABLE_CHECKS} checks in a row), so the run is failed "
            "and its pool slots given back; run_retries in dagster.yaml decides whether it is retried",
        )

    def _ask_code_server(self, run: DagsterRun) -> tuple[bool, str]:
        """(alive, what the code server said)."""
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
        from dagster._serdes import deserialize_value

        raw = run.tags.get(GRPC_INFO_TAG)
        if not raw:
            return True, "no code server recorded for this run; it cannot be checked"
        info = json.loads(raw)
        where = info.get("socket") or f"{info.get('host')}:{info.get('port')}"
        client = DagsterGrpcClient(
            port=info.get("port"),
            socket=info.get("socket"),
            host=info.get("host"),
            use_ssl=bool(info.get("use_ssl", False)),
        )
        try:
            answer = deserialize_value(
                client.can_cancel_execution(
                    CanCancelExecutionRequest(run_id=run.run_id), timeout=_CHECK_TIMEOUT_S
                ),
                CanCancelExecutionResult,
            )
        except Exception as e:  # unreachable, refused, timed out: the server (and its workers) may be gone
            return (
                False,
                f"the code server at {where} that launched the run does not answer ({type(e).__name__})",
            )
        if answer.can_cancel:
            return True, f"executing in the code server at {where}"
        return False, f"the code server at {where} is not executing this run"
