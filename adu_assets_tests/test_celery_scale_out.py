"""Scale-out settings and guards without a running worker: executor choice, `adu worker` refusals, the
per-step storage check against a real Dagster instance, the broker fixture, and deploy/compose.yaml."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import dagster as dg
import pytest
import yaml

from adu_assets import scale_out
from adu_assets.cli import main as adu_cli
from adu_assets.cli.worker import worker_command
from adu_assets.definitions import executor
from adu_assets_tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
BROKER_PASSWORD = "br0ker-S3cret-pw"
CATALOG = "postgresql://adu@catalog-host:5432/warehouse"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (
        "ADU_EXECUTOR",
        "ADU_CELERY_BROKER",
        "ADU_CELERY_BACKEND",
        "ADU_WAREHOUSE_CATALOG",
        "ADU_MAX_CONCURRENT",
    ):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "shared_volume"
    data.mkdir()
    monkeypatch.setenv("ADU_DATA_DIR", str(data))
    return data


def test_default_executor_stays_in_process(clean_env: Path) -> None:
    assert executor() is dg.in_process_executor


def test_celery_executor_reads_broker_from_environment_only(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADU_EXECUTOR", "Celery")
    monkeypatch.setenv("ADU_CELERY_BROKER", f"redis://:{BROKER_PASSWORD}@broker:6379/0")
    ex = executor()
    assert ex.name == "celery"
    # The job (what the UI and GraphQL see) holds no broker URL; it is read from the environment when a
    # run starts its executor.
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._serdes import serialize_value

    job = dg.GraphDefinition("g").to_job(executor_def=ex)
    assert BROKER_PASSWORD not in serialize_value(job.get_job_snapshot())
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    with dg.DagsterInstance.ephemeral() as instance:
        built = ex.executor_creation_fn(  # type: ignore[misc]
            InitExecutorContext(
                job=InMemoryJob(job), executor_def=ex, executor_config=config, instance=instance
            )
        )
    assert built.broker == built.backend == f"redis://:{BROKER_PASSWORD}@broker:6379/0"
    assert type(built).__name__ == "SharedStorageCeleryExecutor"
    # Redis carries the results too; RabbitMQ uses rpc:// unless ADU_CELERY_BACKEND says otherwise.
    assert scale_out.celery_executor_config()["backend"] == {"env": "ADU_CELERY_BROKER"}
    monkeypatch.setenv("ADU_CELERY_BROKER", "amqp://adu:pw@rabbit:5672//")
    assert scale_out.celery_executor_config()["backend"] == "rpc://"
    monkeypatch.setenv("ADU_CELERY_BACKEND", "redis://results:6379/1")
    assert scale_out.celery_executor_config()["backend"] == {"env": "ADU_CELERY_BACKEND"}
    args = scale_out.worker_app_args()
    assert args["broker"] == "amqp://adu:pw@rabbit:5672//" and args["backend"] == "redis://results:6379/1"
    assert args["config_source"].worker_prefetch_multiplier == 1


def test_celery_without_or_with_a_bad_broker_says_which_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADU_EXECUTOR", "celery")
    with pytest.raises(scale_out.ScaleOutError, match="needs ADU_CELERY_BROKER"):
        executor()
    monkeypatch.setenv("ADU_CELERY_BROKER", f"http://user:{BROKER_PASSWORD}@broker:6379/0")
    with pytest.raises(scale_out.ScaleOutError) as err:
        executor()
    assert "redis://" in str(err.value) and BROKER_PASSWORD not in str(err.value)
    assert "http://user:***@broker:6379/0" in str(err.value)
    monkeypatch.setenv("ADU_EXECUTOR", "k8s")
    with pytest.raises(scale_out.ScaleOutError, match="ADU_EXECUTOR='k8s' is not known"):
        executor()


def test_worker_command_has_no_secret_and_follows_dagster_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADU_CELERY_BROKER", f"redis://:{BROKER_PASSWORD}@broker:6379/0")
    cmd = worker_command(
        argparse.Namespace(concurrency=3, queue=["exports", "big"], name=None, loglevel="INFO")
    )
    assert cmd[1:7] == ["-m", "celery", "-A", "adu_assets.scale_out", "worker", "--prefetch-multiplier=1"]
    assert cmd[cmd.index("--concurrency") + 1] == "3"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-Q"] == ["exports", "big"]
    name = cmd[cmd.index("-n") + 1]
    assert name.startswith("adu-") and name.endswith("@%h")
    assert not any(BROKER_PASSWORD in a or "redis://" in a for a in cmd)
    with pytest.raises(ValueError, match="at most 4 queues"):
        worker_command(argparse.Namespace(concurrency=1, queue=list("abcde"), name=None, loglevel="INFO"))
    with pytest.raises(ValueError, match="--concurrency"):
        worker_command(argparse.Namespace(concurrency=0, queue=None, name="w", loglevel="INFO"))


def test_worker_refuses_embedded_catalog(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADU_CELERY_BROKER", "redis://127.0.0.1:1/0")
    assert adu_cli(["worker"]) == 2
    err = capsys.readouterr().err
    assert "embedded SQLite catalog" in err and str(clean_env) in err
    assert "ADU_WAREHOUSE_CATALOG=postgresql://" in err
    # A catalog that is not PostgreSQL is refused as well, with its password hidden.
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", "/nfs/adu/warehouse.sqlite")
    assert adu_cli(["worker"]) == 2
    err = capsys.readouterr().err
    assert (
        "ADU_WAREHOUSE_CATALOG=/nfs/adu/warehouse.sqlite, a SQLite catalog file, which only this host" in err
    )
    # A PostgreSQL URL in a form the warehouse would not attach as PostgreSQL is refused too.
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", "postgresql+psycopg2://adu@catalog-host:5432/warehouse")
    assert adu_cli(["worker"]) == 2
    assert "which only this host can write" in capsys.readouterr().err


def test_worker_refuses_a_data_folder_it_cannot_share(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("ADU_CELERY_BROKER", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", CATALOG)
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "not mounted"))
    assert adu_cli(["worker"]) == 2
    assert "does not exist on this host: mount the shared data volume" in capsys.readouterr().err
    monkeypatch.delenv("ADU_DATA_DIR")
    assert adu_cli(["worker"]) == 2
    assert "ADU_DATA_DIR is not set" in capsys.readouterr().err
    monkeypatch.delenv("ADU_CELERY_BROKER")
    monkeypatch.setenv("ADU_DATA_DIR", str(clean_env))
    assert adu_cli(["worker"]) == 2
    assert "needs ADU_CELERY_BROKER" in capsys.readouterr().err


def test_store_id_is_created_once(tmp_path: Path) -> None:
    first = scale_out.read_store_id(tmp_path, create=True)
    assert first and len(first) == 32
    assert scale_out.read_store_id(tmp_path, create=True) == first
    assert scale_out.read_store_id(tmp_path / "other", create=False) is None


def test_step_storage_must_be_the_runs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", CATALOG)
    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
        stamped = scale_out.stamp_run(instance, run.run_id)
        tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
    assert tags[scale_out.STORE_ID_TAG] == stamped.store_id
    # The warehouse's label of its catalog: host, port and database, no user or password.
    assert tags[scale_out.CATALOG_TAG] == "postgresql://catalog-host:5432/warehouse"
    assert scale_out.check_step_storage(tags).store_id == stamped.store_id
    # The same path on another host is another disk: a different id is refused.
    local = tmp_path / "local_disk"
    local.mkdir()
    monkeypatch.setenv("ADU_DATA_DIR", str(local))
    with pytest.raises(scale_out.ScaleOutError) as err:
        scale_out.check_step_storage(tags)
    assert f"data folder {local}" in str(err.value) and str(clean_env) in str(err.value)
    # The same volume mounted under another path: the catalog's file paths would not resolve there.
    alias = tmp_path / "same_volume_elsewhere"
    alias.symlink_to(clean_env)
    monkeypatch.setenv("ADU_DATA_DIR", str(alias))
    with pytest.raises(scale_out.ScaleOutError, match=f"mounts the run's data folder at {alias}, not at"):
        scale_out.check_step_storage(tags)
    monkeypatch.setenv("ADU_DATA_DIR", str(clean_env))
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", "postgresql://adu:pw@catalog-host:5432/other")
    with pytest.raises(scale_out.ScaleOutError, match="is not the run's") as err:
        scale_out.check_step_storage(tags)
    assert ":pw@" not in str(err.value)
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", CATALOG)
    with pytest.raises(scale_out.ScaleOutError, match="no data folder stamp"):
        scale_out.check_step_storage({})


def test_run_start_refuses_embedded_catalog(clean_env: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
        with pytest.raises(scale_out.ScaleOutError, match="embedded SQLite catalog"):
            scale_out.stamp_run(instance, run.run_id)
        assert scale_out.DATA_DIR_TAG not in instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]


@dg.op
def one() -> int:
    return 1


@dg.job
def guarded_job() -> None:
    one()


def test_step_guard_reports_to_the_run(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dagster_home: Path
) -> None:
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import pack_value

    monkeypatch.setenv("ADU_DATA_DIR", str(clean_env))
    monkeypatch.setenv("ADU_WAREHOUSE_CATALOG", CATALOG)

    with dg.DagsterInstance.get() as instance:
        run = instance.create_run_for_job(guarded_job)
        scale_out.stamp_run(instance, run.run_id)

        def packed() -> dict[str, object]:
            args = ExecuteStepArgs(
                job_origin=dg.reconstructable(guarded_job).get_python_origin(),
                run_id=run.run_id,
                step_keys_to_execute=["one"],
                instance_ref=instance.get_ref(),
            )
            return {"execute_step_args_packed": pack_value(args)}

        scale_out._guard_step(packed())
        other = tmp_path / "elsewhere"
        other.mkdir()
        monkeypatch.setenv("ADU_DATA_DIR", str(other))
        with pytest.raises(scale_out.ScaleOutError, match="is not the run's data folder"):
            scale_out._guard_step(packed())
        messages = [
            (e.dagster_event.message or "", e.dagster_event.step_key)
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.dagster_event
        ]
    host = socket.gethostname()
    assert [m for m in messages if m[0].startswith("adu worker")] == [
        (f"adu worker {host} pid {__import__('os').getpid()} took step one", "one"),
        (messages[-1][0], "one"),
    ]
    assert "refused step one" in messages[-1][0] and "is not the run's data folder" in messages[-1][0]


def test_redis_fixture_requires_its_password(redis_broker: RedisServer) -> None:
    import redis

    assert redis_broker.client().ping()
    for password in ("wrong", None):
        with pytest.raises(redis.RedisError) as err:
            redis.Redis(host=redis_broker.host, port=redis_broker.port, password=password).set("k", "v")
        assert isinstance(err.value, redis.AuthenticationError) or "NOAUTH" in str(err.value)
    assert redis_broker.client().get("k") is None


def test_compose_has_a_broker_and_a_scalable_worker() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    broker, worker, code = services["redis"], services["worker"], services["code"]
    assert broker["image"].startswith("redis:")
    assert broker["networks"] == ["internal"] and "ports" not in broker
    # `--scale worker=4` needs no fixed name and no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:2] == ["adu", "worker"]
    assert worker["image"] == code["image"] == "adu-assets:0.1.0"
    for service in (worker, code):
        env = service["environment"]
        assert env["ADU_EXECUTOR"] == "celery"
        assert env["ADU_DATA_DIR"] == "/data"
        assert env["ADU_WAREHOUSE_CATALOG"].startswith("postgresql://")
        assert "adu-data:/data" in service["volumes"]
        # The broker URL (with its password) comes from .env, never from this file.
        assert "ADU_CELERY_BROKER" not in env
    assert "ADU_CELERY_BROKER" in (ROOT / "deploy" / "env.example").read_text()
    assert "redis" in worker["depends_on"]
