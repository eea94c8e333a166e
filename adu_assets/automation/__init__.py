"""Automation for components: a job, a cron schedule, a watermark sensor, and the circuit breaker.

`automation_defs(...)` is what a component's `build_defs` adds next to its assets:

- `<name>_job`: every asset of the component, one partition per run;
- `<name>_schedule` (when `cron` is set): runs the partition that just ended (see `schedules`);
- `<name>_watermark_sensor` (when a `WatermarkSpec` is given): runs partitions that got new rows;
- `adu_resume_<name>` (with either of the two): resumes them after the circuit breaker paused them
  (see `circuit_breaker` for the UI and CLI steps).
"""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from adu_assets.automation.circuit_breaker import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    resume_command,
    resume_job,
    resume_job_name,
)
from adu_assets.automation.retries import network_retry_policy
from adu_assets.automation.schedules import component_job, job_name, partition_schedule, schedule_name
from adu_assets.automation.sensors import (
    WatermarkSpec,
    apply_pool_limits,
    merge_pool_limits,
    pool_limits_sensor,
    watermark_sensor,
    watermark_sensor_name,
)

__all__ = [
    "WatermarkSpec",
    "apply_pool_limits",
    "automation_defs",
    "job_name",
    "merge_pool_limits",
    "network_retry_policy",
    "pool_limits_sensor",
    "resume_command",
    "resume_job_name",
    "schedule_name",
    "watermark_sensor_name",
]


def automation_defs(
    *,
    component_name: str,
    assets: list[dg.AssetsDefinition],
    cron: str | None,
    timezone: str,
    partitions_def: dg.PartitionsDefinition | None,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    watermark: WatermarkSpec | None = None,
) -> dg.Definitions:
    """The job, schedule, watermark sensor and resume job of one component (assets not included)."""
    if max_consecutive_failures < 1:
        raise ValueError(f"{component_name}: max_consecutive_failures must be 1 or more")
    if not assets:
        return dg.Definitions()
    job = component_job(component_name, assets, partitions_def)
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    if cron:
        schedules.append(
            partition_schedule(
                component_name=component_name,
                job=job,
                cron=cron,
                timezone=timezone,
                partitions_def=partitions_def,
                max_consecutive_failures=max_consecutive_failures,
            )
        )
    if watermark is not None and watermark.tables:
        if partitions_def is None:
            raise ValueError(f"{component_name}: a watermark sensor needs partitioned assets")
        sensors.append(
            watermark_sensor(
                component_name=component_name,
                job=job,
                partitions_def=partitions_def,
                spec=watermark,
                max_consecutive_failures=max_consecutive_failures,
            )
        )
    jobs: list[dg.JobDefinition | UnresolvedAssetJobDefinition] = [job]
    paused = [s.name for s in schedules] + [s.name for s in sensors]
    if paused:
        jobs.append(resume_job(component_name, paused))
    return dg.Definitions(jobs=jobs, schedules=schedules, sensors=sensors)
