"""Column rules (pandera), row counts, freshness and the Dagster wiring, on Chinook from a real PostgreSQL."""

# No `from __future__ import annotations`: Dagster rejects a string annotation on `context`.
import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from adu_assets.checks.asset_checks import build_table_checks
from adu_assets.checks.freshness import check_freshness, freshness_policy
from adu_assets.checks.rules import (
    ChecksConfig,
    FreshnessConfig,
    RowCountRule,
    check_row_count,
    parse_dtype,
    validate_rules,
)
from adu_assets_tests.conftest import sample_data
from adu_assets_tests.pg_server import PgServer

CHINOOK_DB = "chinook"


def load_chinook(pg: PgServer) -> None:
    """Chinook's script drops and creates its own database `chinook`: load it once per server."""
    with pg.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (CHINOOK_DB,)).fetchone()
    if exists:
        with pg.connect(CHINOOK_DB) as conn:
            if conn.execute("SELECT to_regclass('public.invoice_line')").fetchone()[0] is not None:
                return
    pg.run_sql_file("postgres", sample_data("chinook", "Chinook_PostgreSql.sql"))


def read_table(pg: PgServer, sql: str) -> pl.DataFrame:
    with pg.connect(CHINOOK_DB) as conn:
        return pl.read_database(sql, conn, infer_schema_length=None)


def scalar(pg: PgServer, sql: str) -> Any:
    with pg.connect(CHINOOK_DB) as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.fixture(scope="module")
def chinook(pg: PgServer) -> PgServer:
    load_chinook(pg)
    return pg


@pytest.fixture(scope="module")
def invoice(chinook: PgServer, tmp_path_factory: pytest.TempPathFactory) -> pl.LazyFrame:
    """The invoice table landed as Parquet and scanned lazily, the normal input of a check."""
    path = tmp_path_factory.mktemp("invoice") / "invoice.parquet"
    read_table(chinook, "SELECT * FROM invoice ORDER BY invoice_id").write_parquet(path)
    return pl.scan_parquet(path)


def test_rules_pass_on_real_invoices(invoice: pl.LazyFrame, chinook: PgServer) -> None:
    cfg = ChecksConfig.model_validate(
        {
            "columns": {
                "total": {"not_null": True, "ge": 0, "dtype": "Decimal"},
                "invoice_id": {"dtype": "Int64", "gt": 0},
                "invoice_date": {"dtype": "Datetime", "ge": "2009-01-01"},
                "billing_country": {"regex": "^[A-Z][A-Za-z ]+$", "dtype": "Utf8"},
            },
            "unique": ["invoice_id"],
        }
    )
    outcome = validate_rules(invoice, cfg)
    assert outcome.passed, outcome.description
    assert outcome.severity == "WARN"
    assert outcome.metadata["rows_checked"] == scalar(chinook, "SELECT count(*) FROM invoice") == 412
    assert set(outcome.metadata["columns_checked"]) == {
        "total",
        "invoice_id",
        "invoice_date",
        "billing_country",
    }


def test_isin_failure_reports_column_rule_count_and_cases(invoice: pl.LazyFrame, chinook: PgServer) -> None:
    cfg = ChecksConfig.model_validate(
        {
            "columns": {"billing_country": {"isin": ["USA", "Canada", "France"]}, "total": {"le": 20}},
            "blocking": True,
        }
    )
    outcome = validate_rules(invoice, cfg)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    expected_country = scalar(
        chinook, "SELECT count(*) FROM invoice WHERE billing_country NOT IN ('USA', 'Canada', 'France')"
    )
    expected_total = scalar(chinook, "SELECT count(*) FROM invoice WHERE total > 20")
    failed = {(f["column"], f["check"]): f["failing_rows"] for f in outcome.metadata["failed_rules"]}
    assert failed == {
        ("billing_country", "isin(['USA', 'Canada', 'France'])"): expected_country,
        ("total", "less_than_or_equal_to(20)"): expected_total,
    }
    assert expected_country > 0 and expected_total > 0
    assert "billing_country" in outcome.description and str(expected_country) in outcome.description
    table = outcome.metadata["failure_cases"]
    assert isinstance(table, dg.MarkdownMetadataValue)
    rows = [line for line in table.md_str.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 20
    # both failed rules get a share of the 20 rows
    assert any("| total |" in r for r in rows) and any("| billing_country |" in r for r in rows)
    ids_failing = scalar(
        chinook,
        "SELECT count(*) FROM invoice WHERE billing_country NOT IN ('USA','Canada','France') OR total > 20",
    )
    assert outcome.metadata["failing_rows_total"] == ids_failing


def test_not_null_and_nullable_default(chinook: PgServer) -> None:
    customer = read_table(chinook, "SELECT * FROM customer")
    nulls = scalar(chinook, "SELECT count(*) FROM customer WHERE company IS NULL")
    assert nulls > 0
    # A value rule alone does not forbid NULLs (support_rep_id and company have them in Chinook) ...
    ok = validate_rules(customer, ChecksConfig.model_validate({"columns": {"company": {"regex": "."}}}))
    assert ok.passed, ok.description
    # ... not_null does, and nullable: false too.
    for rules in ({"not_null": True}, {"nullable": False}):
        out = validate_rules(customer, ChecksConfig.model_validate({"columns": {"company": rules}}))
        assert not out.passed
        assert out.metadata["failed_rules"] == [
            {"column": "company", "check": "not_nullable", "failing_rows": nulls}
        ]


def test_unique_key_over_several_columns(chinook: PgServer) -> None:
    lines = read_table(chinook, "SELECT * FROM invoice_line").lazy()
    assert validate_rules(lines, ChecksConfig(unique=["invoice_line_id"])).passed
    # (invoice_id) alone is not a key: every line of an invoice with more than one line is a duplicate.
    dup_rows = scalar(
        chinook,
        "SELECT coalesce(sum(n), 0) FROM (SELECT count(*) n FROM invoice_line GROUP BY invoice_id HAVING count(*) > 1) d",
    )
    out = validate_rules(lines, ChecksConfig(unique=["invoice_id"]))
    assert not out.passed
    assert out.metadata["failed_rules"] == [
        {"column": "invoice_id", "check": "unique(invoice_id)", "failing_rows": dup_rows}
    ]
    assert validate_rules(lines, ChecksConfig(unique=["invoice_id", "track_id"])).passed


def test_missing_column_and_wrong_dtype(invoice: pl.LazyFrame) -> None:
    cfg = ChecksConfig.model_validate(
        {"columns": {"no_such_column": {"not_null": True}, "total": {"dtype": "Int64", "ge": 0}}}
    )
    out = validate_rules(invoice, cfg)
    assert not out.passed
    failed = {f["column"]: f["check"] for f in out.metadata["failed_rules"]}
    assert failed == {"no_such_column": "column_in_dataframe", "total": "dtype('Int64')"}
    assert "Decimal(precision=" in out.metadata["failure_cases"].md_str
    # a matching parametric dtype passes, a different precision does not
    assert validate_rules(
        invoice, ChecksConfig.model_validate({"columns": {"total": {"dtype": "Decimal"}}})
    ).passed
    assert not validate_rules(
        invoice, ChecksConfig.model_validate({"columns": {"total": {"dtype": "Decimal(15,2)"}}})
    ).passed


def test_no_rules_passes_without_reading() -> None:
    out = validate_rules(pl.LazyFrame({"a": [1]}), ChecksConfig())
    assert out.passed and out.description == "no column rules declared"


def test_parse_dtype() -> None:
    assert parse_dtype("Utf8") == pl.String
    assert parse_dtype("Decimal(15, 2)") == pl.Decimal(15, 2)
    assert parse_dtype("Datetime(ms, UTC)") == pl.Datetime("ms", "UTC")
    with pytest.raises(ValueError, match="unknown dtype 'Integer'"):
        parse_dtype("Integer")


def test_row_count(invoice: pl.LazyFrame) -> None:
    assert check_row_count(invoice, RowCountRule(min=1, max=412), blocking=False).passed
    low = check_row_count(invoice, RowCountRule(min=1000), blocking=True)
    assert not low.passed and low.severity == "ERROR" and low.metadata["row_count"] == 412
    assert "below the minimum of 1000" in low.description


def test_freshness() -> None:
    now = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC)
    fresh = check_freshness(dt.datetime(2026, 1, 2, 1), 24, now)
    assert fresh.passed and fresh.metadata["lag_hours"] == 11.0
    stale = check_freshness(dt.datetime(2025, 12, 31, 1, tzinfo=dt.UTC), 24, now, blocking=True)
    assert not stale.passed and stale.severity == "ERROR" and stale.metadata["lag_hours"] == 59.0
    assert not check_freshness(None, 24, now).passed
    policy = freshness_policy(FreshnessConfig(max_lag_hours=6))
    assert policy is not None
    spec = dg.AssetSpec("t", freshness_policy=policy)
    assert spec.freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=6), warn_window=dt.timedelta(hours=3)
    )
    assert freshness_policy(None) is None


# --- the Dagster wiring --------------------------------------------------------------------------------


def _partitioned_table(
    tmp_path: Path, frames: dict[str, pl.DataFrame], cfg: ChecksConfig | None, profile: bool = False
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition, list[dg.AssetChecksDefinition], dg.PartitionsDefinition]:
    parts = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
    key = dg.AssetKey(["chinook", "public", "invoice"])

    def path(pk: str) -> Path:
        return tmp_path / "data" / f"invoice-{pk}.parquet"

    @dg.asset(key=key, partitions_def=parts)
    def invoice_asset(context: dg.AssetExecutionContext) -> None:
        path(context.partition_key).parent.mkdir(parents=True, exist_ok=True)
        frames[context.partition_key].write_parquet(path(context.partition_key))

    @dg.asset(deps=[key], partitions_def=parts)
    def downstream() -> None:
        (tmp_path / "downstream-ran").touch()

    def load(context: dg.AssetCheckExecutionContext) -> pl.LazyFrame:
        return pl.scan_parquet(path(context.partition_key))

    def load_previous(context: dg.AssetCheckExecutionContext) -> pl.LazyFrame | None:
        keys = parts.get_partition_keys()
        i = keys.index(context.partition_key)
        return pl.scan_parquet(path(keys[i - 1])) if i > 0 and path(keys[i - 1]).exists() else None

    checks = build_table_checks(
        key,
        cfg,
        load=load,
        load_previous=load_previous,
        baseline_store_root=lambda: tmp_path / "baselines",
        profile=profile,
        partitions_def=parts,
    )
    return invoice_asset, downstream, checks, parts


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def test_partitioned_checks_block_downstream(
    invoice: pl.LazyFrame, tmp_path: Path, dagster_home: Path
) -> None:
    good = invoice.collect()
    bad = good.with_columns(
        pl.when(pl.col("invoice_id") <= 3).then(-pl.col("total")).otherwise("total").alias("total")
    )
    frames = {"2024-01-01": good, "2024-01-02": bad}
    cfg = ChecksConfig.model_validate(
        {"columns": {"total": {"ge": 0}}, "unique": ["invoice_id"], "row_count": {"min": 1}, "blocking": True}
    )
    asset, downstream, checks, _ = _partitioned_table(tmp_path, frames, cfg)
    names = sorted(next(iter(c.check_keys)).name for c in checks)
    assert names == ["row_count", "rules", "schema"]
    assert all(next(iter(c.check_specs)).blocking for c in checks)

    instance = dg.DagsterInstance.get()
    first = dg.materialize([asset, downstream, *checks], partition_key="2024-01-01", instance=instance)
    evals = _evaluations(first)
    assert {n: e.passed for n, e in evals.items()} == {"schema": True, "rules": True, "row_count": True}
    assert all(e.partition == "2024-01-01" for e in evals.values())
    assert evals["schema"].description == "no baseline yet; recorded 9 columns"
    assert (tmp_path / "downstream-ran").exists()
    (tmp_path / "downstream-ran").unlink()

    second = dg.materialize(
        [asset, downstream, *checks], partition_key="2024-01-02", instance=instance, raise_on_error=False
    )
    assert not second.success
    evals = _evaluations(second)
    assert evals["rules"].passed is False
    assert evals["rules"].severity == dg.AssetCheckSeverity.ERROR
    assert evals["rules"].partition == "2024-01-02"
    assert evals["rules"].metadata["failing_rows_total"].value == 3
    assert "total: greater_than_or_equal_to(0) on 3 rows" in (evals["rules"].description or "")
    # the landed partition exists, but the blocking failure stopped the downstream asset
    assert not (tmp_path / "downstream-ran").exists()


def test_no_rules_still_gets_schema_check(tmp_path: Path) -> None:
    parts = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    checks = build_table_checks(
        dg.AssetKey(["a", "b"]),
        None,
        load=lambda c: pl.LazyFrame(),
        load_previous=lambda c: None,
        baseline_store_root=lambda: tmp_path,
        profile=False,
        partitions_def=parts,
    )
    assert [next(iter(c.check_keys)).name for c in checks] == ["schema"]
    spec = next(iter(checks[0].check_specs))
    assert spec.partitions_def == parts and spec.blocking is False
