"""One broken YAML file must not stop the others (issue 11.1): the good component loads and runs, the
broken one shows up as a sensor whose skip reason names file, line, field and fix, and as one error line
in the log (not a traceback)."""

import logging
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from adu_assets_tests.defs_helpers import load, run_partition, write_component

GOOD = dg.AssetKey(["good", "main", "items"])


def good_source(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE items AS SELECT range AS id, 'x' || range AS label FROM range(5)")


def good_yaml(source: Path, name: str = "good") -> dict[str, object]:
    return {
        "name": name,
        "connection": {"kind": "duckdb", "path": str(source)},
        "schema": "main",
        "start_date": "2024-01-01",
        "destinations": ["parquet"],
        "tables": [{"name": "items"}],
    }


BROKEN = """\
# a comment first, so the line numbers are not trivial
type: adu_assets.DatabaseExport
attributes:
  name: broken
  connection:
    kind: duckdb
    path: /nowhere/broken.duckdb
  schema: main
  start_date: "2024-01-01"
  tables:
    - name: a
      incremental_column: x
      incremntal_column: y
"""


@pytest.fixture
def defs_dir(tmp_path: Path, dagster_home: Path) -> Path:
    d = tmp_path / "user_defs"
    d.mkdir()
    return d


def test_broken_file_does_not_stop_the_good_one(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good_source(tmp_path / "good.duckdb")
    write_component(defs_dir, "good", "adu_assets.DatabaseExport", good_yaml(tmp_path / "good.duckdb"))
    (defs_dir / "broken").mkdir()
    (defs_dir / "broken" / "defs.yaml").write_text(BROKEN)
    (defs_dir / "syntax").mkdir()
    (defs_dir / "syntax" / "defs.yaml").write_text("type: adu_assets.DatabaseExport\nattributes: [\n")

    with caplog.at_level(logging.ERROR):
        d = load(defs_dir, monkeypatch)
    assert {k for k in d.resolve_all_asset_keys()} == {GOOD}

    # The good component runs.
    result = run_partition(d, [GOOD], "2024-01-02")
    assert result.success
    mats = result.get_asset_materialization_events()
    assert [e.asset_key for e in mats] == [GOOD]
    assert mats[0].materialization.metadata["dagster/row_count"].value == 5  # type: ignore[union-attr]

    # The broken one is visible: a running sensor whose skip reason is the problem (UI and daemon log).
    expected = f"{defs_dir / 'broken' / 'defs.yaml'}:13: attributes.tables.0.incremntal_column: unknown key"
    sensor = d.resolve_sensor_def("adu_broken_yaml__broken")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.build_sensor_context(instance=dg.DagsterInstance.get()) as ctx:
        data = sensor.evaluate_tick(ctx)
    assert not data.run_requests
    assert data.skip_message is not None and expected in data.skip_message
    assert "did you mean `incremental_column`?" in data.skip_message
    syntax = d.resolve_sensor_def("adu_broken_yaml__syntax")
    assert f"{defs_dir / 'syntax' / 'defs.yaml'}:3: (yaml):" in (syntax.description or "")

    # The log has one short line per problem, starting with file:line, and no traceback.
    errors = [r.getMessage() for r in caplog.records if r.name == "adu_assets.defs_loader"]
    assert any(expected in m for m in errors)
    assert all("Traceback" not in m and m.count("\n") == 0 for m in errors)


def test_duplicate_component_name_rejects_only_the_second_file(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_source(tmp_path / "good.duckdb")
    write_component(defs_dir, "a_first", "adu_assets.DatabaseExport", good_yaml(tmp_path / "good.duckdb"))
    write_component(defs_dir, "b_copy", "adu_assets.DatabaseExport", good_yaml(tmp_path / "good.duckdb"))
    d = load(defs_dir, monkeypatch)
    assert set(d.resolve_all_asset_keys()) == {GOOD}
    text = d.resolve_sensor_def("adu_broken_yaml__b_copy").description or ""
    assert "b_copy/defs.yaml:3: attributes.name:" in text
    assert "a_first/defs.yaml" in text and "give this component another name" in text


def test_every_file_broken_still_loads_a_location(defs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (defs_dir / "x").mkdir()
    (defs_dir / "x" / "defs.yaml").write_text("type: adu_assets.NoSuchType\nattributes: {}\n")
    d = load(defs_dir, monkeypatch)
    assert not list(d.resolve_all_asset_keys())
    text = d.resolve_sensor_def("adu_broken_yaml__x").description or ""
    assert "x/defs.yaml:1: type: unknown component type `adu_assets.NoSuchType`" in text


def test_refresh_state_refreshes_the_good_files_and_reports_the_broken_one(
    tmp_path: Path, defs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adu_assets.cli import main as adu_cli

    good_source(tmp_path / "good.duckdb")
    discovered = good_yaml(tmp_path / "good.duckdb")
    del discovered["tables"]  # discovered, cached as defs state
    write_component(defs_dir, "good", "adu_assets.DatabaseExport", discovered)
    (defs_dir / "broken").mkdir()
    (defs_dir / "broken" / "defs.yaml").write_text(BROKEN)
    assert set(load(defs_dir, monkeypatch).resolve_all_asset_keys()) == {GOOD}
    with duckdb.connect(str(tmp_path / "good.duckdb")) as con:
        con.execute("CREATE TABLE added AS SELECT 1 AS id")

    assert adu_cli(["refresh-state"]) == 1
    captured = capsys.readouterr()
    assert "DatabaseExport[good]: refreshed" in captured.out
    assert f"{defs_dir / 'broken' / 'defs.yaml'}:13: attributes.tables.0.incremntal_column" in captured.err
    keys = set(load(defs_dir, monkeypatch).resolve_all_asset_keys())
    assert keys == {GOOD, dg.AssetKey(["good", "main", "added"])}
