"""Drift between this partition and the previous one, with evidently.

evidently takes about 5 s to import, so it is imported inside `run_drift` only, after its telemetry
switches are set. Big inputs are sampled with a fixed seed so a re-run gives the same verdict.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adu_assets.checks.reports import markdown_cell, report_url
from adu_assets.checks.rules import CheckOutcome, DriftConfig

# Strings with more distinct values than this are identifiers or free text, not categories: a
# categorical drift test on them is noise, and slow.
MAX_CATEGORIES = 50

# evidently's own switch (evidently/telemetry.py) and that of the iterative-telemetry library it uses.
# Only evidently's UI service and collector send events today; they are set anyway so no code path can.
TELEMETRY_OFF_ENV = {"DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}


def disable_telemetry() -> None:
    for name, value in TELEMETRY_OFF_ENV.items():
        os.environ[name] = value


def sample_frame(data: pl.LazyFrame | pl.DataFrame, sample_rows: int, seed: int) -> tuple[pl.DataFrame, int]:
    """A reproducible sample of at most `sample_rows` rows, and the total row count.

    Row positions are drawn with numpy's seeded generator and kept with a streaming filter, so a big
    Parquet partition is never materialized whole.
    """
    lf = data.lazy() if isinstance(data, pl.DataFrame) else data
    total = int(lf.select(pl.len()).collect().item())
    if total <= sample_rows:
        return lf.collect(engine="streaming"), total
    keep = np.sort(np.random.default_rng(seed).choice(total, size=sample_rows, replace=False))
    sampled = (
        lf.with_row_index("__adu_row")
        .filter(pl.col("__adu_row").is_in(pl.Series(keep, dtype=pl.UInt32)))
        .drop("__adu_row")
        .collect(engine="streaming")
    )
    return sampled, total


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _is_categorical_like(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum)


def _choose_columns(
    reference: pl.DataFrame, current: pl.DataFrame, cfg: DriftConfig
) -> tuple[list[str], list[str], dict[str, str]]:
    """Numeric and categorical columns to test, and why any others were skipped."""
    skipped: dict[str, str] = {}
    candidates = cfg.columns if cfg.columns is not None else list(current.columns)
    numeric: list[str] = []
    categorical: list[str] = []
    for col in candidates:
        if col not in current.columns or col not in reference.columns:
            skipped[col] = "missing in this or the previous partition"
            continue
        dtype = current.schema[col]
        if reference[col].null_count() == reference.height or current[col].null_count() == current.height:
            skipped[col] = "all values null"
            continue
        if _is_numeric(dtype):
            # A surrogate key is unique and grows with every load, so it always "drifts": skip it unless named.
            if cfg.columns is None and dtype.is_integer() and reference[col].n_unique() == reference.height:
                skipped[col] = "unique integer (looks like a key)"
                continue
            numeric.append(col)
        elif _is_categorical_like(dtype):
            if cfg.columns is None and reference[col].n_unique() > MAX_CATEGORIES:
                skipped[col] = f"more than {MAX_CATEGORIES} distinct values"
                continue
            categorical.append(col)
        else:
            skipped[col] = f"type {dtype} is neither numeric nor categorical"
    return numeric, categorical, skipped


def _to_pandas(frame: pl.DataFrame, numeric: list[str], categorical: list[str]) -> Any:
    # Decimals would reach pandas as Python Decimal objects, which evidently's tests cannot use.
    return frame.select(
        *[pl.col(c).cast(pl.Float64) for c in numeric],
        *[pl.col(c).cast(pl.String) for c in categorical],
    ).to_pandas()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        # mkstemp creates 0600; a report is meant to be opened by whoever reads the run
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def drift_findings(
    share: float,
    threshold: float,
    per_column: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    url: str | None,
) -> str:
    """The drift report's key findings as markdown, so the UI shows them with no file at all."""
    drifted = [c for c, e in per_column.items() if e["drifted"]]
    lines = [
        f"**{len(drifted)} of {len(per_column)} columns drifted** (share {share:.2f}, threshold {threshold:g})",
        "",
        "| column | drifted | test | p-value / score | threshold |",
        "|---|---|---|---|---|",
    ]
    # Drifted columns first, so the ones to look at are at the top.
    for col, e in sorted(per_column.items(), key=lambda kv: (not kv[1]["drifted"], kv[0])):
        score = e.get("p_value", e.get("score"))
        lines.append(
            f"| {markdown_cell(col)} | {'**yes**' if e['drifted'] else 'no'} | {markdown_cell(e['test'])} "
            f"| {markdown_cell(score)} | {markdown_cell(e['threshold'])} |"
        )
    if skipped:
        lines += [
            "",
            "Not compared: " + "; ".join(f"{markdown_cell(c)} ({why})" for c, why in sorted(skipped.items())),
        ]
    if url:
        lines += ["", f"[Full report]({url})"]
    return "\n".join(lines)


def run_drift(
    reference: pl.DataFrame | pl.LazyFrame | None,
    current: pl.DataFrame | pl.LazyFrame,
    cfg: DriftConfig,
    report_path: Path,
) -> CheckOutcome:
    """Compare `current` with `reference`; fail when the share of drifted columns exceeds cfg.threshold.

    Drift is a statistical signal, not a broken rule, so the outcome is always severity WARN; the
    wiring keeps the drift check non-blocking.
    """
    if reference is None:
        return CheckOutcome(
            True, "WARN", "first partition: no reference to compare with", {"reference": "none"}
        )
    started = time.perf_counter()
    ref, ref_total = sample_frame(reference, cfg.sample_rows, cfg.seed)
    cur, cur_total = sample_frame(current, cfg.sample_rows, cfg.seed)
    base_meta: dict[str, Any] = {
        "reference_rows": ref_total,
        "current_rows": cur_total,
        "rows_compared": {"reference": ref.height, "current": cur.height},
        "seed": cfg.seed,
    }
    if ref.height == 0 or cur.height == 0:
        return CheckOutcome(True, "WARN", "nothing to compare: a partition has no rows", base_meta)
    numeric, categorical, skipped = _choose_columns(ref, cur, cfg)
    base_meta["skipped_columns"] = skipped
    if not numeric and not categorical:
        return CheckOutcome(True, "WARN", "no numeric or categorical columns to compare", base_meta)

    disable_telemetry()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    columns = numeric + categorical
    report = Report([DataDriftPreset(columns=columns, drift_share=cfg.threshold)], include_tests=True)
    with warnings.catch_warnings():
        # numpy warns on every constant column (division by a zero spread) inside evidently's plots:
        # dozens of lines per run that say nothing about the data.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(
                _to_pandas(cur, numeric, categorical), data_definition=definition
            ),
            reference_data=Dataset.from_pandas(
                _to_pandas(ref, numeric, categorical), data_definition=definition
            ),
        )
    # Snapshot.save_html silently ignores a Path (it only writes when given a str), so write it ourselves,
    # atomically. The HTML embeds evidently's JS and font: it opens offline.
    write_text_atomic(Path(report_path), snapshot.get_html_str(as_iframe=False))

    result = snapshot.dict()
    status_by_metric = {t["metric_config"]["metric_id"]: t["status"] for t in result.get("tests", [])}
    per_column: dict[str, dict[str, Any]] = {}
    share = 0.0
    for metric in result["metrics"]:
        config = metric["config"]
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            method = str(config.get("method"))
            score = _finite(float(metric["value"]))
            entry = {
                "test": method,
                "threshold": config.get("threshold"),
                "drifted": status_by_metric.get(metric["id"]) == "FAIL",
            }
            # Tests named "... p_value" report a p-value (small = drift); the rest report a distance.
            entry["p_value" if "p_value" in method.lower() else "score"] = score
            per_column[str(config["column"])] = entry
    drifted = sorted(c for c, e in per_column.items() if e["drifted"])
    url = report_url(report_path)
    metadata = {
        **base_meta,
        "drifted_share": round(share, 4),
        "threshold": cfg.threshold,
        "drifted_columns": drifted,
        "columns": per_column,
        "report_path": str(report_path),
        **({"report_url": url} if url else {}),
        # Plain text here (the outcome stays JSON-able); check_metadata() makes it markdown and a link.
        "findings": drift_findings(share, cfg.threshold, per_column, skipped, url),
        "seconds": round(time.perf_counter() - started, 3),
    }
    summary = f"{len(drifted)} of {len(per_column)} columns drifted (share {share:.2f}, threshold {cfg.threshold:g})"
    if drifted:
        summary += ": " + ", ".join(drifted[:10])
    return CheckOutcome(share <= cfg.threshold, "WARN", summary, metadata)
