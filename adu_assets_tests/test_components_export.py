"""DatabaseExport end to end: YAML in ADU_DEFS_DIR -> assets -> real PostgreSQL (Chinook) -> Parquet + DuckDB."""

import json
from contextlib import closing
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from adu_assets.cli import main as adu_cli
from adu_assets.warehouse import LandingStore
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, run_partition, write_component
from adu_assets_tests.pg_server import PgServer

CHINOOK_TABLES = [
    "album", "artist", "customer", "employee", "genre", "invoice", "invoice_line", "media_type", "playlist",
    "playlist_track", "track",
]


@pytest.fixture
def defs_dir(tmp_path: Path, dagster_home: Path) -> Path:
    d = tmp_path / "user_defs"
    d.mkdir()
    return d


def chinook_yaml(pg: PgServer, chinook: str, **extra: object) -> dict[str, object]:
    return {
        "name": "chinook",
        "connection": pg_connection_yaml(pg, chinook),
        "schema": "public",
        "start_date": "2021-01-01",
        "owners": ["team:finance"],
        **extra,
    }


def test_discovered_tables_become_assets(
    pg: PgServer, chinook: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_component(defs_dir, "chinook", "adu_assets.DatabaseExport", chinook_yaml(pg, chinook))
    d = load(defs_dir, monkeypatch)
    keys = sorted(k.path for k in d.resolve_all_asset_keys())
    assert keys == [["chinook", "public", t] for t in CHINOOK_TABLES]
    spec = d.resolve_assets_def(dg.AssetKey(["chinook", "public", "invoice"])).specs_by_key[
        dg.AssetKey(["chinook", "public", "invoice"])
    ]
    assert spec.group_name == "chinook"
    assert spec.kinds == {"postgres", "parquet", "duckdb"}
    assert spec.owners == ["team:finance"]
    assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition)
    cols = {c.name: c.type for c in spec.metadata["dagster/column_schema"].columns}
    assert cols["total"] == "numeric(10,2)"
    # Discovery was cached beside the YAML as defs state.
    state_files = list((defs_dir / ".local_defs_state").rglob("state"))
    assert len(state_files) == 1
    assert len(json.loads(state_files[0].read_text())["tables"]) == len(CHINOOK_TABLES)


def test_refresh_state_picks_up_new_tables(
    pg: PgServer, pg_db: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE first_table (id int)")
    write_component(defs_dir, "src", "adu_assets.DatabaseExport", {
        "name": "src", "connection": pg_connection_yaml(pg, pg_db), "start_date": "2024-01-01"})
    assert [k.path[-1] for k in load(defs_dir, monkeypatch).resolve_all_asset_keys()] == ["first_table"]
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE second_table (id int)")
    # Cached: a new load does not rediscover ...
    assert [k.path[-1] for k in load(defs_dir, monkeypatch).resolve_all_asset_keys()] == ["first_table"]
    # ... until the documented refresh command runs.
    assert adu_cli(["refresh-state"]) == 0
    assert sorted(k.path[-1] for k in load(defs_dir, monkeypatch).resolve_all_asset_keys()) == [
        "first_table", "second_table"]


def test_materialize_incremental_and_snapshot_tables(
    pg: PgServer, chinook: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    write_component(defs_dir, "chinook", "adu_assets.DatabaseExport", chinook_yaml(
        pg, chinook, tables=[{"name": "invoice", "incremental_column": "invoice_date"}, {"name": "genre"}]))
    d = load(defs_dir, monkeypatch)
    invoice, genre = dg.AssetKey(["chinook", "public", "invoice"]), dg.AssetKey(["chinook", "public", "genre"])
    result = run_partition(d, [invoice, genre], "2021-01-02")
    assert result.success
    mats = {
        e.asset_key: e.materialization.metadata  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }
    assert mats[invoice]["dagster/row_count"].value == 1
    assert mats[genre]["dagster/row_count"].value == 25
    for key in (invoice, genre):
        meta = mats[key]
        assert {"dagster/column_schema", "path", "dagster/table_name", "duration_s", "rows_per_s", "preview"} <= set(meta)
    path = Path(str(mats[invoice]["path"].value))
    assert path.name == "adu_partition=2021-01-02"
    [file] = path.glob("*.parquet")
    assert pq.read_table(file).column("invoice_id").to_pylist() == [2]

    # A range runs as one run (single-run backfill) and lands one file per day.
    result = run_partition(d, [invoice], ("2021-01-01", "2021-01-10"))
    assert result.success
    events = result.get_asset_materialization_events()
    assert {e.step_key for e in events} == {"chinook__public__invoice"}
    assert sorted(e.partition for e in events) == [f"2021-01-{d:02d}" for d in range(1, 11)]
    root = tmp_path / "data"
    days = sorted(p.parent.name for p in (root / "parquet/chinook/public/invoice").glob("*/*.parquet"))
    # One file a day that has rows; a day without rows has no file (and no warehouse rows).
    assert len(days) == len(set(days))
    with closing(LandingStore(data_dir=str(root)).connect()) as con:
        landed = con.execute(
            "SELECT CAST(adu_partition AS VARCHAR), count(*) FROM chinook_public.invoice GROUP BY 1 ORDER BY 1"
        ).fetchall()
    with pg.connect(chinook) as pgc:
        expected = pgc.execute(
            "SELECT to_char(invoice_date, 'YYYY-MM-DD'), count(*) FROM invoice "
            "WHERE invoice_date >= '2021-01-01' AND invoice_date < '2021-01-11' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert landed == expected
    assert days == [f"adu_partition={d}" for d, _ in expected]


def test_failing_table_fails_only_its_own_asset(
    pg: PgServer, chinook: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_component(defs_dir, "chinook", "adu_assets.DatabaseExport", chinook_yaml(
        pg, chinook, tables=[{"name": "genre"}, {"name": "no_such_table"}]))
    d = load(defs_dir, monkeypatch)
    result = run_partition(d, list(d.resolve_all_asset_keys()), "2021-01-02")
    assert not result.success
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}  # type: ignore[union-attr]
    assert done == {"genre"}
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    message = failures[0].event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "no_such_table" in message and "was not found at the source" in message
    assert pg.password not in message


def test_bad_yaml_names_the_field(defs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_component(defs_dir, "bad", "adu_assets.DatabaseExport", {
        "name": "bad", "connection": {"kind": "postgres", "host": "h", "database": "d", "password": "plain"},
        "start_date": "2024-01-01"})
    with pytest.raises(Exception) as err:
        load(defs_dir, monkeypatch)
    text = str(err.value) + str(err.value.__cause__)
    assert "password_env" in text and "bad" in text
    assert "plain" not in str(err.value)


def test_schedule_sensor_and_resume_job_from_yaml(
    pg: PgServer, chinook: str, pg_password_env: str, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_component(defs_dir, "chinook", "adu_assets.DatabaseExport", chinook_yaml(
        pg, chinook, schedule="0 3 * * *", timezone="Europe/Oslo", watermark_sensor=True,
        tables=[{"name": "invoice", "incremental_column": "invoice_date"}, {"name": "genre"}]))
    d = load(defs_dir, monkeypatch)
    schedule = d.resolve_schedule_def("chinook_schedule")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "Europe/Oslo"
    assert {j.name for j in d.jobs} >= {"chinook_job", "adu_resume_chinook"}  # type: ignore[union-attr]
    sensor = d.resolve_sensor_def("chinook_watermark_sensor")
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=d)
        )
    # First tick: records the watermark and asks for the latest day that has invoice rows.
    with pg.connect(chinook) as conn:
        latest = conn.execute("SELECT to_char(max(invoice_date), 'YYYY-MM-DD') FROM invoice").fetchone()[0]  # type: ignore[index]
    assert [r.partition_key for r in result.run_requests or []] == [latest]
    assert result.cursor and "invoice" in result.cursor
    export = d.resolve_assets_def(dg.AssetKey(["chinook", "public", "invoice"]))
    assert export.op.retry_policy is not None and export.op.retry_policy.max_retries == 3


def test_file_drop_is_a_yaml_type(defs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_component(defs_dir, "drops", "adu_assets.FileDrop", {
        "name": "drops", "folder": str(inbox), "glob": "*.csv", "start_date": "2024-01-01"})
    d = load(defs_dir, monkeypatch)
    assert dg.AssetKey(["drops"]) in set(d.resolve_all_asset_keys())
    assert d.resolve_sensor_def("drops_file_sensor") is not None
