"""Drift with evidently on Chinook invoices from a real PostgreSQL."""

from pathlib import Path

import polars as pl
import pytest

from adu_assets.checks.drift import run_drift, sample_frame
from adu_assets.checks.rules import DriftConfig
from adu_assets_tests.pg_server import PgServer
from adu_assets_tests.test_checks_rules import load_chinook, read_table


@pytest.fixture(scope="module")
def invoices(pg: PgServer) -> pl.DataFrame:
    load_chinook(pg)
    return read_table(pg, "SELECT * FROM invoice ORDER BY invoice_id")


def test_first_partition_has_no_reference(invoices: pl.DataFrame, tmp_path: Path) -> None:
    out = run_drift(None, invoices, DriftConfig(), tmp_path / "drift.html")
    assert out.passed and out.description == "first partition: no reference to compare with"
    assert not (tmp_path / "drift.html").exists()


def test_unchanged_distribution_passes(invoices: pl.DataFrame, tmp_path: Path) -> None:
    report = tmp_path / "reports" / "drift-same.html"
    current = invoices.sample(fraction=1.0, shuffle=True, seed=7)  # same rows, other order
    out = run_drift(invoices.lazy(), current, DriftConfig(), report)
    assert out.passed, out.description
    meta = out.metadata
    assert meta["drifted_share"] == 0.0 and meta["drifted_columns"] == []
    # default columns: numeric and low-cardinality categorical; keys, free text and dates are skipped
    assert set(meta["columns"]) == {"customer_id", "total", "billing_country", "billing_state"}
    assert meta["skipped_columns"]["invoice_id"] == "unique integer (looks like a key)"
    assert meta["skipped_columns"]["billing_address"] == "more than 50 distinct values"
    assert meta["skipped_columns"]["invoice_date"].startswith("type Datetime")
    # 412 rows: evidently picks K-S for numbers and chi-square for categories, both p-values
    assert meta["columns"]["total"]["test"] == "K-S p_value"
    assert meta["columns"]["total"]["p_value"] == pytest.approx(1.0)
    assert meta["columns"]["billing_country"]["test"] == "chi-square p_value"
    assert meta["report_path"] == str(report)
    assert report.exists() and report.stat().st_size > 10_000


def test_shifted_distribution_fails(invoices: pl.DataFrame, tmp_path: Path) -> None:
    shifted = invoices.with_columns(
        (pl.col("total") * 3 + 5).alias("total"),
        pl.when(pl.col("invoice_id") % 3 == 0)
        .then(pl.lit("USA"))
        .otherwise("billing_country")
        .alias("billing_country"),
    )
    cfg = DriftConfig(columns=["total", "billing_country", "customer_id"], threshold=0.3)
    report = tmp_path / "drift-shift.html"
    out = run_drift(invoices, shifted.lazy(), cfg, report)
    assert not out.passed
    assert out.severity == "WARN"
    meta = out.metadata
    assert meta["drifted_columns"] == ["billing_country", "total"]
    assert meta["drifted_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert meta["columns"]["total"]["p_value"] < 0.05
    assert meta["columns"]["customer_id"]["drifted"] is False
    assert "2 of 3 columns drifted" in out.description
    html = report.read_text(encoding="utf-8")
    assert "total" in html and "billing_country" in html
    # evidently's JS is embedded: the report needs no network to open
    assert '<script src="http' not in html

    # a threshold above the drifted share passes the same data
    lenient = run_drift(
        invoices, shifted, DriftConfig(columns=cfg.columns, threshold=0.7), tmp_path / "d2.html"
    )
    assert lenient.passed and lenient.metadata["drifted_share"] == pytest.approx(2 / 3, abs=1e-3)


def test_sampling_is_reproducible(pg: PgServer, tmp_path: Path) -> None:
    load_chinook(pg)
    lines = read_table(pg, "SELECT * FROM invoice_line ORDER BY invoice_line_id")
    path = tmp_path / "lines.parquet"
    lines.write_parquet(path)
    a, total = sample_frame(pl.scan_parquet(path), 500, seed=42)
    b, _ = sample_frame(pl.scan_parquet(path), 500, seed=42)
    c, _ = sample_frame(pl.scan_parquet(path), 500, seed=43)
    assert total == lines.height == 2240
    assert a.height == 500 and a.equals(b) and not a.equals(c)
    assert a["invoice_line_id"].n_unique() == 500

    shifted = lines.with_columns(pl.col("unit_price") * 2)
    cfg = DriftConfig(columns=["unit_price", "quantity"], sample_rows=300, seed=1)
    first = run_drift(pl.scan_parquet(path), shifted, cfg, tmp_path / "a.html")
    second = run_drift(pl.scan_parquet(path), shifted, cfg, tmp_path / "b.html")
    assert first.metadata["rows_compared"] == {"reference": 300, "current": 300}
    assert first.metadata["reference_rows"] == 2240
    assert first.metadata["columns"] == second.metadata["columns"]
    assert first.metadata["drifted_columns"] == ["unit_price"]
