"""The watermark sensor: which partitions it asks for, against real PostgreSQL and DuckDB sources."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.automation import WatermarkSpec, automation_defs
from adu_assets.automation.circuit_breaker import SENSOR_TAG
from adu_assets.automation.sensors import plan_runs, read_watermarks, union_sql
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import new_duckdb
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.pg_server import PgServer

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- planning, as a pure function ---------------------------------------------------------------


def test_first_tick_records_the_watermark_and_runs_only_the_latest_partition() -> None:
    plan = plan_runs(DAILY, {}, {"orders": ts("2024-05-03 08:00")}, now=NOW, limit=10)
    assert plan.tables_by_partition == {"2024-05-03": ["orders"]}
    assert plan.cursor == {"orders": ts("2024-05-03 08:00").isoformat()}


def test_new_rows_request_every_day_from_the_old_watermark_to_the_new() -> None:
    cursor = {"orders": ts("2024-05-03 08:00").isoformat(), "items": ts("2024-05-04 01:00").isoformat()}
    plan = plan_runs(
        DAILY, cursor, {"orders": ts("2024-05-05 09:00"), "items": ts("2024-05-04 01:00")}, now=NOW, limit=10
    )
    # The old watermark's day is included: rows after 08:00 on the 3rd belong to it.
    assert plan.tables_by_partition == {
        "2024-05-03": ["orders"],
        "2024-05-04": ["orders"],
        "2024-05-05": ["orders"],
    }
    assert plan.cursor["orders"] == ts("2024-05-05 09:00").isoformat()
    assert plan.cursor["items"] == cursor["items"]  # unchanged table: nothing asked, cursor kept


def test_todays_partition_waits_until_the_day_has_ended() -> None:
    cursor = {"orders": ts("2024-05-09 20:00").isoformat()}
    plan = plan_runs(DAILY, cursor, {"orders": ts("2024-05-10 09:00")}, now=NOW, limit=10)
    assert plan.tables_by_partition == {"2024-05-09": ["orders"]}
    # Stored at the start of today, so today is asked for once it exists, not before.
    assert plan.cursor["orders"] == ts("2024-05-10 00:00").isoformat()
    again = plan_runs(DAILY, plan.cursor, {"orders": ts("2024-05-10 11:00")}, now=NOW, limit=10)
    assert again.tables_by_partition == {}
    tomorrow = plan_runs(
        DAILY, again.cursor, {"orders": ts("2024-05-10 11:00")}, now=NOW + timedelta(days=1), limit=10
    )
    assert tomorrow.tables_by_partition == {"2024-05-10": ["orders"]}
    assert tomorrow.cursor["orders"] == ts("2024-05-10 11:00").isoformat()


def test_one_run_per_partition_and_at_most_limit_per_tick() -> None:
    cursor = {t: ts("2024-05-01 00:00").isoformat() for t in ("a", "b")}
    maxima = {"a": ts("2024-05-05 10:00"), "b": ts("2024-05-02 10:00")}
    plan = plan_runs(DAILY, cursor, maxima, now=NOW, limit=2)
    assert plan.tables_by_partition == {"2024-05-01": ["a", "b"], "2024-05-02": ["a", "b"]}
    assert plan.cursor["b"] == ts("2024-05-02 10:00").isoformat()
    # a still needs 3rd..5th: its cursor resumes at the first partition not asked for.
    assert plan.cursor["a"] == ts("2024-05-03 00:00").isoformat()
    assert any("3 more partitions" in n for n in plan.notes)
    rest = plan_runs(DAILY, plan.cursor, maxima, now=NOW, limit=2)
    assert rest.tables_by_partition == {"2024-05-03": ["a"], "2024-05-04": ["a"]}
    last = plan_runs(DAILY, rest.cursor, maxima, now=NOW, limit=2)
    assert last.tables_by_partition == {"2024-05-05": ["a"]}
    assert plan_runs(DAILY, last.cursor, maxima, now=NOW, limit=2).tables_by_partition == {}


def test_rows_before_start_date_and_empty_tables_request_nothing() -> None:
    plan = plan_runs(DAILY, {}, {"old": ts("2023-06-01 00:00"), "empty": None}, now=NOW, limit=10)
    assert plan.tables_by_partition == {}
    assert plan.cursor == {"old": ts("2023-06-01 00:00").isoformat()}


# --- reading watermarks from real sources ----------------------------------------------------------


@pytest.fixture
def pg_source(pg: PgServer, pg_db: str, pg_password_env: str) -> ConnectionConfig:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE orders (id int, updated_at timestamptz)")
        conn.execute("CREATE TABLE items (id int, changed timestamp)")
        conn.execute("CREATE TABLE days (id int, day date)")
        conn.execute("CREATE TABLE empty_one (id int, updated_at timestamptz)")
        conn.execute("INSERT INTO orders VALUES (1, '2024-05-03 08:00+00'), (2, '2024-05-03 23:30-02')")
        conn.execute("INSERT INTO items VALUES (1, '2024-05-02 10:00')")
        conn.execute("INSERT INTO days VALUES (1, '2024-04-30')")
    return ConnectionConfig.model_validate(pg_connection_yaml(pg, pg_db))


def test_postgres_watermarks_in_one_query(pg_source: ConnectionConfig) -> None:
    tables = {"orders": "updated_at", "items": "changed", "days": "day", "empty_one": "updated_at"}
    marks = read_watermarks(pg_source, "public", tables, label="t")
    assert marks.errors == {}
    assert marks.maxima == {
        # 23:30 at -02:00 is 01:30 UTC the next day: offsets are honoured.
        "orders": ts("2024-05-04 01:30"),
        "items": ts("2024-05-02 10:00"),
        "days": ts("2024-04-30 00:00"),
        "empty_one": None,
    }
    assert union_sql("public", tables).count("UNION ALL") == 3


def test_an_unreadable_table_is_reported_and_the_rest_still_read(pg_source: ConnectionConfig) -> None:
    marks = read_watermarks(
        pg_source, "public", {"orders": "updated_at", "dropped": "x", "items": "no_such_column"}, label="t"
    )
    assert marks.maxima == {"orders": ts("2024-05-04 01:30")}
    assert set(marks.errors) == {"dropped", "items"}
    assert "dropped" in marks.errors["dropped"]


def test_duckdb_file_watermarks(tmp_path: Path) -> None:
    path = tmp_path / "src.duckdb"
    con = new_duckdb(str(path))
    con.execute("CREATE TABLE sales (id INT, sold_at TIMESTAMPTZ)")
    con.execute("INSERT INTO sales VALUES (1, '2024-05-01 10:00:00+00'), (2, '2024-05-06 10:00:00+00')")
    con.close()
    cfg = ConnectionConfig(kind="duckdb", path=str(path))
    assert read_watermarks(cfg, "main", {"sales": "sold_at"}, label="t").maxima == {
        "sales": ts("2024-05-06 10:00")
    }


# --- the sensor end to end ------------------------------------------------------------------------


def sensor_defs(cfg: ConnectionConfig, tables: dict[str, str]) -> dg.Definitions:
    assets = []
    for table in tables:

        @dg.asset(key=["src", "public", table], partitions_def=DAILY)
        def _table() -> None: ...

        assets.append(_table)
    spec = WatermarkSpec(
        connection=cfg,
        schema="public",
        tables=tables,
        asset_keys={t: dg.AssetKey(["src", "public", t]) for t in tables},
        max_requests_per_tick=5,
    )
    auto = automation_defs(
        component_name="src", assets=assets, cron=None, timezone="UTC", partitions_def=DAILY, watermark=spec
    )
    return dg.Definitions.merge(dg.Definitions(assets=assets), auto)


def tick(d: dg.Definitions, cursor: str | None) -> tuple[list[dg.RunRequest], str | None, str | None]:
    sensor = d.resolve_sensor_def("src_watermark_sensor")
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.get(), cursor=cursor, repository_def=d.get_repository_def()
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    return list(data.run_requests or []), data.cursor, data.skip_message


def test_sensor_ticks_against_postgres(
    pg: PgServer, pg_db: str, pg_source: ConnectionConfig, dagster_home: Path
) -> None:
    d = sensor_defs(pg_source, {"orders": "updated_at", "items": "changed"})
    assert d.resolve_sensor_def("src_watermark_sensor").job_name == "src_job"

    requests, cursor, _ = tick(d, None)
    assert sorted(
        (r.partition_key, tuple(k.path[-1] for k in r.asset_selection or [])) for r in requests
    ) == [
        ("2024-05-02", ("items",)),
        ("2024-05-04", ("orders",)),
    ]
    assert cursor is not None and json.loads(cursor)["orders"] == ts("2024-05-04 01:30").isoformat()

    # Nothing new: no runs, and the reason says so.
    requests, cursor2, skip = tick(d, cursor)
    assert requests == [] and skip is not None and "no new rows in 2 tables" in skip
    assert cursor2 == cursor

    with pg.connect(pg_db) as conn:
        conn.execute("INSERT INTO orders VALUES (3, '2024-05-06 07:00+00')")
        conn.execute("INSERT INTO items VALUES (2, '2024-05-04 12:00')")
    requests, cursor3, _ = tick(d, cursor)
    got = {r.partition_key: sorted(k.path[-1] for k in r.asset_selection or []) for r in requests}
    assert got == {
        "2024-05-02": ["items"],
        "2024-05-03": ["items"],
        "2024-05-04": ["items", "orders"],  # one run for both tables of that day
        "2024-05-05": ["orders"],
        "2024-05-06": ["orders"],
    }
    assert all(r.run_key and r.tags["adu/trigger"] == "watermark" for r in requests)
    assert tick(d, cursor3)[0] == []


def test_sensor_pauses_after_failed_runs(pg_source: ConnectionConfig, dagster_home: Path) -> None:
    d = sensor_defs(pg_source, {"orders": "updated_at"})

    @dg.asset(key=["src", "public", "orders"], partitions_def=DAILY)
    def broken() -> None:
        raise RuntimeError("source went away")

    failing = dg.define_asset_job("src_job", selection=[broken], partitions_def=DAILY)
    job = dg.Definitions(assets=[broken], jobs=[failing]).resolve_job_def("src_job")
    for _ in range(3):
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(),
            partition_key="2024-05-03",
            tags={SENSOR_TAG: "src_watermark_sensor"},
            raise_on_error=False,
        )
        assert not result.success
    requests, cursor, skip = tick(d, None)
    assert requests == [] and cursor is None  # paused: the watermark is not consumed either
    assert skip is not None and skip.startswith("paused after 3 consecutive failed runs of src_job")
    assert d.resolve_job_def("adu_resume_src").execute_in_process(instance=dg.DagsterInstance.get()).success
    assert [r.partition_key for r in tick(d, None)[0]] == ["2024-05-04"]


def test_a_source_that_is_down_fails_loudly_without_the_password(pg: PgServer, pg_password_env: str) -> None:
    cfg = ConnectionConfig.model_validate(pg_connection_yaml(pg, "no_such_database"))
    with pytest.raises(Exception, match="no_such_database") as err:
        read_watermarks(cfg, "public", {"orders": "updated_at", "items": "changed"}, label="t")
    assert pg.password not in str(err.value)


def test_vertica_runs_the_union_on_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # No Vertica server here: a DB-API fake records the SQL and answers as vertica-python would.
    executed: list[str] = []

    class Cursor:
        def execute(self, sql: str) -> None:
            executed.append(sql)

        def fetchall(self) -> list[tuple[str, str | None]]:
            return [("orders", "2024-05-03 08:00:00+00"), ("items", None)]

    class Conn:
        closed = False

        def cursor(self) -> Cursor:
            return Cursor()

        def close(self) -> None:
            Conn.closed = True

    from adu_assets.sources import vertica

    monkeypatch.setattr(vertica, "connect_vertica", lambda cfg: Conn())
    cfg = ConnectionConfig(
        kind="vertica", host="vertica.internal", database="dwh", user="u", password_env="X"
    )
    marks = read_watermarks(cfg, "sales", {"orders": "updated_at", "items": "changed"}, label="t")
    assert marks.maxima == {"orders": ts("2024-05-03 08:00"), "items": None}
    [sql] = executed
    assert 'FROM "sales"."orders"' in sql and 'FROM "sales"."items"' in sql and "UNION ALL" in sql
    assert Conn.closed
