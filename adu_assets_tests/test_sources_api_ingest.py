"""`ingest`: the one-pass fetch + decode + map must give exactly what the two-step path gives.

Every test compares against `apply_mappings(load_records(raw_files))` over the files `ingest` itself
landed, on data chosen to hit each rule of the narrow decode: types learned late, widened, absent keys,
and the shapes that must fall back to the two-step path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polars.testing import assert_frame_equal

from adu_assets.sources.api_ingest import IngestResult, ingest
from adu_assets.sources.http import ApiResponseError, RequestConfig
from adu_assets.sources.mapping import MappingConfig, MappingError, apply_mappings, load_records
from adu_assets_tests.http_fixture_server import FixtureServer, Reply, running_fixture_server


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with running_fixture_server() as s:
        yield s


def m(source: str, target: str, *transforms: str, **kw: Any) -> MappingConfig:
    return MappingConfig(source=source, target=target, transforms=list(transforms), **kw)


def run(
    server: FixtureServer,
    tmp_path: Path,
    records: list[Any],
    mappings: list[MappingConfig],
    *,
    per_page: int = 3,
    batch_records: int = 4,
) -> IngestResult:
    """Serve `records` with offset paging and a total (so pages are fetched concurrently), then ingest."""
    server.route(
        "/r",
        lambda s: Reply(
            200,
            {
                "data": records[int(s.query["offset"]) : int(s.query["offset"]) + per_page],
                "total": len(records),
            },
        ),
    )
    cfg = RequestConfig(
        url=server.url("/r"),
        records_path="data",
        pagination={"type": "offset", "limit": per_page, "total_path": "total"},
    )
    return ingest(cfg, {}, tmp_path / "raw", mappings, batch_records=batch_records)


def assert_same_as_two_step(result: IngestResult, mappings: list[MappingConfig]) -> None:
    expected = apply_mappings(load_records(result.raw_files), mappings)
    assert_frame_equal(result.rows, expected.rows)
    assert_frame_equal(result.errors, expected.errors)
    assert result.missing_sources == expected.missing_sources


def person(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"  p{i} ",
        "profile": {"address": {"city": f"c{i % 3}", "zip": "x"}, "level": i % 4},
        "joined": f"2026-01-{i % 28 + 1:02d}T08:00:00+01:00",
        "tags": ["a", str(i)] if i % 2 else [],
        "ignored": {"deep": [1, {"x": None}]},
    }


MAPPINGS = [
    m("id", "ID", "to_int"),
    m("name", "NAME", "trim", "upper"),
    m("profile.address.city", "CITY", "upper"),
    m("profile.level", "LEVEL", "to_float"),
    m("joined", "JOINED", "to_timestamp"),
    m("tags", "TAGS"),
    m("nowhere", "NOWHERE", default=7),
]


def test_narrow_path_matches_two_step_path(server: FixtureServer, tmp_path: Path) -> None:
    records = [person(i) for i in range(20)]
    records[5]["joined"] = "not a date"
    records[11]["profile"] = None
    result = run(server, tmp_path, records, MAPPINGS)
    assert result.fallback_reason is None
    assert (result.records, result.pages, result.requests) == (20, 7, 7)
    assert result.rows.height == 19
    assert result.errors.select("_record_index", "target").rows() == [(5, "JOINED")]
    assert result.missing_sources == ["nowhere"]
    assert_same_as_two_step(result, MAPPINGS)


def test_types_widen_and_late_keys_remap_earlier_batches(server: FixtureServer, tmp_path: Path) -> None:
    """A field null in the first batches, an int that turns float, a key first seen late: the early
    batches are mapped again with the whole run's types, as one polars inference over all records would."""
    records = [person(i) for i in range(24)]
    for i, r in enumerate(records):
        r["middle"] = None if i < 10 else f"m{i}"
        r["amount"] = i if i < 13 else i + 0.5
        r["nums"] = [] if i < 9 else [i, 1.5]
        if i >= 17:
            r["late"] = "yes"
        if i == 20:
            r["always_null"] = None
    mappings = [
        *MAPPINGS,
        m("middle", "MIDDLE", "upper", default="none"),
        m("amount", "AMOUNT", "to_int"),
        m("amount", "AMOUNT_RAW"),
        m("nums", "NUMS"),
        m("late", "LATE", "to_bool"),
        m("always_null", "ALWAYS_NULL", default=1),
    ]
    result = run(server, tmp_path, records, mappings)
    assert result.fallback_reason is None
    assert result.rows.schema["AMOUNT_RAW"].is_float()
    assert "always_null" not in result.missing_sources
    assert_same_as_two_step(result, mappings)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r[17].update(id="x17"), "holds int, str"),  # int beside str: polars makes text of both
        (lambda r: r[5].update(profile="n/a"), "msgspec cannot decode"),  # a parent that is not an object
        (lambda r: r[2].update(id=2**70), "int64"),  # polars widens to Int128
        (lambda r: r[4].update(tags=[{"a": 1}]), "tags holds a list of objects"),
    ],
)
def test_shapes_outside_the_narrow_decode_fall_back(
    server: FixtureServer, tmp_path: Path, change: Any, reason: str
) -> None:
    records = [person(i) for i in range(20)]
    change(records)
    result = run(server, tmp_path, records, MAPPINGS)
    assert result.fallback_reason is not None and reason in result.fallback_reason
    assert_same_as_two_step(result, MAPPINGS)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda r: r[8].update({"profile.level": 9}), "duplicate output name"),  # one column, two shapes
        (lambda r: r[3].update(id=True), "do not share a structure"),
    ],
)
def test_shapes_the_two_step_path_rejects_are_rejected_alike(
    server: FixtureServer, tmp_path: Path, change: Any, error: str
) -> None:
    records = [person(i) for i in range(20)]
    change(records)
    with pytest.raises(Exception, match=error):
        run(server, tmp_path, records, MAPPINGS)
    # Raised after landing, as the two-step path does: the raw records stay for inspection.
    assert list((tmp_path / "raw").glob("raw-*.parquet"))


def test_records_that_are_not_objects_fall_back(server: FixtureServer, tmp_path: Path) -> None:
    result = run(server, tmp_path, ["a", "b", "c", "d", "e"], [m("_value", "V", "upper")])
    assert result.fallback_reason is not None
    assert result.rows["V"].to_list() == ["A", "B", "C", "D", "E"]
    assert_same_as_two_step(result, [m("_value", "V", "upper")])


def test_explode_over_a_list_of_objects(server: FixtureServer, tmp_path: Path) -> None:
    records = [{"id": i, "items": [{"sku": f"s{i}", "qty": str(i)}] * (i % 3)} for i in range(9)]
    mappings = [
        m("id", "ID"),
        m("items.sku", "SKU", "upper", explode=True),
        m("items.qty", "QTY", "to_int", explode=True),
    ]
    result = run(server, tmp_path, records, mappings)
    assert_same_as_two_step(result, mappings)
    assert result.rows.height == 3 + 3 * 1 + 3 * 2 - 0  # empty lists keep their record as one row


def test_mapping_error_is_raised_after_the_raw_records_land(server: FixtureServer, tmp_path: Path) -> None:
    records = [{"a": i} for i in range(10)]
    with pytest.raises(MappingError, match="default 'x' does not fit"):
        run(server, tmp_path, records, [m("a", "A", default="x")])
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["raw-00000.parquet"]


def test_no_records(server: FixtureServer, tmp_path: Path) -> None:
    result = run(server, tmp_path, [], MAPPINGS)
    assert result.records == 0 and result.rows.height == 0
    assert_same_as_two_step(result, MAPPINGS)


def test_a_failed_fetch_writes_nothing_and_stops_the_mapping_thread(
    server: FixtureServer, tmp_path: Path
) -> None:
    def reply(seen: Any) -> Reply:
        offset = int(seen.query["offset"])
        if offset >= 9:
            return Reply(200, b'{"data": [{"id": 1}')
        return Reply(200, {"data": [person(i) for i in range(offset, offset + 3)], "total": 30})

    server.route("/broken", reply)
    cfg = RequestConfig(
        url=server.url("/broken"),
        records_path="data",
        pagination={"type": "offset", "limit": 3, "total_path": "total"},
    )
    with pytest.raises(ApiResponseError, match="not valid JSON"):
        ingest(cfg, {}, tmp_path / "raw", MAPPINGS, batch_records=2)
    assert not (tmp_path / "raw").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith(("adu-map", "adu-raw"))]


def test_types_learned_from_a_sample_are_corrected_by_the_rest_of_the_batch(
    server: FixtureServer, tmp_path: Path
) -> None:
    """The first batch's types come from its first records; a float or a null-only key further in must
    still give the two-step result (pyarrow rejects the batch, the whole batch is learned again)."""
    records = [person(i) for i in range(1_500)]
    records[1_200]["id"] = 1_200.5
    records[1_300]["late_null"] = None
    mappings = [*MAPPINGS, m("late_null", "LATE_NULL"), m("id", "ID_RAW")]
    result = run(server, tmp_path, records, mappings, per_page=250, batch_records=10_000)
    assert result.fallback_reason is None
    assert result.rows.schema["ID_RAW"].is_float() and "late_null" not in result.missing_sources
    assert_same_as_two_step(result, mappings)


def test_a_key_that_is_only_ever_null_is_a_column_not_a_missing_source(
    server: FixtureServer, tmp_path: Path
) -> None:
    records = [person(i) for i in range(1_500)]
    records[1_300]["late_null"] = None
    records[1_400]["note"] = "late_null is mentioned in a value, which proves nothing"
    mappings = [*MAPPINGS, m("late_null", "LATE_NULL", default="-"), m("note", "NOTE")]
    result = run(server, tmp_path, records, mappings, per_page=250, batch_records=10_000)
    assert result.fallback_reason is None
    assert result.missing_sources == ["nowhere"]
    assert_same_as_two_step(result, mappings)
