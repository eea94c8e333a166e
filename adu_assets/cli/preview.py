"""`adu preview PATH/defs.yaml`: fetch one page of an ApiIngest task and suggest its `mappings:`.

The page is fetched exactly as a run would fetch the first page (the task's URL, parameters, auth and
pagination, through adu_assets/sources/http.py), for one day (`--partition`, default yesterday in UTC).
Each record field is flattened to its dot path (as the mappings read it), and the field's values on the
page give its type, a sample value and a suggested transform. Nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from adu_assets.sources.http import RequestConfig

# Whole-value patterns over a column's non-null text values (vectorized in polars).
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_TS_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$"
_TS_NAIVE_T = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"
_TS_NAIVE_SPACE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
_INT = r"^[+-]?\d{1,18}$"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_BOOL = r"(?i)^(true|false|yes|no|y|n|on|off)$"


@dataclass
class Field:
    path: str
    kind: str
    sample: str
    transforms: list[str]
    fmt: str | None = None
    note: str = ""


def partition_variables(day: date) -> dict[str, str]:
    """The template variables of one daily partition, as the asset fills them in."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return {
        "partition_start": start.isoformat(),
        "partition_end": (start + timedelta(days=1)).isoformat(),
        "partition_key": day.isoformat(),
    }


@dataclass
class FirstPage:
    url: str
    records: list[bytes]


def fetch_first_page(request: RequestConfig, variables: dict[str, str]) -> FirstPage:
    """The first page of the request, with the task's auth and pagination parameters."""
    import logging

    from adu_assets.sources.http import _Fetcher, safe_url

    fetcher = _Fetcher(request, variables, logging.getLogger("adu.preview"))
    try:
        # Only the first page is taken: the generator never runs on to ask for a second one.
        page = next(iter(fetcher.pages()))
        return FirstPage(safe_url(page.url, fetcher.auth.secret_params), page.records)
    finally:
        fetcher.close()


def records_frame(records: list[bytes]) -> pl.DataFrame:
    """One page's records decoded with one schema and flattened to dot paths, as the mappings see them."""
    import io

    import polars as pl

    from adu_assets.sources.mapping import flatten_structs

    if not records:
        return pl.DataFrame()
    wrapped = [r if r.lstrip().startswith(b"{") else b'{"value":' + r + b"}" for r in records]
    frame = pl.read_ndjson(io.BytesIO(b"\n".join(wrapped)), infer_schema_length=None)
    return flatten_structs(frame)


def _sample(column: pl.Series) -> str:
    values = column.drop_nulls()
    if values.len() == 0:
        return "null"
    value = values[0]
    if hasattr(value, "to_list"):
        value = value.to_list()
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_field(path: str, column: pl.Series) -> Field:
    """Inferred type and suggested transforms of one flattened field, from its values on the page."""
    import polars as pl

    dtype = column.dtype
    sample = _sample(column)
    if dtype == pl.Null or column.null_count() == column.len():
        return Field(path, "null", sample, [], note="always null on this page: type unknown")
    if dtype.is_integer():
        return Field(path, "integer", sample, ["to_int"])
    if dtype.is_float():
        return Field(path, "number", sample, ["to_float"])
    if dtype == pl.Boolean:
        return Field(path, "boolean", sample, ["to_bool"])
    if isinstance(dtype, pl.List | pl.Array):
        return Field(path, "list", sample, [], note="a list: add `explode: true` for one row per element")
    if dtype != pl.String:
        return Field(path, str(dtype).lower(), sample, [])
    text = column.drop_nulls().str.strip_chars()

    def every(pattern: str) -> bool:
        return bool(text.str.contains(pattern).all())

    if every(_DATE):
        return Field(path, "date (text)", sample, ["to_date"])
    if every(_TS_WITH_ZONE):
        return Field(path, "timestamp (text)", sample, ["to_timestamp"])
    if every(_TS_NAIVE_T):
        return Field(
            path, "timestamp (text, no zone: read as UTC)", sample, ["to_timestamp"], "%Y-%m-%dT%H:%M:%S"
        )
    if every(_TS_NAIVE_SPACE):
        return Field(
            path, "timestamp (text, no zone: read as UTC)", sample, ["to_timestamp"], "%Y-%m-%d %H:%M:%S"
        )
    if every(_INT):
        return Field(path, "integer (text)", sample, ["trim", "to_int"])
    if every(_FLOAT):
        return Field(path, "number (text)", sample, ["trim", "to_float"])
    if every(_BOOL):
        return Field(path, "boolean (text)", sample, ["trim", "to_bool"])
    return Field(path, "text", sample, ["trim"])


def target_name(path: str, taken: set[str]) -> str:
    """A destination column name for a field path: upper case, letters, digits and underscores."""
    base = re.sub(r"\W+", "_", path).strip("_").upper() or "FIELD"
    if base[0].isdigit():
        base = "F_" + base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _yaml_scalar(text: str) -> str:
    import yaml

    return str(yaml.safe_dump(text, default_style=None).strip().removesuffix("...").strip())


def mappings_block(fields: list[Field]) -> str:
    """A ready `mappings:` block (flow style, one mapping per line, as in the README)."""
    taken: set[str] = set()
    lines = ["mappings:"]
    for f in fields:
        parts = [f"source: {_yaml_scalar(f.path)}", f"target: {target_name(f.path, taken)}"]
        if f.transforms:
            parts.append(f"transforms: [{', '.join(f.transforms)}]")
        if f.fmt:
            parts.append(f"format: {_yaml_scalar(f.fmt)}")
        line = "  - {" + ", ".join(parts) + "}"
        if f.note:
            line += f"   # {f.note}"
        lines.append(line)
    return "\n".join(lines)


def preview(path: Path, day: date, out: Any = sys.stdout) -> int:
    from adu_assets.cli.defs_file import DefsFileError, read_defs
    from adu_assets.secrets import redact
    from adu_assets.sources.http import ApiError

    try:
        entries = [e for e in read_defs(path) if e.type_name == "adu_assets.ApiIngest"]
    except DefsFileError as e:
        print(f"adu preview: {e}", file=sys.stderr)
        return 1
    if not entries:
        print(f"adu preview: {path} has no adu_assets.ApiIngest component to preview", file=sys.stderr)
        return 1
    status = 0
    for entry in entries:
        request = entry.component.request
        try:
            page = fetch_first_page(request, partition_variables(day))
            frame = records_frame(page.records)
        except ApiError as e:
            print(f"adu preview: {entry.name}: {e}", file=sys.stderr)
            status = 1
            continue
        except Exception as e:  # a decode error names the record; nothing here may carry a secret
            print(f"adu preview: {entry.name}: {type(e).__name__}: {redact(str(e))}", file=sys.stderr)
            status = 1
            continue
        fields = [describe_field(name, frame[name]) for name in frame.columns]
        print(f"# {entry.name}: {request.method} {page.url}", file=out)
        print(
            f"# page 1 of partition {day.isoformat()}: {len(page.records)} records, {len(fields)} fields",
            file=out,
        )
        if not fields:
            print("# no records on the first page: pick another day with --partition", file=out)
            continue
        width = max(len(f.path) for f in fields)
        kind_width = max(len(f.kind) for f in fields)
        print(f"# {'field'.ljust(width)}  {'type'.ljust(kind_width)}  sample", file=out)
        for f in fields:
            print(f"# {f.path.ljust(width)}  {f.kind.ljust(kind_width)}  {f.sample}", file=out)
        print(file=out)
        print(mappings_block(fields), file=out)
    return status


def _run(args: argparse.Namespace) -> int:
    day = (
        date.fromisoformat(args.partition) if args.partition else datetime.now(UTC).date() - timedelta(days=1)
    )
    return preview(Path(args.path), day)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "preview",
        help="fetch one page of an ApiIngest task; print its fields and a ready mappings: block",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="the component's defs.yaml (or its folder)")
    p.add_argument(
        "--partition", help="day whose parameters fill the request (YYYY-MM-DD; default yesterday)"
    )
    p.set_defaults(func=_run)
