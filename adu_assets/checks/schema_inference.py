"""The inferred schema check: every asset gets one, even with no rules declared.

The first load records column names and polars dtypes as the baseline. Later loads fail when a column
disappears or changes type; a new column only warns. The caller stores the baseline (normally the
schema of the last load that passed) with `SchemaBaselineStore`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import polars as pl

from adu_assets.checks.rules import CheckOutcome, severity_for


def infer_schema(data: pl.LazyFrame | pl.DataFrame) -> dict[str, str]:
    """Column -> polars dtype string, e.g. {"total": "Decimal(precision=10, scale=2)"}.

    Reads only the schema: on a `scan_parquet` frame that is the file footer, no data.
    """
    import polars as pl

    schema = data.collect_schema() if isinstance(data, pl.LazyFrame) else data.schema
    return {name: str(dtype) for name, dtype in schema.items()}


def compare_schema(
    baseline: dict[str, str] | None, current: dict[str, str], *, blocking: bool = False
) -> CheckOutcome:
    severity = severity_for(blocking)
    if baseline is None:
        return CheckOutcome(
            True,
            severity,
            f"no baseline yet; recorded {len(current)} columns",
            {"columns": len(current), "schema": current},
        )
    removed = [c for c in baseline if c not in current]
    changed = {
        c: {"was": baseline[c], "now": current[c]}
        for c in baseline
        if c in current and baseline[c] != current[c]
    }
    added = {c: current[c] for c in current if c not in baseline}
    metadata: dict[str, Any] = {
        "columns": len(current),
        "removed_columns": removed,
        "changed_types": changed,
        "added_columns": added,
    }
    problems = []
    if removed:
        problems.append(f"column(s) disappeared: {', '.join(removed)}")
    if changed:
        problems.append(
            "type changed: " + ", ".join(f"{c} {v['was']} -> {v['now']}" for c, v in changed.items())
        )
    if problems:
        if added:
            problems.append(f"new column(s): {', '.join(added)}")
        return CheckOutcome(False, severity, "; ".join(problems), metadata)
    if added:
        metadata["warning"] = f"new column(s): {', '.join(added)}"
        return CheckOutcome(
            True, severity, f"schema unchanged except new column(s) (warning): {', '.join(added)}", metadata
        )
    return CheckOutcome(True, severity, f"schema unchanged ({len(current)} columns)", metadata)


class SchemaBaselineStore:
    """One small JSON file per asset key under `root`.

    Writes go to a temporary file in the same folder and are renamed into place, so a crash mid-write
    leaves the previous baseline intact and readers never see half a file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, asset_key: str) -> Path:
        # quote() with no safe characters keeps "a/b" and "a_b" distinct and the name a single path segment.
        return self.root / f"{quote(asset_key, safe='')}.json"

    def get(self, asset_key: str) -> dict[str, str] | None:
        path = self.path_for(asset_key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        columns = data.get("columns")
        if not isinstance(columns, dict):
            raise ValueError(f"schema baseline {path} is not a baseline file; delete it to record a new one")
        return {str(k): str(v) for k, v in columns.items()}

    def put(self, asset_key: str, schema: dict[str, str]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(asset_key)
        payload = json.dumps({"asset_key": asset_key, "columns": schema}, indent=1, sort_keys=False)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".baseline-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
