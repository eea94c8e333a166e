"""The inferred schema check and its baseline store, on Chinook tables from a real PostgreSQL."""

# No `from __future__ import annotations`: Dagster rejects a string annotation on `context`.
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from adu_assets.checks.asset_checks import build_table_checks
from adu_assets.checks.schema_inference import SchemaBaselineStore, compare_schema, infer_schema
from adu_assets_tests.pg_server import PgServer
from adu_assets_tests.test_checks_rules import load_chinook, read_table


@pytest.fixture(scope="module")
def track(pg: PgServer) -> pl.DataFrame:
    load_chinook(pg)
    return read_table(pg, "SELECT * FROM track ORDER BY track_id")


def test_infer_schema_reads_names_and_types(track: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "track.parquet"
    track.write_parquet(path)
    schema = infer_schema(pl.scan_parquet(path))
    assert list(schema) == [
        "track_id",
        "name",
        "album_id",
        "media_type_id",
        "genre_id",
        "composer",
        "milliseconds",
        "bytes",
        "unit_price",
    ]
    assert schema["name"] == "String"
    assert schema["unit_price"].startswith("Decimal(")
    assert infer_schema(track) == schema


def test_compare_schema_lifecycle(track: pl.DataFrame) -> None:
    baseline = infer_schema(track)
    first = compare_schema(None, baseline)
    assert first.passed and first.description == "no baseline yet; recorded 9 columns"

    assert compare_schema(baseline, infer_schema(track)).passed

    dropped = compare_schema(baseline, infer_schema(track.drop("composer")), blocking=True)
    assert not dropped.passed and dropped.severity == "ERROR"
    assert dropped.metadata["removed_columns"] == ["composer"]
    assert "composer" in dropped.description

    retyped = compare_schema(
        baseline, infer_schema(track.with_columns(pl.col("milliseconds").cast(pl.Float64)))
    )
    assert not retyped.passed
    assert retyped.metadata["changed_types"] == {"milliseconds": {"was": "Int64", "now": "Float64"}}

    added = compare_schema(baseline, infer_schema(track.with_columns(pl.lit(1).alias("extra"))))
    assert added.passed
    assert added.metadata["added_columns"] == {"extra": "Int32"}
    assert "new column(s): extra" in added.metadata["warning"]
    assert "warning" in added.description


def test_baseline_store_roundtrip_is_atomic(tmp_path: Path) -> None:
    store = SchemaBaselineStore(tmp_path / "baselines")
    assert store.get("chinook/public/track") is None
    path = store.put("chinook/public/track", {"a": "Int64"})
    store.put("chinook_public/track", {"b": "String"})
    assert store.get("chinook/public/track") == {"a": "Int64"}
    assert store.get("chinook_public/track") == {"b": "String"}
    assert path.parent == tmp_path / "baselines"
    assert json.loads(path.read_text())["asset_key"] == "chinook/public/track"
    # no temporary files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [store.path_for("chinook/public/track").name, store.path_for("chinook_public/track").name]
    )
    path.write_text('{"nope": 1}')
    with pytest.raises(ValueError, match="delete it to record a new one"):
        store.get("chinook/public/track")


def test_schema_check_records_then_fails_on_a_dropped_column(
    track: pl.DataFrame, tmp_path: Path, dagster_home: Path
) -> None:
    parts = dg.StaticPartitionsDefinition(["day1", "day2", "day3"])
    key = dg.AssetKey(["chinook", "public", "track"])
    frames = {
        "day1": track,
        "day2": track.with_columns(pl.lit("x").alias("extra")),
        "day3": track.drop("bytes"),
    }

    def path(pk: str) -> Path:
        return tmp_path / f"track-{pk}.parquet"

    @dg.asset(key=key, partitions_def=parts)
    def track_asset(context: dg.AssetExecutionContext) -> None:
        frames[context.partition_key].write_parquet(path(context.partition_key))

    checks = build_table_checks(
        key,
        None,
        load=lambda context: pl.scan_parquet(path(context.partition_key)),
        load_previous=lambda context: None,
        baseline_store_root=lambda: tmp_path / "baselines",
        profile=False,
        partitions_def=parts,
    )
    instance = dg.DagsterInstance.get()
    results = {}
    for pk in ("day1", "day2", "day3"):
        run = dg.materialize(
            [track_asset, *checks], partition_key=pk, instance=instance, raise_on_error=False
        )
        (evaluation,) = run.get_asset_check_evaluations()
        results[pk] = evaluation
    assert results["day1"].passed and results["day1"].description == "no baseline yet; recorded 9 columns"
    assert results["day2"].passed and "extra" in (results["day2"].description or "")
    assert not results["day3"].passed
    # a non-blocking config gives WARN
    assert results["day3"].severity == dg.AssetCheckSeverity.WARN
    # day2 accepted `extra` into the baseline, so day3 (the original table minus bytes) misses both
    assert results["day3"].metadata["removed_columns"].value == ["bytes", "extra"]
    # the baseline is the last passing schema (day2, with `extra`), untouched by the failing day3
    assert SchemaBaselineStore(tmp_path / "baselines").get("chinook/public/track") == infer_schema(
        frames["day2"]
    )
