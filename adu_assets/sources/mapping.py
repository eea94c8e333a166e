"""From raw API records to mapped rows: flatten nested JSON to dot paths, then apply the YAML `mappings:`.

Everything here is a polars expression evaluated over whole columns; there is no per-record Python. A value
that fails its transform (``"abc"`` under ``to_int``) is detected by comparing nulls before and after a
non-strict cast, and the record it came from goes to `MappingResult.errors` with its reason instead of
being nulled or failing the batch.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dagster as dg
from pydantic import Field, model_validator

if TYPE_CHECKING:
    import polars as pl

__all__ = ["MappingConfig", "MappingError", "MappingResult", "apply_mappings", "load_records"]

Transform = Literal["trim", "upper", "lower", "to_int", "to_float", "to_bool", "to_date", "to_timestamp"]

RECORD_INDEX = "_record_index"
PAGE = "_page"
# A record that is not a JSON object (an API returning a list of strings) lands under this column.
SCALAR_COLUMN = "_value"

_TRUE = ("true", "t", "yes", "y", "1", "on")
_FALSE = ("false", "f", "no", "n", "0", "off")


class MappingError(ValueError):
    """The mappings themselves are wrong (not a bad value in one record): names the mapping and the fix."""


class MappingConfig(dg.Model):
    source: str = Field(description="Dot path into the record, e.g. profile.address.city")
    target: str = Field(description="Destination column")
    transforms: list[Transform] = Field(default_factory=list, description="Applied in order")
    default: str | int | float | bool | None = Field(
        default=None, description="Used when the source is missing or null (goes through the transforms too)"
    )
    format: str | None = Field(default=None, description="strptime format for to_date / to_timestamp")
    explode: bool = Field(
        default=False, description="One row per element of a list; otherwise lists stay lists"
    )

    @model_validator(mode="after")
    def _check(self) -> MappingConfig:
        if self.format and not {"to_date", "to_timestamp"} & set(self.transforms):
            raise ValueError(f"mapping {self.target}: format only applies to to_date or to_timestamp")
        return self


@dataclass
class MappingResult:
    rows: pl.DataFrame
    errors: pl.DataFrame
    missing_sources: list[str] = field(default_factory=list)


# --- raw records -> flat frame --------------------------------------------------------------------


def load_records(raw_files: Sequence[Path | str]) -> pl.DataFrame:
    """Read raw record Parquet files (from `fetch_to_parquet`) and flatten objects to dot-path columns.

    All records are decoded in one call so polars infers one schema over every record: a field that is
    an int in one record and a string in another becomes a string, not an error.
    """
    import polars as pl

    base_schema = {PAGE: pl.Int32(), RECORD_INDEX: pl.Int64()}
    if not raw_files:
        return pl.DataFrame(schema=base_schema)
    raw = pl.read_parquet([str(p) for p in raw_files], columns=[PAGE, RECORD_INDEX, "_raw"])
    if raw.height == 0:
        return pl.DataFrame(schema=base_schema)
    text = raw.select(
        pl.when(pl.col("_raw").str.starts_with("{"))
        .then(pl.col("_raw"))
        .otherwise(pl.concat_str(pl.lit('{"' + SCALAR_COLUMN + '":'), pl.col("_raw"), pl.lit("}")))
        .str.join("\n")
    ).item()
    try:
        decoded = pl.read_ndjson(io.BytesIO(text.encode()), infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise MappingError(
            f"the raw records do not share a structure polars can unify ({exc}); "
            "a field is a list of objects in some records and a list of scalars in others"
        ) from None
    if decoded.width and decoded.height != raw.height:
        raise MappingError(f"decoded {decoded.height} records from {raw.height} raw rows")
    flat = flatten_structs(decoded)
    if flat.width == 0:
        return raw.select(PAGE, RECORD_INDEX)
    return pl.concat([raw.select(PAGE, RECORD_INDEX), flat], how="horizontal")


def flatten_structs(df: pl.DataFrame) -> pl.DataFrame:
    """Struct columns become one column per field, named by dot path, down to the leaves."""
    import polars as pl

    while any(isinstance(dt, pl.Struct) for dt in df.schema.values()):
        exprs: list[pl.Expr] = []
        for name, dtype in df.schema.items():
            if isinstance(dtype, pl.Struct):
                # An always-empty object has no fields to surface; keeping it would be an unusable column.
                exprs.extend(
                    pl.col(name).struct.field(f.name).alias(f"{name}.{f.name}") for f in dtype.fields
                )
            else:
                exprs.append(pl.col(name))
        df = df.select(exprs)
    return df


# --- mappings ------------------------------------------------------------------------------------------


def _resolve_source(schema: pl.Schema, source: str) -> tuple[pl.Expr, pl.DataType] | None:
    """The expression reading `source`: a flattened column, or a path into a list of objects
    (``items.sku`` over ``items: list[{sku, qty}]``) read element-wise as a list."""
    import polars as pl

    if source in schema:
        return pl.col(source), schema[source]
    parts = source.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        dtype = schema.get(prefix)
        if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
            continue
        inner: Any = dtype.inner
        element = pl.element()
        for part in parts[i:]:
            fields = {f.name: f.dtype for f in inner.fields} if isinstance(inner, pl.Struct) else {}
            if part not in fields:
                return None
            element = element.struct.field(part)
            inner = fields[part]
        return pl.col(prefix).list.eval(element), pl.List(inner)
    return None


def _step(
    value: pl.Expr,
    dtype: pl.DataType,
    transform: str,
    fmt: str | None,
    materialize: Callable[[pl.Expr], pl.Expr] = lambda e: e,
) -> tuple[pl.Expr, pl.DataType, str]:
    """One transform: the new expression, its dtype, and the reason to report where it turned a value null.

    `materialize(expr)` computes `expr` once, as a column of its own, and returns a reference to it: polars
    does not share a subexpression used twice in one expression, so parsing steps use it for the
    intermediate values they read more than once.
    """
    import polars as pl

    def as_text() -> pl.Expr:
        if isinstance(dtype, pl.String):
            return value
        return value.cast(pl.String, strict=False)

    if transform in ("trim", "upper", "lower"):
        text = as_text()
        out = {
            "trim": text.str.strip_chars(),
            "upper": text.str.to_uppercase(),
            "lower": text.str.to_lowercase(),
        }[transform]
        return out, pl.String(), f"{transform}: not text"
    if transform == "to_int":
        if dtype.is_integer():
            return value.cast(pl.Int64, strict=False), pl.Int64(), "to_int: out of range for a 64-bit integer"
        if dtype.is_float():
            number = value
        elif isinstance(dtype, pl.Boolean):
            return value.cast(pl.Int64), pl.Int64(), "to_int: not an integer"
        else:
            text = as_text().str.strip_chars()
            number = text.cast(pl.Float64, strict=False)
            exact = text.cast(pl.Int64, strict=False)
        # "12.0" is an integer a JSON encoder wrote as a float; "12.5" is not, and truncating it would lie.
        whole = pl.when(number.is_finite() & (number == number.floor())).then(
            number.cast(pl.Int64, strict=False)
        )
        out = pl.coalesce(exact, whole) if not dtype.is_float() else whole
        return out, pl.Int64(), "to_int: not an integer"
    if transform == "to_float":
        if dtype.is_numeric() or isinstance(dtype, pl.Boolean):
            return value.cast(pl.Float64, strict=False), pl.Float64(), "to_float: not a number"
        return (
            as_text().str.strip_chars().cast(pl.Float64, strict=False),
            pl.Float64(),
            "to_float: not a number",
        )
    if transform == "to_bool":
        reason = "to_bool: not a boolean (true/false, yes/no, 1/0, on/off)"
        if isinstance(dtype, pl.Boolean):
            return value, pl.Boolean(), reason
        if dtype.is_numeric():
            out = (
                pl.when(value == 1)
                .then(pl.lit(True))
                .when(value == 0)
                .then(pl.lit(False))
                .otherwise(pl.lit(None))
            )
            return out.cast(pl.Boolean), pl.Boolean(), reason
        mapping = dict.fromkeys(_TRUE, True) | dict.fromkeys(_FALSE, False)
        out = (
            as_text()
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(mapping, default=None, return_dtype=pl.Boolean)
        )
        return out, pl.Boolean(), reason
    if transform == "to_date":
        fmt = fmt or "%Y-%m-%d"
        if isinstance(dtype, pl.Date):
            return value, pl.Date(), ""
        if isinstance(dtype, pl.Datetime):
            return value.dt.date(), pl.Date(), ""
        out = as_text().str.strip_chars().str.to_date(fmt, strict=False)
        return out, pl.Date(), f"to_date: not a date in format {fmt}"
    if transform == "to_timestamp":
        utc = pl.Datetime("us", "UTC")
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone:
                return value.dt.convert_time_zone("UTC").cast(utc), utc, ""
            return value.dt.replace_time_zone("UTC").cast(utc), utc, ""
        if isinstance(dtype, pl.Date):
            return value.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), utc, ""
        text = as_text().str.strip_chars()
        if fmt:
            # A format without %z describes naive values, which are read as UTC.
            out = text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
            return out, utc, f"to_timestamp: not a timestamp in format {fmt}"
        iso = materialize(text.str.replace(r"[Zz]$", "+00:00").str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T"))
        seconds = materialize(
            iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us", time_zone="UTC", strict=False)
        )
        # The minutes-only form is tried only where the full form failed (a null input parses for free).
        minutes = pl.when(seconds.is_null()).then(iso)
        out = pl.coalesce(
            seconds,
            minutes.str.to_datetime("%Y-%m-%dT%H:%M%z", time_unit="us", time_zone="UTC", strict=False),
        )
        return (
            out,
            utc,
            "to_timestamp: not an ISO 8601 timestamp with a time zone (e.g. 2026-01-31T12:00:00Z)",
        )
    raise MappingError(f"unknown transform {transform}")


def _reason(steps: list[tuple[pl.Expr, pl.Expr, str]]) -> pl.Expr:
    """The reason of the first transform that turned a value into null, else null.

    `steps` holds (value before, value after, reason) per transform, as column references: null in, null
    out is not a failure; a value in and null out is.
    """
    import polars as pl

    if not steps:
        return pl.lit(None, dtype=pl.String)
    before, after, reason = steps[0]
    expr: Any = pl.when(before.is_not_null() & after.is_null()).then(pl.lit(reason))
    for before, after, reason in steps[1:]:
        expr = expr.when(before.is_not_null() & after.is_null()).then(pl.lit(reason))
    return cast("pl.Expr", expr.otherwise(pl.lit(None, dtype=pl.String)))


def apply_mappings(records: pl.DataFrame, mappings: Sequence[MappingConfig]) -> MappingResult:
    """Map flattened records (`load_records`) to target columns.

    `rows` holds the target columns of records with no failed transform; `errors` has one row per failed
    value (``_record_index``, ``target``, ``source_value``, ``reason``). A record with any error is left
    out of `rows` entirely, so a half-mapped row never reaches an upsert.
    """
    import polars as pl

    targets = [m.target for m in mappings]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise MappingError(f"mappings: target {', '.join(dupes)} appears more than once")
    if RECORD_INDEX not in records.columns:
        records = records.with_row_index(RECORD_INDEX).with_columns(pl.col(RECORD_INDEX).cast(pl.Int64))
    schema = records.schema

    missing: list[str] = []
    sources: list[pl.Expr] = [pl.col(RECORD_INDEX)]
    dtypes: list[pl.DataType] = []
    explode: list[str] = []
    for i, m in enumerate(mappings):
        dtype: pl.DataType
        resolved = _resolve_source(schema, m.source)
        if resolved is None:
            missing.append(m.source)
            expr, dtype = pl.lit(None), pl.Null()
        else:
            expr, dtype = resolved
        if m.explode and isinstance(dtype, pl.List):
            explode.append(f"__src{i}")
            dtype = cast("pl.DataType", dtype.inner)
        elif isinstance(dtype, pl.List) and m.transforms:
            raise MappingError(
                f"mapping {m.target}: source {m.source} is a list; set explode: true to transform its elements"
            )
        sources.append(expr.alias(f"__src{i}"))
        dtypes.append(dtype)

    frame = records.lazy().select(sources)
    if explode:
        # An empty list keeps its record as one row of nulls: dropping it would lose the record's other fields.
        frame = frame.explode(explode, empty_as_null=True)
    # Defaults fill after the explode, so an exploded list's null elements get them too.
    fills: list[pl.Expr] = []
    for i, m in enumerate(mappings):
        if m.default is None:
            continue
        if isinstance(dtypes[i], pl.Null):
            fill = pl.Series([m.default])
            dtypes[i] = fill.dtype
        else:
            try:
                fill = pl.Series([m.default]).cast(dtypes[i], strict=True)
            except pl.exceptions.PolarsError:
                raise MappingError(
                    f"mapping {m.target}: default {m.default!r} does not fit source {m.source} of type {dtypes[i]}"
                ) from None
        fills.append(
            pl.coalesce(pl.col(f"__src{i}"), pl.lit(fill.item(), dtype=dtypes[i])).alias(f"__src{i}")
        )
    if fills:
        frame = frame.with_columns(fills)

    # Every transform step becomes a column of its own, computed once: the failure reasons compare each
    # step with the one before, and written as one nested expression polars evaluated every step again
    # for the reason (to_timestamp's two parses dominated the whole mapping).
    current: dict[int, tuple[str, pl.DataType]] = {}
    stages: list[list[pl.Expr]] = [[]]
    for i, (m, dtype) in enumerate(zip(mappings, dtypes, strict=True)):
        if not m.transforms:
            continue
        if isinstance(dtype, pl.Struct):
            stages[0].append(pl.col(f"__src{i}").struct.json_encode().alias(f"__v{i}_0"))
            current[i] = (f"__v{i}_0", pl.String())
        else:
            current[i] = (f"__src{i}", dtype)
    shown_cols = {i: name for i, (name, _) in current.items()}
    steps: dict[int, list[tuple[pl.Expr, pl.Expr, str]]] = {i: [] for i in current}
    for j in range(max((len(m.transforms) for m in mappings), default=0)):
        stage: list[pl.Expr] = []
        # Intermediate columns of this step, by depth: the k-th one a step asks for may read the ones before.
        inner: list[list[pl.Expr]] = []
        for i, m in enumerate(mappings):
            if j >= len(m.transforms):
                continue
            name, dtype = current[i]
            depth = iter(range(1_000))

            def materialize(
                expr: pl.Expr,
                name: str = f"__v{i}_{j + 1}",
                depth: Iterator[int] = depth,
                inner: list[list[pl.Expr]] = inner,
            ) -> pl.Expr:
                k = next(depth)
                if len(inner) <= k:
                    inner.append([])
                inner[k].append(expr.alias(f"{name}_{k}"))
                return pl.col(f"{name}_{k}")

            new, new_dtype, reason = _step(pl.col(name), dtype, m.transforms[j], m.format, materialize)
            new_name = f"__v{i}_{j + 1}"
            stage.append(new.alias(new_name))
            steps[i].append((pl.col(name), pl.col(new_name), reason))
            current[i] = (new_name, new_dtype)
        stages.extend(inner)
        stages.append(stage)
    for stage in stages:
        if stage:
            frame = frame.with_columns(stage)

    outputs: list[pl.Expr] = [pl.col(RECORD_INDEX)]
    for i, m in enumerate(mappings):
        if i not in current:
            outputs.append(pl.col(f"__src{i}").alias(m.target))
            outputs.append(pl.lit(None, dtype=pl.String).alias(f"__reason{i}"))
            outputs.append(pl.lit(None, dtype=pl.String).alias(f"__shown{i}"))
            continue
        outputs.append(pl.col(current[i][0]).alias(m.target))
        outputs.append(_reason(steps[i]).alias(f"__reason{i}"))
        shown, first_dtype = pl.col(shown_cols[i]), dtypes[i]
        if not isinstance(first_dtype, pl.String | pl.Struct):
            shown = shown.cast(pl.String, strict=False)
        outputs.append(shown.alias(f"__shown{i}"))
    try:
        mapped = frame.select(outputs).collect()
    except pl.exceptions.ShapeError:
        raise MappingError(
            "mappings with explode: true must read lists of the same length in each record "
            f"({', '.join(m.source for m in mappings if m.explode)})"
        ) from None

    error_frames = [
        mapped.filter(pl.col(f"__reason{i}").is_not_null()).select(
            pl.col(RECORD_INDEX),
            pl.lit(m.target).alias("target"),
            pl.col(f"__shown{i}").alias("source_value"),
            pl.col(f"__reason{i}").alias("reason"),
        )
        for i, m in enumerate(mappings)
        if m.transforms
    ]
    error_schema = {
        RECORD_INDEX: pl.Int64(),
        "target": pl.String(),
        "source_value": pl.String(),
        "reason": pl.String(),
    }
    errors = pl.concat(error_frames) if error_frames else pl.DataFrame(schema=error_schema)
    errors = errors.cast(error_schema).sort(RECORD_INDEX, maintain_order=True)  # type: ignore[arg-type]
    bad = errors.get_column(RECORD_INDEX).unique()
    rows = mapped.filter(~pl.col(RECORD_INDEX).is_in(bad.implode())).select(targets)
    return MappingResult(rows=rows, errors=errors, missing_sources=missing)
