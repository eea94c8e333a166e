"""The circuit breaker against a real DagsterInstance: real failed runs pause the schedule, the resume job
(run in process and from the CLI) resumes it. Also: pool limits from YAML are enforced by the instance."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.automation import apply_pool_limits, merge_pool_limits, pool_limits_sensor
from adu_assets.automation.circuit_breaker import ROOT_RUN_TAG, SCHEDULE_TAG

TICK = datetime(2024, 5, 2, 2, 0, tzinfo=UTC)
DAGSTER = str(Path(sys.executable).parent / "dagster")

# The same definitions as a file, so the `dagster` CLI can load them. The flag file makes the asset fail.
DEFS_SOURCE = """
import os
from pathlib import Path

import dagster as dg

from adu_assets.automation import automation_defs

partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@dg.asset(key=["shop", "public", "orders"], partitions_def=partitions)
def orders() -> None:
    flag = Path(os.environ["ADU_TEST_FAIL_FLAG"])
    if flag.exists():
        raise RuntimeError("source is down: " + flag.read_text())


defs = dg.Definitions.merge(
    dg.Definitions(assets=[orders]),
    automation_defs(
        component_name="shop", assets=[orders], cron="0 2 * * *", timezone="UTC",
        partitions_def=partitions, max_consecutive_failures=3,
    ),
)
"""


@pytest.fixture
def project(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, dg.Definitions]:
    defs_file = tmp_path / "breaker_defs.py"
    defs_file.write_text(DEFS_SOURCE)
    flag = tmp_path / "fail.flag"
    monkeypatch.setenv("ADU_TEST_FAIL_FLAG", str(flag))
    namespace: dict[str, object] = {}
    exec(compile(DEFS_SOURCE, str(defs_file), "exec"), namespace)
    d = namespace["defs"]
    assert isinstance(d, dg.Definitions)
    return defs_file, flag, d


def scheduled_run(
    d: dg.Definitions, *, fail_flag: Path | None = None, tags: dict[str, str] | None = None
) -> str:
    """A run of shop_job as the schedule would launch it (same job, same schedule tag)."""
    result = d.resolve_job_def("shop_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        partition_key="2024-05-01",
        tags={SCHEDULE_TAG: "shop_schedule", **(tags or {})},
        raise_on_error=False,
    )
    assert result.success is (fail_flag is None or not fail_flag.exists())
    return result.run_id


def tick(d: dg.Definitions) -> tuple[list[dg.RunRequest], str | None]:
    schedule = d.resolve_schedule_def("shop_schedule")
    with dg.build_schedule_context(
        instance=dg.DagsterInstance.get(),
        scheduled_execution_time=TICK,
        repository_def=d.get_repository_def(),
    ) as ctx:
        data = schedule.evaluate_tick(ctx)
    return list(data.run_requests or []), data.skip_message


def test_three_failures_pause_until_resumed_from_the_cli(project: tuple[Path, Path, dg.Definitions]) -> None:
    defs_file, flag, d = project
    flag.write_text("connection refused")

    scheduled_run(d, fail_flag=flag)
    scheduled_run(d, fail_flag=flag)
    requests, skip = tick(d)
    assert skip is None and [r.partition_key for r in requests] == ["2024-05-01"]  # 2 < 3: still running

    last = scheduled_run(d, fail_flag=flag)
    requests, skip = tick(d)
    assert requests == []
    assert skip is not None
    assert skip.startswith("paused after 3 consecutive failed runs of shop_job")
    assert f"last run {last} failed" in skip
    assert "dagster job execute -m adu_assets.definitions -j adu_resume_shop" in skip
    assert "Jobs -> adu_resume_shop -> Launchpad -> Launch run" in skip

    # A manual run that succeeds is not a resume: the schedule's own history decides.
    flag.unlink()
    manual = d.resolve_job_def("shop_job").execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key="2024-05-01"
    )
    assert manual.success
    assert tick(d)[1] is not None

    # Resume from the CLI, exactly as documented (with -f here, since the test's definitions are a file).
    out = subprocess.run(
        [DAGSTER, "job", "execute", "-f", str(defs_file), "-j", "adu_resume_shop"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    requests, skip = tick(d)
    assert skip is None and [r.partition_key for r in requests] == ["2024-05-01"]

    # Failures before the resume no longer count: it takes three new ones to pause again.
    flag.write_text("still down")
    scheduled_run(d, fail_flag=flag)
    scheduled_run(d, fail_flag=flag)
    assert tick(d)[1] is None
    scheduled_run(d, fail_flag=flag)
    skip = tick(d)[1]
    assert skip is not None and skip.startswith("paused after 3 consecutive failed runs")


def test_resume_job_in_process_and_success_breaks_the_streak(
    project: tuple[Path, Path, dg.Definitions],
) -> None:
    _, flag, d = project
    flag.write_text("boom")
    for _ in range(3):
        scheduled_run(d, fail_flag=flag)
    assert tick(d)[1] is not None
    assert d.resolve_job_def("adu_resume_shop").execute_in_process(instance=dg.DagsterInstance.get()).success
    assert tick(d)[1] is None

    # A success in between resets the count as well.
    flag.write_text("boom")
    scheduled_run(d, fail_flag=flag)
    scheduled_run(d, fail_flag=flag)
    flag.unlink()
    scheduled_run(d)
    flag.write_text("boom")
    scheduled_run(d, fail_flag=flag)
    scheduled_run(d, fail_flag=flag)
    assert tick(d)[1] is None


def test_run_retries_count_once(project: tuple[Path, Path, dg.Definitions]) -> None:
    _, flag, d = project
    flag.write_text("boom")
    first = scheduled_run(d, fail_flag=flag)
    # Two automatic retries of the same run (what run_retries creates: same root run id).
    scheduled_run(d, fail_flag=flag, tags={ROOT_RUN_TAG: first, "dagster/parent_run_id": first})
    scheduled_run(d, fail_flag=flag, tags={ROOT_RUN_TAG: first, "dagster/parent_run_id": first})
    assert tick(d)[1] is None  # one scheduled run that failed, not three
    scheduled_run(d, fail_flag=flag)
    scheduled_run(d, fail_flag=flag)
    assert tick(d)[1] is not None


# --- pools ----------------------------------------------------------------------------------------

POOL_JOB_SOURCE = """
import os
import time
from pathlib import Path

import dagster as dg

LOG = Path(os.environ["ADU_TEST_POOL_LOG"])


def step(name: str) -> None:
    # O_EXCL: creating the marker fails if another step of the pool is inside its critical section.
    marker = LOG / "inside"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        (LOG / f"overlap-{name}").write_text("two steps of one pool ran at once")
        raise
    os.close(fd)
    (LOG / f"{name}.start").write_text(repr(time.time()))
    time.sleep(1.0)
    (LOG / f"{name}.end").write_text(repr(time.time()))
    marker.unlink()


@dg.asset(pool="adu_postgres_db_5432_sales")
def table_a() -> None:
    step("a")


@dg.asset(pool="adu_postgres_db_5432_sales")
def table_b() -> None:
    step("b")


@dg.asset(pool="adu_postgres_db_5432_sales")
def table_c() -> None:
    step("c")


pool_job = dg.define_asset_job(
    "pool_job", selection=[table_a, table_b, table_c],
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": 3}),
)
defs = dg.Definitions(assets=[table_a, table_b, table_c], jobs=[pool_job])
"""


def test_pool_limit_from_yaml_is_set_on_the_instance(dagster_home: Path) -> None:
    instance = dg.DagsterInstance.get()
    limits = merge_pool_limits(
        [("adu_postgres_db_5432_sales", 2), ("adu_postgres_db_5432_sales", 1), ("adu_duckdb_x", 4)]
    )
    assert limits == {"adu_postgres_db_5432_sales": 1, "adu_duckdb_x": 4}
    assert apply_pool_limits(instance, limits) == {
        "adu_duckdb_x": (None, 4),
        "adu_postgres_db_5432_sales": (None, 1),
    }
    info = instance.event_log_storage.get_concurrency_info("adu_postgres_db_5432_sales")
    assert info.slot_count == 1
    assert apply_pool_limits(instance, limits) == {}  # already in sync: nothing written

    # The daemon-side sensor brings an edited YAML's limit to the instance.
    sensor = pool_limits_sensor({"adu_postgres_db_5432_sales": 3})
    with dg.build_sensor_context(instance=instance) as ctx:
        data = sensor.evaluate_tick(ctx)
    assert data.skip_message is not None and "adu_postgres_db_5432_sales=3" in data.skip_message
    assert instance.event_log_storage.get_concurrency_info("adu_postgres_db_5432_sales").slot_count == 3


@pytest.mark.slow
def test_steps_of_one_pool_never_overlap_under_the_multiprocess_executor(
    tmp_path: Path, dagster_home: Path
) -> None:
    apply_pool_limits(dg.DagsterInstance.get(), {"adu_postgres_db_5432_sales": 1})
    job_file = tmp_path / "pool_defs.py"
    job_file.write_text(POOL_JOB_SOURCE)
    log = tmp_path / "pool_log"
    log.mkdir()
    out = subprocess.run(
        [DAGSTER, "job", "execute", "-f", str(job_file), "-j", "pool_job"],
        env={**os.environ, "ADU_TEST_POOL_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not list(log.glob("overlap-*"))
    spans = sorted(
        (float((log / f"{n}.start").read_text()), float((log / f"{n}.end").read_text())) for n in "abc"
    )
    # Each step started only after the previous one had ended: the pool held them to one at a time.
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end
    # And the limit was the reason: the steps were blocked waiting for the pool's slot.
    assert "Step blocked by limit for pool adu_postgres_db_5432_sales" in out.stdout + out.stderr
