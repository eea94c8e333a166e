"""A ydata-profiling HTML report per partition, from a seeded sample for big tables.

ydata-profiling takes about 4.5 s to import, so it is imported inside `write_profile` only, after its
analytics switch is set.
"""

from __future__ import annotations

import html
import os
import time
import warnings
from pathlib import Path
from typing import Any

import polars as pl

from adu_assets.checks.drift import sample_frame, write_text_atomic
from adu_assets.checks.reports import markdown_cell, report_url

# Alerts and columns listed in the check's markdown; the full report has the rest.
MAX_FINDINGS = 20

# ydata_profiling/utils/common.py `analytics_features` sends a GET to packages.ydata.ai on every report
# (and runs `nvidia-smi`) unless this variable is set. MPLBACKEND=Agg keeps matplotlib from probing for
# a display.
ANALYTICS_OFF_ENV = {"YDATA_PROFILING_NO_ANALYTICS": "1"}


def disable_analytics() -> None:
    for name, value in ANALYTICS_OFF_ENV.items():
        os.environ[name] = value
    os.environ.setdefault("MPLBACKEND", "Agg")


def _to_pandas(frame: pl.DataFrame) -> Any:
    # Decimals would become Python Decimal objects (object dtype) that the profiler treats as text.
    return frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64)).to_pandas()


def write_profile(
    data: pl.LazyFrame | pl.DataFrame,
    html_path: Path,
    *,
    sample_rows: int = 100_000,
    seed: int = 42,
    title: str | None = None,
) -> dict[str, Any]:
    """Write a minimal, self-contained HTML profile of `data` and return metadata about it."""
    started = time.perf_counter()
    sample, total = sample_frame(data, sample_rows, seed)
    html_path = Path(html_path)
    report_title = title or html_path.stem
    if sample.height == 0 or sample.width == 0:
        # ydata-profiling refuses an empty frame; an empty partition still gets a report saying so.
        write_text_atomic(
            html_path,
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report_title)}</title></head>"
            f"<body><h1>{html.escape(report_title)}</h1><p>No rows to profile.</p></body></html>",
        )
    else:
        disable_analytics()
        with warnings.catch_warnings():
            # its import warns that the package is renamed; that is noise in every run's log
            warnings.simplefilter("ignore", DeprecationWarning)
            from ydata_profiling import ProfileReport

        report = ProfileReport(
            _to_pandas(sample),
            title=report_title,
            minimal=True,  # no correlations/interactions: seconds instead of minutes on wide tables
            progress_bar=False,  # its per-column summary bar ignores this (summary_pandas.py): stderr noise only
            explorative=False,
            # Everything inline (JS, CSS, images) so the report opens on an offline machine.
            html={"inline": True, "use_local_assets": True},
        )
        write_text_atomic(html_path, report.to_html())
        findings = profile_findings(report.get_description(), sample.height, total)
    if sample.height == 0 or sample.width == 0:
        findings = f"**No rows to profile** ({total} rows in the partition)."
    # Plain values (JSON-able); check_metadata() makes `findings` markdown and `report_url` a link.
    meta: dict[str, Any] = {
        "path": str(html_path),
        "rows_profiled": sample.height,
        "rows_total": total,
        "sampled": sample.height < total,
        "seconds": round(time.perf_counter() - started, 3),
    }
    url = report_url(html_path)
    if url:
        meta["report_url"] = url
        findings += f"\n\n[Full report]({url})"
    meta["findings"] = findings
    return meta


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if value is not None else ""


def profile_findings(description: Any, profiled: int, total: int) -> str:
    """The profile's key findings as markdown: overview, alerts, and one line per column."""
    table = description.table
    sampled = f" (a sample of {profiled} of {total})" if profiled < total else ""
    types = ", ".join(f"{n} {t.lower()}" for t, n in sorted(table.get("types", {}).items()))
    lines = [
        f"**{table['n']} rows{sampled}, {table['n_var']} columns** ({types}); "
        f"missing cells {_pct(table.get('p_cells_missing'))}",
    ]
    alerts = [str(a) for a in description.alerts]
    if alerts:
        lines += ["", "**Alerts**", ""]
        lines += [f"- {markdown_cell(a)}" for a in alerts[:MAX_FINDINGS]]
        if len(alerts) > MAX_FINDINGS:
            lines.append(f"- ... and {len(alerts) - MAX_FINDINGS} more in the full report")
    lines += [
        "",
        "| column | type | missing | distinct | min | max | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    variables = list(description.variables.items())
    for name, v in variables[:MAX_FINDINGS]:
        lines.append(
            f"| {markdown_cell(name)} | {markdown_cell(v.get('type'))} | {_pct(v.get('p_missing'))} "
            f"| {markdown_cell(v.get('n_distinct'))} | {markdown_cell(_plain(v.get('min')))} "
            f"| {markdown_cell(_plain(v.get('max')))} | {markdown_cell(_plain(v.get('mean')))} |"
        )
    if len(variables) > MAX_FINDINGS:
        lines.append(f"\n{len(variables) - MAX_FINDINGS} more columns in the full report.")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so the markdown shows 3.5 rather than np.float64(3.5)."""
    return value.item() if hasattr(value, "item") else value
