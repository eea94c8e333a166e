"""Drift and profile reports as the UI shows them: a clickable URL, and key findings as markdown.

The deploy's nginx serves ADU_DATA_DIR/reports read-only behind the same login as the UI
(deploy/nginx.conf, `location /reports/`); ADU_REPORTS_URL is that folder's address as users reach it.
Light on purpose: asset_checks imports it while definitions load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPORTS_URL_ENV = "ADU_REPORTS_URL"


def report_url(report_path: Path) -> str | None:
    """The report's address under ADU_REPORTS_URL, or None when that is not set.

    The path below the reports folder is kept and each part percent-encoded: folder names are asset keys
    that are already percent-encoded on disk ("shop%2Fmain%2Forders"), so their "%" must reach the server
    as "%25". A report outside the reports folder keeps its last two parts (`<asset>/<report>.html`).
    """
    base = os.environ.get(REPORTS_URL_ENV, "").strip()
    if not base:
        return None
    path = Path(report_path).resolve()
    try:
        from adu_assets.warehouse import LandingStore

        parts = path.relative_to(LandingStore().reports_dir().resolve()).parts
    except Exception:
        parts = path.parts[-2:]
    return base.rstrip("/") + "/" + "/".join(quote(part, safe="") for part in parts)


def markdown_cell(value: Any) -> str:
    """A value for a markdown table cell: short numbers, no pipe or newline that would break the row."""
    text = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Check metadata for Dagster: `findings` rendered as markdown and `report_url` as a link in the UI."""
    import dagster as dg

    out = dict(metadata)
    if isinstance(out.get("findings"), str):
        out["findings"] = dg.MetadataValue.md(out["findings"])
    if isinstance(out.get("report_url"), str):
        out["report_url"] = dg.MetadataValue.url(out["report_url"])
    return out
