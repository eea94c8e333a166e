"""Circuit breaker: a schedule (or sensor) stops launching runs after N consecutive failures.

The state lives in Dagster's own run history, so nothing extra is stored and it survives restarts:
on every tick the schedule reads the latest runs of its job that it launched itself (tag
`dagster/schedule_name`, or `dagster/sensor_name` for a sensor). When the newest N of them all failed, the tick
returns a `SkipReason` that names the last failed run and how to resume, and no run is launched. The tick
log of the schedule in the UI (Automation -> the schedule) shows that reason.

Resuming a paused schedule: fix the cause, then run the component's resume job `adu_resume_<name>`:
  - UI: Jobs -> `adu_resume_<name>` -> Launchpad -> "Launch run" (it takes no config);
  - CLI, against the same DAGSTER_HOME as the daemon:
      dagster job execute -m adu_assets.definitions -j adu_resume_<name>
A successful run of that job is the reset point: failures created before it no longer count, so the next
tick launches a run again. Should that run fail as well, the breaker needs N new failures to trip again.

A run together with its automatic run retries (`run_retries` in dagster.yaml) counts once: runs are
grouped by `dagster/root_run_id` and only the newest attempt is looked at. A run that is queued or in
progress, or was canceled by a user, breaks a streak of failures.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

SCHEDULE_TAG = "dagster/schedule_name"
SENSOR_TAG = "dagster/sensor_name"
ROOT_RUN_TAG = "dagster/root_run_id"
RESUME_TAG = "adu/resumes"

DEFAULT_MAX_CONSECUTIVE_FAILURES = 3


def resume_job_name(component_name: str) -> str:
    return f"adu_resume_{component_name}"


def resume_command(component_name: str) -> str:
    return f"dagster job execute -m adu_assets.definitions -j {resume_job_name(component_name)}"


@dataclass(frozen=True)
class BreakerState:
    """What the breaker found: `failed_run_ids` is the current streak, newest first."""

    failed_run_ids: tuple[str, ...]
    last_failure_at: datetime | None
    resumed_at: datetime | None
    max_consecutive_failures: int

    @property
    def open(self) -> bool:
        return len(self.failed_run_ids) >= self.max_consecutive_failures


def last_resume(instance: dg.DagsterInstance, component_name: str) -> datetime | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=resume_job_name(component_name), statuses=[dg.DagsterRunStatus.SUCCESS]
        ),
        limit=1,
    )
    return records[0].create_timestamp if records else None


def breaker_state(
    instance: dg.DagsterInstance,
    *,
    job_name: str,
    launcher_tag: tuple[str, str],
    component_name: str,
    max_consecutive_failures: int,
) -> BreakerState:
    """Count the newest consecutive failures of `job_name` among runs carrying `launcher_tag`."""
    resumed_at = last_resume(instance, component_name)
    # Retries of one run share a root run id; reading 4x covers max_retries up to 3 without a second query.
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, tags={launcher_tag[0]: launcher_tag[1]}, created_after=resumed_at
        ),
        limit=max_consecutive_failures * 4,
    )
    streak: list[str] = []
    last_failure_at: datetime | None = None
    seen_roots: set[str] = set()
    for record in records:  # newest first
        run = record.dagster_run
        root = run.tags.get(ROOT_RUN_TAG, run.run_id)
        if root in seen_roots:
            continue  # an older attempt of a run already counted
        seen_roots.add(root)
        if run.status != dg.DagsterRunStatus.FAILURE:
            break
        streak.append(run.run_id)
        if last_failure_at is None:
            last_failure_at = (
                datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
            )
        if len(streak) >= max_consecutive_failures:
            break
    return BreakerState(tuple(streak), last_failure_at, resumed_at, max_consecutive_failures)


def pause_reason(state: BreakerState, *, component_name: str, job_name: str) -> str:
    last = state.failed_run_ids[0]
    when = f" at {state.last_failure_at:%Y-%m-%d %H:%M:%S %Z}" if state.last_failure_at else ""
    return (
        f"paused after {len(state.failed_run_ids)} consecutive failed runs of {job_name} "
        f"(last run {last} failed{when}). Fix the cause, then resume: launch the job "
        f"{resume_job_name(component_name)} from the UI (Jobs -> {resume_job_name(component_name)} -> "
        f"Launchpad -> Launch run) or run `{resume_command(component_name)}`"
    )


def check_breaker(
    instance: dg.DagsterInstance,
    *,
    job_name: str,
    launcher_tag: tuple[str, str],
    component_name: str,
    max_consecutive_failures: int,
) -> dg.SkipReason | None:
    """A SkipReason when the breaker is open, else None (the tick goes ahead)."""
    state = breaker_state(
        instance,
        job_name=job_name,
        launcher_tag=launcher_tag,
        component_name=component_name,
        max_consecutive_failures=max_consecutive_failures,
    )
    if not state.open:
        return None
    return dg.SkipReason(pause_reason(state, component_name=component_name, job_name=job_name))


def resume_job(component_name: str, paused: Sequence[str]) -> dg.JobDefinition:
    """`adu_resume_<name>`: its successful run resets the breaker of the component's schedule and sensors."""
    names = ", ".join(paused)

    @dg.op(name=f"adu_resume_{component_name}_op")
    def record_resume(context: dg.OpExecutionContext) -> None:
        context.log.info(
            f"resumed {names}: runs of {component_name} that failed before this run no longer count "
            "towards the circuit breaker"
        )

    @dg.job(
        name=resume_job_name(component_name),
        description=(
            f"Resume {names} after the circuit breaker paused them. Launch it (no config needed) once the "
            f"cause of the failures is fixed; CLI: {resume_command(component_name)}"
        ),
        tags={RESUME_TAG: component_name},
        # One trivial op: a subprocess per step would only add seconds to a click in the UI.
        executor_def=dg.in_process_executor,
    )
    def resume() -> None:
        record_resume()

    return resume
