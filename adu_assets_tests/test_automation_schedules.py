"""automation_defs: the component job, the cron schedule and the partition each tick runs."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from adu_assets.automation import automation_defs, network_retry_policy
from adu_assets.automation.circuit_breaker import resume_job_name


def two_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(key=["shop", "public", "orders"], partitions_def=partitions_def)
    def orders() -> None: ...

    @dg.asset(key=["shop", "public", "customers"], partitions_def=partitions_def)
    def customers() -> None: ...

    return [orders, customers]


def build(
    cron: str | None, tz: str = "UTC", start: str = "2024-01-01"
) -> tuple[dg.Definitions, list[dg.AssetsDefinition]]:
    partitions = dg.DailyPartitionsDefinition(start_date=start, timezone=tz)
    assets = two_assets(partitions)
    auto = automation_defs(
        component_name="shop", assets=assets, cron=cron, timezone=tz, partitions_def=partitions
    )
    return dg.Definitions.merge(dg.Definitions(assets=assets), auto), assets


def evaluate(d: dg.Definitions, tick: datetime) -> list[dg.RunRequest]:
    schedule = d.resolve_schedule_def("shop_schedule")
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(),
        scheduled_execution_time=tick,
        repository_def=d.get_repository_def(),
    ) as ctx:
        data = schedule.evaluate_tick(ctx)
    assert data.skip_message is None, data.skip_message
    return list(data.run_requests or [])


def test_names_and_targets(dagster_home: Path) -> None:
    d, assets = build("0 2 * * *")
    job = d.resolve_job_def("shop_job")
    assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} == {"orders", "customers"}
    schedule = d.resolve_schedule_def("shop_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "shop_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # The resume job exists as soon as something can be paused.
    assert d.resolve_job_def(resume_job_name("shop")).name == "adu_resume_shop"


def test_tick_runs_the_day_that_just_ended(dagster_home: Path) -> None:
    d, _ = build("0 2 * * *")
    [req] = evaluate(d, datetime(2024, 5, 2, 2, 0, tzinfo=ZoneInfo("UTC")))
    assert req.partition_key == "2024-05-01"
    # A second tick on the next day runs the next partition, with its own run key.
    [req2] = evaluate(d, datetime(2024, 5, 3, 2, 0, tzinfo=ZoneInfo("UTC")))
    assert req2.partition_key == "2024-05-02"
    assert req.run_key != req2.run_key


def test_timezone_decides_the_day(dagster_home: Path) -> None:
    # 00:30 in Tokyo on 2 May is still 1 May in UTC: the partition must follow the component's zone.
    d, _ = build("30 0 * * *", tz="Asia/Tokyo")
    assert d.resolve_schedule_def("shop_schedule").execution_timezone == "Asia/Tokyo"
    [req] = evaluate(d, datetime(2024, 5, 2, 0, 30, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert req.partition_key == "2024-05-01"


def test_sub_daily_cron_reruns_the_last_finished_day(dagster_home: Path) -> None:
    d, _ = build("*/30 * * * *")
    a = evaluate(d, datetime(2024, 5, 2, 10, 0, tzinfo=ZoneInfo("UTC")))
    b = evaluate(d, datetime(2024, 5, 2, 10, 30, tzinfo=ZoneInfo("UTC")))
    assert [r.partition_key for r in a + b] == ["2024-05-01", "2024-05-01"]
    assert a[0].run_key != b[0].run_key


def test_before_the_first_partition_ends_it_skips(dagster_home: Path) -> None:
    d, _ = build("0 2 * * *", start="2024-05-02")
    schedule = d.resolve_schedule_def("shop_schedule")
    tick = datetime(2024, 5, 2, 2, 0, tzinfo=ZoneInfo("UTC"))
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(),
        scheduled_execution_time=tick,
        repository_def=d.get_repository_def(),
    ) as ctx:
        data = schedule.evaluate_tick(ctx)
    assert not data.run_requests
    assert data.skip_message is not None and "no partition has ended yet" in data.skip_message


def test_no_cron_means_job_but_no_schedule() -> None:
    d, _ = build(None)
    assert d.resolve_job_def("shop_job").name == "shop_job"
    assert list(d.schedules or []) == []
    assert [j.name for j in d.jobs or []] == ["shop_job"]  # nothing to pause, so no resume job


@pytest.mark.parametrize(
    ("cron", "tz", "message"),
    [
        ("every day", "UTC", "shop: schedule 'every day' is not a valid cron string"),
        ("0 2 * * *", "Mars/Olympus", "shop: timezone 'Mars/Olympus' is not an IANA time zone name"),
    ],
)
def test_bad_cron_or_timezone_names_the_component(cron: str, tz: str, message: str) -> None:
    partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    with pytest.raises(ValueError) as err:
        automation_defs(
            component_name="shop",
            assets=two_assets(partitions),
            cron=cron,
            timezone=tz,
            partitions_def=partitions,
        )
    assert message in str(err.value)


def test_network_retry_policy() -> None:
    policy = network_retry_policy()
    assert policy.max_retries == 3
    assert policy.backoff == dg.Backoff.EXPONENTIAL
    assert policy.jitter == dg.Jitter.PLUS_MINUS
    assert policy.delay and policy.delay > 0
