"""Column rules from the `checks:` YAML block, validated with pandera's polars backend.

Everything here is pure: data in, `CheckOutcome` out. The Dagster wiring lives in `asset_checks.py`.
`pandera.polars` costs about 1.6 s to import, so it is imported inside `validate_rules` only. Even polars
(0.6 s) is imported inside the functions: components import these models while definitions load, and
200 tables must load in under 2 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field, field_validator

if TYPE_CHECKING:
    import pandera.polars as pa
    import polars as pl

Severity = Literal["ERROR", "WARN"]

# The markdown table of failure cases stays small: Dagster stores metadata in the event log.
MAX_FAILURE_CASES_SHOWN = 20
# YAML bounds are numbers or ISO date/datetime strings. Dagster's component resolver accepts only plain
# types in YAML models, so strings are converted to date/datetime after validation (see ColumnRules).
Bound = int | float | str


def _as_bound(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"bound {value!r} is neither a number nor an ISO date or datetime") from None


class ColumnRules(dg.Model):
    """Rules for one column. Omitted rules are not checked."""

    not_null: bool = False
    ge: Bound | None = None
    le: Bound | None = None
    gt: Bound | None = None
    lt: Bound | None = None
    isin: list[Any] | None = None
    regex: str | None = None
    dtype: str | None = Field(
        default=None,
        description='A polars dtype name: "Int64", "Utf8"/"String", "Float64", "Date", "Datetime", "Decimal", '
        '"Decimal(15,2)", "Datetime(us)", "Datetime(us,UTC)", ...',
    )
    # Columns are nullable unless a rule says otherwise: pandera's own default (not nullable) would make
    # every rule-bearing column with an occasional NULL fail, which is not what a YAML `ge: 0` means.
    nullable: bool = True

    @field_validator("ge", "le", "gt", "lt", mode="after")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return _as_bound(value)


class RowCountRule(dg.Model):
    min: int | None = None
    max: int | None = None


class DriftConfig(dg.Model):
    columns: list[str] | None = Field(
        default=None, description="None: every numeric and low-cardinality categorical column"
    )
    threshold: float = Field(default=0.3, description="fail when the share of drifted columns exceeds this")
    sample_rows: int = 100_000
    seed: int = 42


class FreshnessConfig(dg.Model):
    max_lag_hours: float


class ChecksConfig(dg.Model):
    columns: dict[str, ColumnRules] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list, description="columns that together form a unique key")
    row_count: RowCountRule | None = None
    drift: DriftConfig | None = None
    blocking: bool = False
    freshness: FreshnessConfig | None = None


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    severity: Severity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def severity_for(blocking: bool) -> Severity:
    return "ERROR" if blocking else "WARN"


# --- dtypes -------------------------------------------------------------------------------------------

_DTYPE_ALIASES = {"Utf8": "String", "Str": "String", "Text": "String", "Bool": "Boolean"}
_PARAMETRIC = re.compile(r"^\s*(\w+)\s*(?:\((.*)\))?\s*$")


def parse_dtype(name: str) -> pl.DataType | type[pl.DataType]:
    """Turn a YAML dtype name into a polars dtype.

    A bare parametric name ("Decimal", "Datetime", "Duration") returns the *class*, which
    `dtype_matches` treats as "any precision/unit", since a user writing `dtype: Decimal` means
    "is a decimal", not "is Decimal(38, 0)".
    """
    import polars as pl

    m = _PARAMETRIC.match(name)
    if not m:
        raise ValueError(
            f"unknown dtype {name!r}: use a polars dtype name such as Int64, String or Decimal(15,2)"
        )
    base, args = _DTYPE_ALIASES.get(m.group(1), m.group(1)), m.group(2)
    cls = getattr(pl, base, None)
    if not (isinstance(cls, type) and issubclass(cls, pl.DataType)):
        raise ValueError(
            f"unknown dtype {name!r}: use a polars dtype name such as Int64, String or Decimal(15,2)"
        )
    if args is None:
        return cls
    parts = [p.strip().strip("'\"") for p in args.split(",") if p.strip()]
    if cls is pl.Decimal:
        return pl.Decimal(int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    if cls is pl.Datetime:
        return pl.Datetime(parts[0] if parts else "us", parts[1] if len(parts) > 1 else None)  # type: ignore[arg-type]
    if cls is pl.Duration:
        return pl.Duration(parts[0] if parts else "us")  # type: ignore[arg-type]
    raise ValueError(f"dtype {name!r} takes no parameters here")


def dtype_matches(expected: pl.DataType | type[pl.DataType], actual: pl.DataType) -> bool:
    if isinstance(expected, type):
        return actual.base_type() == expected
    return bool(actual == expected)


# --- validation ---------------------------------------------------------------------------------------


def _as_lazy(data: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    import polars as pl

    return data.lazy() if isinstance(data, pl.DataFrame) else data


def _build_pandera_schema(
    cfg: ChecksConfig, present: pl.Schema, unique: list[str]
) -> tuple[pa.DataFrameSchema, list[dict[str, Any]]]:
    """Build the pandera schema, plus the dtype failures found from the schema alone.

    A parametric dtype ("Decimal") is resolved to the frame's own dtype when the base type matches,
    because pandera compares dtypes by equality and would otherwise fail Decimal(15,2) against Decimal(38,0).
    """
    import pandera.polars as pa

    columns: dict[str, pa.Column] = {}
    dtype_failures: list[dict[str, Any]] = []
    for name, rules in cfg.columns.items():
        if name not in present:
            continue
        checks: list[pa.Check] = []
        if rules.ge is not None:
            checks.append(pa.Check.ge(rules.ge))
        if rules.le is not None:
            checks.append(pa.Check.le(rules.le))
        if rules.gt is not None:
            checks.append(pa.Check.gt(rules.gt))
        if rules.lt is not None:
            checks.append(pa.Check.lt(rules.lt))
        if rules.isin is not None:
            checks.append(pa.Check.isin(rules.isin))
        if rules.regex is not None:
            checks.append(pa.Check.str_matches(rules.regex))
        dtype: Any = None
        if rules.dtype is not None:
            expected = parse_dtype(rules.dtype)
            actual = present[name]
            if dtype_matches(expected, actual):
                dtype = actual
            else:
                # Reported here rather than by pandera: value checks on a wrongly typed column would
                # only add noise (or raise inside polars), so the column's value checks are skipped.
                dtype_failures.append(
                    {
                        "column": name,
                        "check": f"dtype('{rules.dtype}')",
                        "failure_case": str(actual),
                        "index": None,
                    }
                )
                checks = []
        columns[name] = pa.Column(dtype, checks=checks, nullable=rules.nullable and not rules.not_null)
    for name in unique:
        columns.setdefault(name, pa.Column(None, nullable=True))
    schema = pa.DataFrameSchema(columns, unique=unique or None, strict=False, name="checks")
    return schema, dtype_failures


def _failure_table(cases: pl.DataFrame) -> str:
    import polars as pl

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text[:80] + "…" if len(text) > 80 else text

    # Take the 20 rows round-robin over the failed rules, so one rule with a million failures cannot
    # hide the others, then list them rule by rule.
    shown = (
        cases.with_columns(
            pl.int_range(pl.len()).over(["column", "check"]).alias("_turn"),
            pl.struct("column", "check").rank("min").alias("_rule"),
        )
        .sort("_turn", maintain_order=True)
        .head(MAX_FAILURE_CASES_SHOWN)
        .sort("_rule", "_turn")
    )
    lines = ["| column | rule | value | row |", "|---|---|---|---|"]
    for row in shown.iter_rows(named=True):
        lines.append(
            f"| {cell(row['column'])} | {cell(row['check'])} | {cell(row['failure_case'])} | {cell(row['index'])} |"
        )
    return "\n".join(lines)


def validate_rules(data: pl.LazyFrame | pl.DataFrame, cfg: ChecksConfig) -> CheckOutcome:
    """Validate the column rules and the unique key of `cfg` with pandera (polars backend, lazy=True).

    Only the columns named by a rule are read: on a `scan_parquet` LazyFrame the projection is pushed
    down, so a wide table costs what its checked columns cost. The frame stays lazy: pandera collects
    each check on its own, so peak memory is one check's columns, not every checked column at once.
    On lineitem SF 0.1 that was as fast as collecting the checked columns first (0.16 s both), so
    nothing is gained by materializing. A LazyFrame over an expensive source should be cached by the
    caller (e.g. landed to Parquet first), since each check re-reads it.
    """
    import polars as pl

    severity = severity_for(cfg.blocking)
    unique = list(cfg.unique)
    wanted = list(dict.fromkeys([*cfg.columns, *unique]))
    if not wanted:
        return CheckOutcome(True, severity, "no column rules declared", {"columns_checked": []})

    lf = _as_lazy(data)
    frame_schema = lf.collect_schema()
    present = [c for c in wanted if c in frame_schema]
    missing = [c for c in wanted if c not in frame_schema]
    unique_present = unique if all(c in frame_schema for c in unique) else []

    schema, failures = _build_pandera_schema(cfg, frame_schema, unique_present)
    failure_rows: list[dict[str, Any]] = [
        {"column": c, "check": "column_in_dataframe", "failure_case": c, "index": None} for c in missing
    ]
    failure_rows += failures

    from pandera.config import ValidationDepth, config_context
    from pandera.errors import SchemaErrors

    frame = lf.select(present)
    rows = int(lf.select(pl.len()).collect().item())
    cases = pl.DataFrame(
        schema={"column": pl.String, "check": pl.String, "failure_case": pl.String, "index": pl.Int64}
    )
    if present:
        # pandera validates only the schema of polars frames unless told otherwise (validation depth
        # SCHEMA_ONLY for LazyFrames), and PANDERA_VALIDATION_ENABLED=False would silently turn it off:
        # pin both so a check here always looks at the data.
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            try:
                schema.validate(frame, lazy=True)
            except SchemaErrors as exc:
                fc = exc.failure_cases
                cases = fc.select(
                    pl.col("column").cast(pl.String),
                    pl.col("check").cast(pl.String),
                    pl.col("failure_case").cast(pl.String),
                    pl.col("index").cast(pl.Int64),
                )
    if unique_present:
        key = ",".join(unique_present)
        cases = cases.with_columns(
            pl.when(pl.col("check") == "multiple_fields_uniqueness")
            .then(pl.lit(key))
            .otherwise(pl.col("column"))
            .alias("column"),
            pl.when(pl.col("check") == "multiple_fields_uniqueness")
            .then(pl.lit(f"unique({key})"))
            .otherwise(pl.col("check"))
            .alias("check"),
        )
    if failure_rows:
        cases = pl.concat([pl.DataFrame(failure_rows, schema=cases.schema), cases])

    metadata: dict[str, Any] = {
        "rows_checked": rows,
        "columns_checked": present,
    }
    if cases.is_empty():
        metadata["rules_checked"] = _rule_count(cfg)
        return CheckOutcome(True, severity, f"all rules passed on {rows} rows", metadata)

    summary = (
        cases.group_by(["column", "check"], maintain_order=True)
        .agg(pl.col("index").is_not_null().sum().alias("failing_rows"))
        .sort("failing_rows", descending=True, maintain_order=True)
    )
    failed = summary.to_dicts()
    parts = [
        f"{f['column']}: {f['check']}" + (f" on {f['failing_rows']} rows" if f["failing_rows"] else "")
        for f in failed[:5]
    ]
    more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
    metadata.update(
        {
            "failed_rules": failed,
            "failed_rule_count": len(failed),
            "failing_rows_total": int(cases.filter(pl.col("index").is_not_null())["index"].n_unique()),
            "failure_cases": dg.MetadataValue.md(_failure_table(cases)),
        }
    )
    return CheckOutcome(
        False, severity, f"{len(failed)} rule(s) failed: " + "; ".join(parts) + more, metadata
    )


def _rule_count(cfg: ChecksConfig) -> int:
    n = 1 if cfg.unique else 0
    for rules in cfg.columns.values():
        n += sum(
            v is not None
            for v in (rules.ge, rules.le, rules.gt, rules.lt, rules.isin, rules.regex, rules.dtype)
        )
        n += int(rules.not_null or not rules.nullable)
    return n


def check_row_count(data: pl.LazyFrame | pl.DataFrame, rule: RowCountRule, *, blocking: bool) -> CheckOutcome:
    """Row-count bounds. On a `scan_parquet` frame polars answers `len()` from the file footers."""
    import polars as pl

    rows = int(_as_lazy(data).select(pl.len()).collect().item())
    problems = []
    if rule.min is not None and rows < rule.min:
        problems.append(f"{rows} rows is below the minimum of {rule.min}")
    if rule.max is not None and rows > rule.max:
        problems.append(f"{rows} rows is above the maximum of {rule.max}")
    metadata: dict[str, Any] = {"row_count": rows, "min": rule.min, "max": rule.max}
    if problems:
        return CheckOutcome(False, severity_for(blocking), "; ".join(problems), metadata)
    return CheckOutcome(True, severity_for(blocking), f"{rows} rows within bounds", metadata)
