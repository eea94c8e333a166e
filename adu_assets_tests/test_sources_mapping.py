"""Flattening raw API records and applying mappings, including a fetch from a real loopback server."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adu_assets.sources.http import RequestConfig, fetch_to_parquet
from adu_assets.sources.mapping import MappingConfig, MappingError, apply_mappings, load_records
from adu_assets_tests.http_fixture_server import Reply, running_fixture_server


def write_raw(tmp_path: Path, records: list[Any]) -> list[Path]:
    path = tmp_path / "raw-00000.parquet"
    table = pa.table(
        {
            "_page": pa.array([0] * len(records), pa.int32()),
            "_record_index": pa.array(range(len(records)), pa.int64()),
            "_raw": [json.dumps(r) for r in records],
        }
    )
    pq.write_table(table, path)
    return [path]


def m(source: str, target: str, *transforms: str, **kw: Any) -> MappingConfig:
    return MappingConfig(source=source, target=target, transforms=list(transforms), **kw)


def test_load_records_flattens_nested_objects_and_keeps_lists(tmp_path: Path) -> None:
    records = [
        {"id": 1, "profile": {"address": {"city": "Paris", "zip": "75001"}}, "tags": ["a", "b"]},
        {"id": "x2", "profile": None, "extra": {"deep": {"er": True}}},
        {"id": 3, "profile": {"address": {"city": 5}}, "tags": []},
    ]
    df = load_records(write_raw(tmp_path, records))
    assert df.columns == [
        "_page",
        "_record_index",
        "id",
        "profile.address.city",
        "profile.address.zip",
        "tags",
        "extra.deep.er",
    ]
    # Mixed types across records widen to text instead of failing the batch.
    assert df.schema["id"] == pl.String and df["id"].to_list() == ["1", "x2", "3"]
    assert df["profile.address.city"].to_list() == ["Paris", None, "5"]
    assert df["tags"].to_list() == [["a", "b"], None, []]
    assert df["extra.deep.er"].to_list() == [None, True, None]


def test_load_records_of_scalars_and_nothing(tmp_path: Path) -> None:
    df = load_records(write_raw(tmp_path, ["a", "b"]))
    assert df["_value"].to_list() == ["a", "b"]
    assert load_records([]).columns == ["_page", "_record_index"]


def test_transforms_and_a_bad_record(tmp_path: Path) -> None:
    records = [
        {
            "id": "1",
            "name": "  alice ",
            "city": " paris ",
            "ok": "yes",
            "amount": "1.50",
            "born": "1990-05-01",
            "at": "2026-01-02T03:04:05+02:00",
        },
        {
            "id": "abc",
            "name": "bob",
            "city": "rome",
            "ok": "no",
            "amount": 2,
            "born": "1991-06-02",
            "at": "2026-01-02T03:04:05Z",
        },
        {
            "id": 3.0,
            "name": None,
            "city": "oslo",
            "ok": 1,
            "amount": "3",
            "born": "31/12/1992",
            "at": "2026-01-02 03:04:05.250-01:00",
        },
        {"id": 4, "name": "dan", "city": None, "ok": "FALSE", "amount": "4e1", "born": None, "at": None},
    ]
    df = load_records(write_raw(tmp_path, records))
    result = apply_mappings(
        df,
        [
            m("id", "ID", "to_int"),
            m("name", "NAME", "trim", "upper", default="unknown"),
            m("city", "CITY", "trim", "upper"),
            m("ok", "OK", "to_bool"),
            m("amount", "AMOUNT", "to_float"),
            m("born", "BORN", "to_date"),
            m("at", "AT", "to_timestamp"),
        ],
    )
    # Record 1 ("abc") and record 2 (a date in the wrong format) are errors; the others map in full.
    assert result.errors.to_dicts() == [
        {"_record_index": 1, "target": "ID", "source_value": "abc", "reason": "to_int: not an integer"},
        {
            "_record_index": 2,
            "target": "BORN",
            "source_value": "31/12/1992",
            "reason": "to_date: not a date in format %Y-%m-%d",
        },
    ]
    rows = result.rows
    assert rows.columns == ["ID", "NAME", "CITY", "OK", "AMOUNT", "BORN", "AT"]
    assert rows.schema["ID"] == pl.Int64 and rows.schema["AT"] == pl.Datetime("us", "UTC")
    assert rows.to_dicts() == [
        {
            "ID": 1,
            "NAME": "ALICE",
            "CITY": "PARIS",
            "OK": True,
            "AMOUNT": 1.5,
            "BORN": date(1990, 5, 1),
            "AT": datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC),
        },
        {"ID": 4, "NAME": "DAN", "CITY": None, "OK": False, "AMOUNT": 40.0, "BORN": None, "AT": None},
    ]


def test_to_int_refuses_to_truncate_and_to_timestamp_needs_a_zone(tmp_path: Path) -> None:
    df = load_records(
        write_raw(
            tmp_path, [{"n": 1.5, "t": "2026-01-02T03:04:05"}, {"n": 2.0, "t": "2026-01-02T03:04:05+00:00"}]
        )
    )
    result = apply_mappings(df, [m("n", "N", "to_int"), m("t", "T", "to_timestamp")])
    assert result.errors.select("_record_index", "target").rows() == [(0, "N"), (0, "T")]
    assert result.rows.to_dicts() == [{"N": 2, "T": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}]


def test_format_for_dates_and_naive_timestamps(tmp_path: Path) -> None:
    df = load_records(write_raw(tmp_path, [{"d": "31/12/2025", "t": "31/12/2025 23:59"}]))
    result = apply_mappings(
        df, [m("d", "D", "to_date", format="%d/%m/%Y"), m("t", "T", "to_timestamp", format="%d/%m/%Y %H:%M")]
    )
    assert result.rows.to_dicts() == [
        {"D": date(2025, 12, 31), "T": datetime(2025, 12, 31, 23, 59, tzinfo=UTC)}
    ]


def test_defaults_fill_missing_and_null_sources(tmp_path: Path) -> None:
    df = load_records(write_raw(tmp_path, [{"a": None}, {"a": "7"}]))
    result = apply_mappings(df, [m("a", "A", "to_int", default="0"), m("nowhere", "B", default=5)])
    assert result.rows.to_dicts() == [{"A": 0, "B": 5}, {"A": 7, "B": 5}]
    assert result.missing_sources == ["nowhere"]
    with pytest.raises(MappingError, match="default 'x' does not fit"):
        apply_mappings(load_records(write_raw(tmp_path, [{"a": 1}])), [m("a", "A", default="x")])


def test_explode_lists_and_lists_of_objects(tmp_path: Path) -> None:
    records = [
        {"id": 1, "tags": ["a", "b"], "items": [{"sku": "s1", "qty": "2"}, {"sku": "s2", "qty": "x"}]},
        {"id": 2, "tags": ["c"], "items": []},
    ]
    df = load_records(write_raw(tmp_path, records))
    kept = apply_mappings(df, [m("id", "ID"), m("tags", "TAGS")])
    assert kept.rows.to_dicts() == [{"ID": 1, "TAGS": ["a", "b"]}, {"ID": 2, "TAGS": ["c"]}]

    exploded = apply_mappings(
        df,
        [
            m("id", "ID"),
            m("items.sku", "SKU", "upper", explode=True),
            m("items.qty", "QTY", "to_int", explode=True),
        ],
    )
    # The bad quantity marks its whole record as an error; an empty list keeps its record as one row.
    assert exploded.errors.to_dicts() == [
        {"_record_index": 0, "target": "QTY", "source_value": "x", "reason": "to_int: not an integer"}
    ]
    assert exploded.rows.to_dicts() == [{"ID": 2, "SKU": None, "QTY": None}]

    with pytest.raises(MappingError, match="set explode: true"):
        apply_mappings(df, [m("tags", "TAGS", "upper")])


def test_mapping_config_errors() -> None:
    with pytest.raises(MappingError, match="target A appears more than once"):
        apply_mappings(pl.DataFrame({"x": [1]}), [m("x", "A"), m("x", "A")])
    with pytest.raises(ValueError, match="format only applies"):
        m("x", "A", "trim", format="%Y")
    with pytest.raises(ValueError):
        m("x", "A", "to_uuid")


def test_end_to_end_from_a_real_server(tmp_path: Path) -> None:
    """Fetch pages from a loopback API, flatten and map them; one bad record is reported, the rest land."""
    people = [
        {
            "id": i,
            "profile": {"name": f" p{i} ", "address": {"city": "lyon"}},
            "joined": f"2026-01-{i + 1:02d}T08:00:00Z",
        }
        for i in range(7)
    ]
    people[4]["joined"] = "not a date"

    with running_fixture_server() as server:
        server.route(
            "/people",
            lambda s: Reply(
                200, {"data": people[int(s.query["offset"]) : int(s.query["offset"]) + 3], "total": 7}
            ),
        )
        cfg = RequestConfig(
            url=server.url("/people"),
            records_path="data",
            pagination={"type": "offset", "limit": 3, "total_path": "total"},
        )
        fetched = fetch_to_parquet(cfg, {}, tmp_path / "raw")
        assert len(server.requests("/people")) == 3

    result = apply_mappings(
        load_records(fetched.raw_files),
        [
            m("id", "EMPLOYEE_ID", "to_int"),
            m("profile.name", "NAME", "trim", "upper"),
            m("profile.address.city", "CITY", "upper"),
            m("joined", "JOINED", "to_timestamp"),
        ],
    )
    assert result.rows["EMPLOYEE_ID"].to_list() == [0, 1, 2, 3, 5, 6]
    assert result.rows["NAME"].to_list() == ["P0", "P1", "P2", "P3", "P5", "P6"]
    assert set(result.rows["CITY"]) == {"LYON"}
    assert result.errors.select("_record_index", "target", "source_value").rows() == [
        (4, "JOINED", "not a date")
    ]
