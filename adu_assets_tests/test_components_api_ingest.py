"""ApiIngest end to end: loopback REST API -> mappings -> checks -> upsert into a real PostgreSQL."""

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, run_partition, write_component
from adu_assets_tests.http_fixture_server import Reply, Seen, running_fixture_server
from adu_assets_tests.pg_server import PgServer

TOKEN = "Canary-Token-9b1d44"
KEY = dg.AssetKey(["hr_employees"])

RECORDS = [
    {"id": "1", "profile": {"address": {"city": "  oslo "}}, "updated": "2026-01-02T08:00:00+01:00"},
    {"id": "2", "profile": {"address": {"city": "lyon"}}, "updated": "2026-01-02T09:00:00Z"},
    {"id": "3", "profile": {"address": {"city": "austin"}}, "updated": "2026-01-02T10:00:00Z"},
    {"id": "not-a-number", "profile": {"address": {"city": "osaka"}}, "updated": "2026-01-02T11:00:00Z"},
]


def paged_api(seen: Seen) -> Reply:
    if seen.headers.get("authorization") != f"Bearer {TOKEN}":
        return Reply(401, {"error": "unauthorized"})
    start = int(seen.query.get("cursor") or 0)
    page = RECORDS[start : start + 2]
    nxt = start + 2 if start + 2 < len(RECORDS) else None
    return Reply(200, {"data": {"items": page}, "meta": {"next": nxt}})


@pytest.fixture
def hr_db(pg: PgServer, pg_db: str) -> str:
    with pg.connect(pg_db) as conn:
        conn.execute(
            "CREATE TABLE employees (employee_id int PRIMARY KEY, city text NOT NULL, updated_at timestamptz, "
            "processed char(1) NOT NULL DEFAULT 'N')"
        )
        conn.execute(
            "INSERT INTO employees VALUES (1, 'OLD', NULL, 'N'), (2, 'KEEP', NULL, 'Y')"
        )
    return pg_db


def task_yaml(url: str, pg: PgServer, db: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "hr_employees",
        "request": {
            "url": url,
            "params": {"updated_since": "{partition_start}", "day": "{partition_key}"},
            "auth": {"type": "bearer", "token_env": "HR_TOKEN"},
            "pagination": {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor"},
            "records_path": "data.items",
            "retry": {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05},
        },
        "start_date": "2026-01-01",
        "mappings": [
            {"source": "id", "target": "employee_id", "transforms": ["to_int"]},
            {"source": "profile.address.city", "target": "city", "transforms": ["trim", "upper"]},
            {"source": "updated", "target": "updated_at", "transforms": ["to_timestamp"]},
        ],
        "destination": {
            "connection": pg_connection_yaml(pg, db),
            "table": "employees",
            "mode": "upsert",
            "keys": ["employee_id"],
            "skip_when": {"column": "processed", "equals": "Y"},
        },
        **extra,
    }


def table(pg: PgServer, db: str) -> list[tuple[Any, ...]]:
    with pg.connect(db) as conn:
        return conn.execute("SELECT employee_id, city, processed FROM employees ORDER BY 1").fetchall()


def materialization(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}  # type: ignore[union-attr]


def test_fetch_map_and_upsert_with_skip(
    pg: PgServer, hr_db: str, pg_password_env: str, tmp_path: Path, dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HR_TOKEN", TOKEN)
    with running_fixture_server() as api:
        api.route("/employees", paged_api)
        write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest", task_yaml(api.url("/employees"), pg, hr_db))
        d = load(tmp_path / "defs", monkeypatch)
        spec = next(iter(d.resolve_all_asset_specs()))
        assert spec.key == KEY and spec.group_name == "hr_employees" and spec.kinds == {"api", "postgres"}
        result = run_partition(d, [KEY], "2026-01-02")
        assert result.success
        meta = materialization(result)
        assert len(api.requests("/employees")) == 2
        first = api.requests("/employees")[0]
        assert first.query["updated_since"] == "2026-01-02T00:00:00+00:00"
        assert first.query["day"] == "2026-01-02"

        assert (meta["inserted"], meta["updated"], meta["skipped"], meta["errors"]) == (1, 1, 1, 0)
        assert meta["mapping_errors"] == 1
        assert meta["records"] == 4 and meta["pages"] == 2
        assert meta["dagster/row_count"] == 3
        assert table(pg, hr_db) == [(1, "OSLO", "N"), (2, "KEEP", "Y"), (3, "AUSTIN", "N")]
        assert Path(str(meta["mapping_errors_path"])).exists()
        assert list((tmp_path / "data" / "raw" / "hr_employees" / "2026-01-02").glob("*.parquet"))
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"schema": True}

        # Re-running the partition changes nothing.
        again = materialization(run_partition(d, [KEY], "2026-01-02"))
        assert (again["inserted"], again["updated"], again["skipped"]) == (0, 0, 1)
        assert again["unchanged"] == 2
        assert table(pg, hr_db) == [(1, "OSLO", "N"), (2, "KEEP", "Y"), (3, "AUSTIN", "N")]

    needle = TOKEN.encode()
    assert [p for p in dagster_home.rglob("*") if p.is_file() and needle in p.read_bytes()] == []


def test_blocking_check_leaves_destination_untouched(
    pg: PgServer, hr_db: str, pg_password_env: str, tmp_path: Path, dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HR_TOKEN", TOKEN)
    before = table(pg, hr_db)
    with running_fixture_server() as api:
        api.route("/employees", paged_api)
        checks = {"columns": {"city": {"isin": ["OSLO", "LYON"]}}, "blocking": True}
        write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest",
                        task_yaml(api.url("/employees"), pg, hr_db, checks=checks))
        d = load(tmp_path / "defs", monkeypatch)
        result = run_partition(d, [KEY], "2026-01-02")
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["rules"].passed is False
    assert evaluations["rules"].severity == dg.AssetCheckSeverity.ERROR
    assert "city" in str(evaluations["rules"].metadata)
    assert result.get_asset_materialization_events() == []
    assert table(pg, hr_db) == before
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "employees was not touched" in failure.event_specific_data.error.to_string()  # type: ignore[union-attr]


def test_mapped_column_missing_in_destination_is_clear(
    pg: PgServer, hr_db: str, pg_password_env: str, tmp_path: Path, dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HR_TOKEN", TOKEN)
    before = table(pg, hr_db)
    with running_fixture_server() as api:
        api.route("/employees", paged_api)
        cfg = task_yaml(api.url("/employees"), pg, hr_db)
        cfg["mappings"].append({"source": "profile.address.city", "target": "region"})
        write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest", cfg)
        result = run_partition(load(tmp_path / "defs", monkeypatch), [KEY], "2026-01-02")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "region" in text and "employees" in text
    assert table(pg, hr_db) == before


def test_unauthorized_fails_once_without_retry(
    pg: PgServer, hr_db: str, pg_password_env: str, tmp_path: Path, dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HR_TOKEN", "wrong-token-value")
    with running_fixture_server() as api:
        api.route("/employees", paged_api)
        write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest", task_yaml(api.url("/employees"), pg, hr_db))
        result = run_partition(load(tmp_path / "defs", monkeypatch), [KEY], "2026-01-02")
        assert not result.success
        # Neither the client nor Dagster's step retry policy repeats a 401.
        assert len(api.requests("/employees")) == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "401" in text and "wrong-token-value" not in text


@pytest.mark.slow
def test_drift_profile_and_freshness_on_mapped_rows(
    pg: PgServer, hr_db: str, pg_password_env: str, tmp_path: Path, dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HR_TOKEN", TOKEN)
    with running_fixture_server() as api:
        api.route("/employees", paged_api)
        checks = {"drift": {"columns": ["employee_id"], "threshold": 0.5}, "freshness": {"max_lag_hours": 26}}
        write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest",
                        task_yaml(api.url("/employees"), pg, hr_db, checks=checks, profile=True))
        d = load(tmp_path / "defs", monkeypatch)
        spec = next(iter(d.resolve_all_asset_specs()))
        assert spec.freshness_policy is not None
        check_names = {k.name for k in d.resolve_asset_graph().asset_check_keys}
        assert check_names == {"schema", "drift", "profile"}
        first = run_partition(d, [KEY], "2026-01-02")
        second = run_partition(d, [KEY], "2026-01-03")
    assert first.success and second.success
    drift_first = next(e for e in first.get_asset_check_evaluations() if e.check_name == "drift")
    assert drift_first.passed and "no reference" in (drift_first.description or "")
    drift_second = next(e for e in second.get_asset_check_evaluations() if e.check_name == "drift")
    assert drift_second.passed  # the same rows both days: nothing drifted
    report = Path(str(drift_second.metadata["report_path"].value))
    assert report.exists() and report.stat().st_size > 1000
    profile = next(e for e in second.get_asset_check_evaluations() if e.check_name == "profile")
    assert Path(str(profile.metadata["path"].value)).read_text().lstrip().lower().startswith("<!doctype html")


def test_schedule_and_resume_job_from_yaml(
    pg: PgServer, hr_db: str, tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = task_yaml("http://127.0.0.1:9/employees", pg, hr_db, schedule="*/30 * * * *", max_consecutive_failures=5)
    write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest", cfg)
    d = load(tmp_path / "defs", monkeypatch)
    assert d.resolve_schedule_def("hr_employees_schedule").cron_schedule == "*/30 * * * *"
    assert {j.name for j in d.jobs} >= {"hr_employees_job", "adu_resume_hr_employees"}  # type: ignore[union-attr]
    (asset,) = [a for a in d.assets if isinstance(a, dg.AssetsDefinition)]  # type: ignore[union-attr]
    assert asset.op.retry_policy is not None and asset.op.retry_policy.max_retries == 3
