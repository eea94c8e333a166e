"""FileDrop end to end: YAML in ADU_DEFS_DIR -> sensor tick -> one run per real file -> Parquet + DuckDB."""

import json
import os
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from adu_assets.components.file_drop import FileDrop
from adu_assets.warehouse import LandingStore
from adu_assets_tests.defs_helpers import load, write_component

# Registered as adu_assets.FileDrop by the package; the module path works whether or not it is yet.
FILE_DROP_TYPE = "adu_assets.components.file_drop.FileDrop"
KEY = dg.AssetKey(["drops"])


@pytest.fixture
def env(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, dg.Definitions]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    defs_dir = tmp_path / "user_defs"
    write_component(
        defs_dir,
        "drops",
        FILE_DROP_TYPE,
        {"name": "drops", "folder": str(inbox), "glob": "*", "min_age_seconds": 600},
    )
    return inbox, tmp_path / "data", load(defs_dir, monkeypatch)


def settled(path: Path) -> Path:
    """Age a file past min_age_seconds, as if it had been dropped an hour ago."""
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def drop_all(inbox: Path) -> None:
    (inbox / "orders.csv").write_text("id,name\n1,ann\n2,bob\n3,cy\n")
    (inbox / "events.json").write_text(
        json.dumps([{"id": 10, "name": "open", "extra": True}, {"id": 11, "name": "close", "extra": False}])
    )
    (inbox / "clicks.ndjson").write_text(
        '{"id": 20, "name": "a"}\n{"id": 21, "name": "b"}\n{"id": 22, "name": "c"}\n{"id": 23, "name": "d"}\n'
    )
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT range AS id, 'p' || range AS name FROM range(5)) TO '{inbox / 'sales.parquet'}' (FORMAT parquet)"
    )
    con.close()
    (inbox / "broken.json").write_text('{"id": 1,,, "name": ')
    for p in inbox.iterdir():
        settled(p)


def tick(d: dg.Definitions, cursor: str | None) -> dg.SensorResult:
    sensor = d.resolve_sensor_def("drops_file_sensor")
    # instance_ref, as the daemon passes it: with it the tick sees its own new dynamic partitions.
    with dg.build_sensor_context(
        instance_ref=dg.DagsterInstance.get().get_ref(), cursor=cursor, repository_def=d.get_repository_def()
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    # What the daemon does with a tick's result: add the partitions it asked for.
    for request in data.dynamic_partitions_requests or []:
        dg.DagsterInstance.get().add_dynamic_partitions(
            request.partitions_def_name, list(request.partition_keys or [])
        )
    return dg.SensorResult(
        run_requests=list(data.run_requests or []), cursor=data.cursor, skip_reason=data.skip_message
    )


def run(d: dg.Definitions, partition: str) -> dg.ExecuteInProcessResult:
    return d.resolve_job_def("drops_job").execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key=partition, raise_on_error=False
    )


def warehouse_rows(data: Path) -> dict[str, int]:
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        return dict(con.execute("SELECT adu_partition, count(*) FROM drops.drops GROUP BY 1").fetchall())


def test_definitions(env: tuple[Path, Path, dg.Definitions]) -> None:
    _, _, d = env
    spec = d.resolve_assets_def(KEY).specs_by_key[KEY]
    assert spec.group_name == "drops"
    assert spec.kinds == {"file", "parquet", "duckdb"}
    assert isinstance(spec.partitions_def, dg.DynamicPartitionsDefinition)
    sensor = d.resolve_sensor_def("drops_file_sensor")
    assert sensor.job_name == "drops_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_each_file_runs_once_and_lands(env: tuple[Path, Path, dg.Definitions]) -> None:
    inbox, data, d = env
    drop_all(inbox)
    (inbox / "fresh.csv").write_text("id\n1\n")  # still being written, as far as anyone can tell

    first = tick(d, None)
    by_file = {r.partition_key: r for r in first.run_requests or []}
    assert sorted(by_file) == ["broken.json", "clicks.ndjson", "events.json", "orders.csv", "sales.parquet"]
    assert first.cursor is not None and "fresh.csv" not in json.loads(first.cursor)

    results = {f: run(d, f) for f in by_file}
    assert {f for f, r in results.items() if r.success} == {
        "clicks.ndjson",
        "events.json",
        "orders.csv",
        "sales.parquet",
    }

    expected = {"orders.csv": 3, "events.json": 2, "clicks.ndjson": 4, "sales.parquet": 5}
    for name, rows in expected.items():
        [mat] = results[name].asset_materializations_for_node("drops")
        assert mat.metadata["dagster/row_count"].value == rows
        assert mat.partition == name
        parquet = data / "parquet" / "drops" / f"adu_partition={name}" / "*.parquet"
        assert duckdb.sql(f"SELECT count(*) FROM '{parquet}'").fetchone() == (rows,)
    assert warehouse_rows(data) == expected
    # events.json brought an extra column; the warehouse table grew to hold it.
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        assert con.execute("SELECT count(extra) FROM drops.drops").fetchone() == (2,)

    # The bad file went to quarantine with its reason, and its run failed saying so.
    assert not (inbox / "broken.json").exists()
    assert (inbox / "quarantine" / "broken.json").exists()
    reason = (inbox / "quarantine" / "broken.json.reason.txt").read_text()
    assert "Malformed JSON" in reason and results["broken.json"].run_id in reason
    failure = results["broken.json"].get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "broken.json was quarantined to" in failure.message

    # Re-tick: nothing new (the quarantine folder is not watched, processed files are in the cursor).
    again = tick(d, first.cursor)
    assert not again.run_requests
    assert again.skip_reason is not None and "no new files" in str(again.skip_reason)

    # The fresh file once it has settled, and a new version of orders.csv: exactly those two.
    settled(inbox / "fresh.csv")
    (inbox / "orders.csv").write_text("id,name\n1,ann\n2,bob\n")
    os.utime(inbox / "orders.csv", (time.time() - 1800, time.time() - 1800))
    third = tick(d, again.cursor)
    assert sorted(r.partition_key for r in third.run_requests or []) == ["fresh.csv", "orders.csv"]
    assert run(d, "orders.csv").success
    # The file's rows were replaced, not appended.
    assert warehouse_rows(data)["orders.csv"] == 2
    assert not tick(d, third.cursor).run_requests


def test_wrong_extension_and_bad_parquet_are_quarantined(env: tuple[Path, Path, dg.Definitions]) -> None:
    inbox, _, d = env
    (inbox / "notes.xlsx").write_bytes(b"PK\x03\x04 not really")
    settled(inbox / "notes.xlsx")
    (inbox / "fake.parquet").write_bytes(b"this is not parquet")
    settled(inbox / "fake.parquet")
    requests = tick(d, None).run_requests or []
    assert sorted(r.partition_key for r in requests) == ["fake.parquet", "notes.xlsx"]
    for name in ("fake.parquet", "notes.xlsx"):
        assert not run(d, name).success
        assert (inbox / "quarantine" / f"{name}.reason.txt").exists()
    assert "from its extension" in (inbox / "quarantine" / "notes.xlsx.reason.txt").read_text()


def test_yaml_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="max_files_per_tick must be 1 or more"):
        FileDrop.model_validate({"name": "x", "folder": "/tmp", "max_files_per_tick": 0})
    with pytest.raises(ValueError, match="must be letters, digits and underscores"):
        FileDrop.model_validate({"name": "has space", "folder": "/tmp"})


def test_limit_per_tick_and_start_date(tmp_path: Path, dagster_home: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    component = FileDrop.model_validate(
        {
            "name": "d",
            "folder": str(inbox),
            "glob": "*.csv",
            "max_files_per_tick": 2,
            "start_date": "2020-01-01",
        }
    )
    for i in range(3):
        (inbox / f"f{i}.csv").write_text("a\n1\n")
        settled(inbox / f"f{i}.csv")
    ancient = inbox / "ancient.csv"
    ancient.write_text("a\n1\n")
    os.utime(ancient, (1_000_000_000, 1_000_000_000))  # 2001: before start_date
    (inbox / "skip.json").write_text("[]")
    settled(inbox / "skip.json")
    first = component.evaluate_sensor(None, now=time.time())
    assert len(first.run_requests or []) == 2
    second = component.evaluate_sensor(first.cursor, now=time.time())
    assert len(second.run_requests or []) == 1
    assert not component.evaluate_sensor(second.cursor, now=time.time()).run_requests
    assert sorted(json.loads(second.cursor or "{}")) == ["f0.csv", "f1.csv", "f2.csv"]
