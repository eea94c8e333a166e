"""Scale-out: steps run on Celery workers (`adu worker`) over one shared data folder and warehouse.

Switched by settings only: `ADU_EXECUTOR=celery` and `ADU_CELERY_BROKER=redis://host:6379/0` (or
`amqp://user@host:5672//`; the password, if any, stays in that variable). The run's orchestrator and every
worker must then write the same place, so this module refuses to go on when they would not:

- the warehouse catalog must be PostgreSQL (`ADU_WAREHOUSE_CATALOG=postgresql://...`): the embedded SQLite
  catalog lives on one host's disk and cannot take commits from several hosts;
- the data folder must be the run's: the orchestrator stamps the run with its folder and the id in
  `<ADU_DATA_DIR>/.adu_store_id`, and a worker whose folder has another id (a local disk where the shared
  volume should be mounted) refuses the step.

Checked when `adu worker` starts, when a run starts under Celery, and when a worker takes a step.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from adu_assets.warehouse import CATALOG_ENV, DATA_DIR_ENV, LandingStore

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan

EXECUTOR_ENV = "ADU_EXECUTOR"
BROKER_ENV = "ADU_CELERY_BROKER"
BACKEND_ENV = "ADU_CELERY_BACKEND"
STORE_ID_FILE = ".adu_store_id"
DATA_DIR_TAG = "adu/data_dir"
STORE_ID_TAG = "adu/store_id"
CATALOG_TAG = "adu/warehouse_catalog"
# Step metadata that names the worker process that ran a step (engine event "adu worker ... took step").
WORKER_METADATA = "adu/worker"

_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")


class ScaleOutError(Exception):
    """A setting that makes a worker or a Celery run write somewhere nobody reads."""


def executor_kind() -> str:
    """`celery` or `in_process` (default), from ADU_EXECUTOR."""
    kind = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "in_process"
    if kind not in ("celery", "in_process"):
        raise ScaleOutError(
            f"{EXECUTOR_ENV}={kind!r} is not known: use `celery` (steps on `adu worker` processes) or leave it "
            "unset (steps in the run's own process)"
        )
    return kind


def without_password(url: str) -> str:
    """The URL with any password replaced by ***, for messages and run tags."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_url() -> str:
    url = os.environ.get(BROKER_ENV, "").strip()
    if not url:
        raise ScaleOutError(
            f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, the broker inside your network, e.g. "
            f"{BROKER_ENV}=redis://broker-host:6379/0 or amqp://user:password@broker-host:5672//"
        )
    scheme = urlsplit(url).scheme
    if scheme not in _BROKER_SCHEMES:
        raise ScaleOutError(
            f"{BROKER_ENV}={without_password(url)} is not a Redis or RabbitMQ URL: it must start with "
            + " or ".join(f"{s}://" for s in _BROKER_SCHEMES)
        )
    return url


def _backend_source() -> str | dict[str, str]:
    """Where step results travel back: ADU_CELERY_BACKEND, else the Redis broker itself, else rpc://."""
    if os.environ.get(BACKEND_ENV):
        return {"env": BACKEND_ENV}
    if urlsplit(broker_url()).scheme in ("redis", "rediss"):
        return {"env": BROKER_ENV}
    return "rpc://"


def celery_executor_config() -> dict[str, Any]:
    """Executor config that names environment variables only, so no broker password is stored in the run
    config or shown in the UI; the values are read when a run starts."""
    broker_url()  # fail at load time with a clear message rather than in every run
    return {"broker": {"env": BROKER_ENV}, "backend": _backend_source()}


def worker_app_args() -> dict[str, Any]:
    """The Celery app arguments of a worker, from the same variables as the executor's."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor

    backend = _backend_source()
    executor = CeleryExecutor(  # type: ignore[no-untyped-call]
        retries=RetryMode(RetryMode.DISABLED),
        broker=broker_url(),
        backend=os.environ[backend["env"]] if isinstance(backend, dict) else backend,
    )
    args: dict[str, Any] = executor.app_args()  # type: ignore[no-untyped-call]
    return args


# --- shared storage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedStorage:
    data_dir: Path
    store_id: str
    catalog: str  # without password

    def tags(self) -> dict[str, str]:
        return {DATA_DIR_TAG: str(self.data_dir), STORE_ID_TAG: self.store_id, CATALOG_TAG: self.catalog}


def warehouse_catalog(store: LandingStore | None = None) -> str:
    store = store or LandingStore()
    return (store.catalog or os.environ.get(CATALOG_ENV, "")).strip()


def _catalog_identity(catalog: str) -> tuple[str, int, str]:
    parts = urlsplit(catalog)
    return (parts.hostname or "", parts.port or 5432, parts.path.lstrip("/"))


def require_shared_catalog(store: LandingStore | None = None) -> str:
    """The PostgreSQL catalog (as the warehouse labels it, without password); refuses the SQLite catalog."""
    store = store or LandingStore()
    # The warehouse's own test, so that what passes here is what it attaches as PostgreSQL.
    if not store.is_postgres_catalog():
        catalog = warehouse_catalog(store)
        found = (
            f"{CATALOG_ENV}={without_password(catalog)}, a SQLite catalog file"
            if catalog
            else f"the embedded SQLite catalog in {store.root()}"
        )
        raise ScaleOutError(
            f"the warehouse is {found}, which only this host can write. Steps on Celery workers need one "
            f"catalog every host reaches: set {CATALOG_ENV}=postgresql://user@db-host:5432/database (password in "
            "PGPASSWORD) for the code server and every worker"
        )
    return store.catalog_label()


def read_store_id(root: Path, *, create: bool) -> str | None:
    """The id of a data folder (`.adu_store_id`), created once by whoever runs first when `create`."""
    path = root / STORE_ID_FILE
    if not path.exists() and create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass  # another process made it between our check and our open
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(uuid.uuid4().hex + "\n")
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def check_worker_start(store: LandingStore | None = None) -> SharedStorage:
    """The start-up guard of `adu worker`: a PostgreSQL catalog and an explicit, writable shared data folder."""
    store = store or LandingStore()
    catalog = require_shared_catalog(store)
    if not store.data_dir and not os.environ.get(DATA_DIR_ENV):
        raise ScaleOutError(
            f"{DATA_DIR_ENV} is not set: a worker must write the same data folder as the code server. Mount the "
            f"shared volume on this host and set {DATA_DIR_ENV} to its path"
        )
    root = store.root()
    if not root.is_dir():
        raise ScaleOutError(
            f"{DATA_DIR_ENV}={root} does not exist on this host: mount the shared data volume there (the folder "
            "the code server uses)"
        )
    if not os.access(root, os.W_OK):
        raise ScaleOutError(f"{DATA_DIR_ENV}={root} is not writable by this worker's user")
    store_id = read_store_id(root, create=True)
    if store_id is None:
        raise ScaleOutError(f"cannot read {root / STORE_ID_FILE}")
    return SharedStorage(root, store_id, catalog)


def stamp_run(instance: dg.DagsterInstance, run_id: str, store: LandingStore | None = None) -> SharedStorage:
    """Record on the run which data folder and catalog its steps must write (the orchestrator's)."""
    store = store or LandingStore()
    catalog = require_shared_catalog(store)
    root = store.root()
    root.mkdir(parents=True, exist_ok=True)
    store_id = read_store_id(root, create=True)
    assert store_id is not None
    shared = SharedStorage(root, store_id, catalog)
    instance.add_run_tags(run_id, shared.tags())
    return shared


def check_step_storage(run_tags: Mapping[str, str], store: LandingStore | None = None) -> SharedStorage:
    """A worker taking a step: its catalog and data folder must be the ones the run was stamped with."""
    store = store or LandingStore()
    mine = check_worker_start(store)
    expected_dir, expected_id = run_tags.get(DATA_DIR_TAG), run_tags.get(STORE_ID_TAG)
    if expected_id is None or expected_dir is None:
        raise ScaleOutError(
            "this run carries no data folder stamp: it was not started by the ADU Celery executor "
            f"(set {EXECUTOR_ENV}=celery on the code server as well as on the workers)"
        )
    if mine.store_id != expected_id:
        raise ScaleOutError(
            f"this worker's data folder {mine.data_dir} (id {mine.store_id}) is not the run's data folder "
            f"{expected_dir} (id {expected_id}): mount the same shared volume on every worker and set "
            f"{DATA_DIR_ENV} to it"
        )
    if str(mine.data_dir) != expected_dir:
        # The same volume under another path: the warehouse catalog records file paths under the run's
        # folder, so every host must mount it at the same place.
        raise ScaleOutError(
            f"this worker mounts the run's data folder at {mine.data_dir}, not at {expected_dir}: mount the shared "
            f"volume at the same path on every host and set {DATA_DIR_ENV}={expected_dir}"
        )
    expected_catalog = run_tags.get(CATALOG_TAG, "")
    if _catalog_identity(mine.catalog) != _catalog_identity(expected_catalog):
        raise ScaleOutError(
            f"this worker's warehouse catalog {mine.catalog} is not the run's ({expected_catalog}): set the same "
            f"{CATALOG_ENV} on every worker and on the code server"
        )
    return mine


# --- the executor and the worker's task ------------------------------------------------------------


def _celery_executor_class() -> type:
    from dagster_celery.executor import CeleryExecutor

    class SharedStorageCeleryExecutor(CeleryExecutor):  # type: ignore[misc]
        """dagster-celery's executor, which first checks and stamps the shared storage on the run.

        Steps are still dispatched by dagster-celery's own loop, which claims each step's pool slot in the
        instance before sending it and frees it when the step's result comes back: per-source limits hold
        across any number of workers and runs.
        """

        def execute(
            self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
        ) -> Iterator[dg.DagsterEvent]:
            shared = stamp_run(plan_context.instance, plan_context.dagster_run.run_id)
            plan_context.log.info(
                f"steps go to Celery workers; they must write data folder {shared.data_dir} "
                f"(id {shared.store_id}) and warehouse catalog {shared.catalog}"
            )
            # dagster-celery frees a step's pool slot only when a success or failure event comes back; a
            # task that raised (a refused step, a worker killed mid-step) would hold its slot, and starve its
            # source, until someone frees it in the UI. Once the loop has finished, or stopped on such step
            # errors, no step of this run is in flight, so what the run still holds is a leftover. On any
            # other exception (the broker lost) steps may still run on workers: their slots stay claimed.
            from dagster._core.errors import DagsterSubprocessError

            try:
                yield from super().execute(plan_context, execution_plan)  # type: ignore[no-untyped-call]
            except DagsterSubprocessError:
                self._free_leftover_slots(plan_context)
                raise
            self._free_leftover_slots(plan_context)

        @staticmethod
        def _free_leftover_slots(plan_context: PlanOrchestrationContext) -> None:
            plan_context.instance.event_log_storage.free_concurrency_slots_for_run(
                plan_context.dagster_run.run_id
            )

    return SharedStorageCeleryExecutor


def celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's `celery_executor` (same name and config schema), guarded and configured from ADU_CELERY_*."""
    from dagster import multiple_process_executor_requirements
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CELERY_CONFIG

    executor_class = _celery_executor_class()

    @dg.executor(
        name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements()
    )
    def adu_celery_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        config = init_context.executor_config
        executor: dg.Executor = executor_class(
            broker=config.get("broker"),
            backend=config.get("backend"),
            config_source=config.get("config_source"),
            include=config.get("include"),
            retries=RetryMode.from_config(config["retries"]),  # type: ignore[arg-type]
        )
        return executor

    return adu_celery_executor.configured(celery_executor_config())


def _guard_step(task_kwargs: Mapping[str, Any]) -> None:
    """Runs in the worker before dagster-celery executes a step: refuse it on the wrong storage."""
    from dagster._core.events import EngineEventData
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import unpack_value

    args = unpack_value(dict(task_kwargs["execute_step_args_packed"]), as_type=ExecuteStepArgs)
    assert args.instance_ref is not None
    step_keys = ", ".join(args.step_keys_to_execute or [])
    worker = f"{socket.gethostname()} pid {os.getpid()}"
    with dg.DagsterInstance.from_ref(args.instance_ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None:
            raise ScaleOutError(f"run {args.run_id} is not in this worker's Dagster instance")
        step_key = args.step_keys_to_execute[0] if args.step_keys_to_execute else None
        try:
            shared = check_step_storage(run.tags)
        except ScaleOutError as e:
            instance.report_engine_event(
                f"adu worker {worker} refused step {step_keys}: {e}",
                run,
                EngineEventData({WORKER_METADATA: worker}),
                step_key=step_key,
            )
            raise
        instance.report_engine_event(
            f"adu worker {worker} took step {step_keys}",
            run,
            EngineEventData(
                {WORKER_METADATA: worker, "data folder": str(shared.data_dir), "catalog": shared.catalog}
            ),
            step_key=step_key,
        )


def make_worker_app() -> Any:
    """The Celery app `adu worker` runs (`celery -A adu_assets.scale_out`): dagster-celery's app and task,
    with the broker from ADU_CELERY_BROKER and the storage guard in front of each step."""
    from celery import Task
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    class GuardedStep(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            _guard_step(kwargs)
            return super().__call__(*args, **kwargs)

    # Celery logs each task's return value at INFO: here that is the step's serialized events, previews of
    # landed rows included. The worker log keeps the task, its id and its duration only.
    from celery.app import trace

    trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

    app = make_app(worker_app_args())  # type: ignore[no-untyped-call]
    create_task(app, base=GuardedStep)  # type: ignore[no-untyped-call]
    return app


def __getattr__(name: str) -> Any:
    # `celery -A adu_assets.scale_out` looks up `app`: built on first use so that importing this module
    # (the code server does) needs no broker setting.
    if name == "app":
        app = make_worker_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
