"""One job and one cron schedule per component, behind the circuit breaker.

The schedule runs the partition of the period that just ended at the tick's time: with daily partitions
and `schedule: "0 2 * * *"`, the 02:00 tick of 2024-05-02 runs partition 2024-05-01. Today's partition
does not exist before the day is over, so there is nothing newer to run. A cron that fires more often
than the partitions (e.g. every 30 minutes on daily partitions) re-runs that last finished partition on
every tick, which picks up rows that arrived late; for new rows during the day use the watermark sensor.

Run keys carry the tick time, so each tick launches at most one run even if the daemon retries the tick,
and a failed partition is tried again on the next tick rather than being deduplicated away.
"""

import zoneinfo
from datetime import datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from adu_assets.automation.circuit_breaker import SCHEDULE_TAG, check_breaker


def job_name(component_name: str) -> str:
    return f"{component_name}_job"


def schedule_name(component_name: str) -> str:
    return f"{component_name}_schedule"


def component_job(
    component_name: str,
    assets: list[dg.AssetsDefinition],
    partitions_def: dg.PartitionsDefinition | None,
) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=job_name(component_name),
        selection=dg.AssetSelection.assets(*assets),
        partitions_def=partitions_def,
        description=f"Every asset of {component_name}, one partition per run",
        tags={"adu/component": component_name},
    )


def check_timezone(component_name: str, timezone: str) -> None:
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{component_name}: timezone {timezone!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)"
        ) from None


def check_cron(component_name: str, cron: str) -> None:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(cron):
        raise ValueError(
            f"{component_name}: schedule {cron!r} is not a valid cron string; use five fields, "
            'e.g. "0 2 * * *" for 02:00 every day'
        )


def partition_for_tick(partitions_def: dg.PartitionsDefinition | None, tick: datetime) -> str | None:
    """The last partition that exists at `tick` (for daily partitions: the day that just ended)."""
    if partitions_def is None:
        return None
    with dg.partition_loading_context(effective_dt=tick):
        return partitions_def.get_last_partition_key()


def partition_schedule(
    *,
    component_name: str,
    job: UnresolvedAssetJobDefinition,
    cron: str,
    timezone: str,
    partitions_def: dg.PartitionsDefinition | None,
    max_consecutive_failures: int,
) -> dg.ScheduleDefinition:
    check_cron(component_name, cron)
    check_timezone(component_name, timezone)
    name = schedule_name(component_name)

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=timezone,
        job=job,
        # The user asked for this schedule in YAML; making them also switch it on in the UI would be a trap.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"{cron} ({timezone}): runs the partition that just ended. Pauses after "
            f"{max_consecutive_failures} consecutive failed runs until adu_resume_{component_name} runs."
        ),
        tags={"adu/component": component_name, "adu/trigger": "schedule"},
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        skip = check_breaker(
            context.instance,
            job_name=job.name,
            launcher_tag=(SCHEDULE_TAG, name),
            component_name=component_name,
            max_consecutive_failures=max_consecutive_failures,
        )
        if skip is not None:
            return skip
        tick = context.scheduled_execution_time
        if partitions_def is None:
            return dg.RunRequest(run_key=f"{tick.isoformat()}")
        partition = partition_for_tick(partitions_def, tick)
        if partition is None:
            return dg.SkipReason(f"no partition has ended yet at {tick.isoformat()} (see start_date)")
        return dg.RunRequest(partition_key=partition, run_key=f"{partition}@{tick.isoformat()}")

    return _schedule
