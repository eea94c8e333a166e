"""The code location: components from the defs folder, plus resources and the executor."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from adu_assets.automation.sensors import merge_pool_limits, pool_limits_sensor
from adu_assets.components.api_ingest import UPSERT_IO_MANAGER_KEY
from adu_assets.defs_loader import DEFS_DIR_ENV, load_location, problem_sensors
from adu_assets.io_managers.tables import landing_resources
from adu_assets.io_managers.upsert.io_manager import UpsertIOManager
from adu_assets.secrets import install_log_redaction

# Dagster flags backfill policies and code references as beta; they are the documented 1.13 way, so the
# warnings would only bury real messages in every run's log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def executor() -> dg.ExecutorDefinition:
    # Measured on 2 cores: 10 no-op assets took 3.9 s in-process and 19-27 s with the multiprocess executor,
    # and each export already uses every core inside DuckDB. So in-process is the default; set
    # ADU_MAX_CONCURRENT > 1 to run steps in parallel processes (bounded further by per-source pools).
    # ADU_EXECUTOR=celery sends steps to `adu worker` processes on other hosts (see adu_assets/scale_out.py).
    from adu_assets.scale_out import celery_executor, executor_kind

    if executor_kind() == "celery":
        return celery_executor()
    n = int(os.environ.get("ADU_MAX_CONCURRENT", "1"))
    if n <= 1:
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"max_concurrent": n})


_frozen = False


@contextmanager
def long_lived_build() -> Iterator[None]:
    """Build objects that live as long as the process (the definitions) without paying the cyclic GC for them.

    Building 200 tables' definitions allocates a few hundred thousand objects that are never freed: the
    cyclic collector rescanning them during the build cost 0.2-0.4 s, and again at interpreter exit (each
    run worker, `dagster asset materialize`, `dg check defs`) 0.4 s. So the collector is paused during the
    build, and after the first successful build the survivors are moved to the permanent generation
    (`gc.freeze()`, the CPython documented use: objects that live until exit). Later builds in the same
    process (tests, a reload) are not frozen, so their garbage is collected as usual.
    """
    global _frozen
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if not _frozen:
            _frozen = True
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


@dg.definitions
def defs() -> dg.Definitions:
    with long_lived_build():
        return build_defs()


def build_defs() -> dg.Definitions:
    install_log_redaction()
    if not os.environ.get(DEFS_DIR_ENV):
        # The packaged demo reads databases that are generated on first use (about a second, once).
        from adu_assets.demo import ensure_demo_sources

        ensure_demo_sources()
    # A broken YAML file does not stop the others: it becomes a sensor whose skip reason names the
    # file, line, field and fix (and an error line in this process's log).
    location = load_location()
    if location.problems and os.environ.get("DAGSTER_IS_DEFS_VALIDATION_CLI") == "1":
        # `dg check defs` and `dagster definitions validate` set this: there a broken file must fail the
        # command (a CI gate), while the UI, the daemon and run workers keep the other sources running.
        raise dg.DagsterInvalidDefinitionError(
            f"{len(location.problems)} component file(s) do not load:\n"
            + "\n".join(str(p) for p in location.problems)
        )
    pools = location.pools
    return dg.Definitions.merge(
        location.defs,
        dg.Definitions(
            # Keeps each source's Dagster pool limit equal to its YAML `max_parallel`.
            sensors=([pool_limits_sensor(merge_pool_limits(pools))] if pools else [])
            + problem_sensors(location.problems),
            resources={
                # The same objects the DatabaseExport components carry (Definitions.merge needs that).
                **landing_resources(),
                UPSERT_IO_MANAGER_KEY: UpsertIOManager(),
            },
            executor=executor(),
        ),
    )
