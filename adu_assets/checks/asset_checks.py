"""Turn a table's `checks:` / `profile:` YAML into Dagster asset checks.

Each rule group is its own check, so the UI shows which kind of trust failed: `schema` (always, inferred),
`rules` (pandera column rules and the unique key), `row_count`, `drift` and `profile`. On a partitioned
asset the checks carry the same partitions definition, so Dagster 1.13 records one result per partition
and `context.partition_key` names the partition being checked.

Nothing heavy is imported here: pandera.polars, evidently and ydata_profiling load inside the check
functions, so building checks for 200 tables costs only the decorators.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation of each check
# function at definition time and rejects it when it is a string.
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import dagster as dg

from adu_assets.checks.reports import check_metadata
from adu_assets.checks.rules import CheckOutcome, ChecksConfig, check_row_count, validate_rules

if TYPE_CHECKING:
    import polars as pl

# String forward references: polars (0.6 s) is not imported while definitions load.
LoadFn = Callable[[dg.AssetCheckExecutionContext], "pl.LazyFrame"]
LoadPreviousFn = Callable[[dg.AssetCheckExecutionContext], "pl.LazyFrame | None"]


def to_check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata=check_metadata(outcome.metadata),
    )


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def build_table_checks(
    asset_key: dg.AssetKey,
    cfg: ChecksConfig | None,
    *,
    load: LoadFn,
    load_previous: LoadPreviousFn,
    baseline_store_root: Callable[[], Path],
    profile: bool,
    partitions_def: dg.PartitionsDefinition | None,
    reports_root: Callable[[], Path] | None = None,
    include_schema: bool = True,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks for one table.

    `load` returns the landed data of the partition being checked (normally `pl.scan_parquet`), and
    `load_previous` that of the previous materialized partition, or None. Roots are callables so that
    environment variables (ADU_DATA_DIR) are read at run time, not when definitions load.
    HTML reports go under `reports_root()` (default: `baseline_store_root()/../reports`).
    `include_schema=False` leaves out the inferred schema check, for callers that run it themselves
    (ApiIngest checks its mapped rows inside the asset, before the upsert).
    """
    checks_cfg = cfg or ChecksConfig()
    blocking = checks_cfg.blocking
    key_text = asset_key.to_user_string()

    def report_path(context: dg.AssetCheckExecutionContext, kind: str) -> Path:
        root = reports_root() if reports_root else baseline_store_root().parent / "reports"
        keys = (
            list(context.partition_keys)
            if context.has_partition_key_range or context.has_partition_key
            else []
        )
        partition = (keys[0] if len(keys) == 1 else f"{keys[0]}_{keys[-1]}") if keys else "unpartitioned"
        return root / quote(key_text, safe="") / f"{kind}-{_file_part(partition)}.html"

    built: list[dg.AssetChecksDefinition] = []

    def add(
        name: str,
        fn: Callable[[dg.AssetCheckExecutionContext], dg.AssetCheckResult],
        *,
        blocks: bool,
        description: str,
    ) -> None:
        with warnings.catch_warnings():
            # partitions_def on an asset check is a preview API in 1.13 and warns once per check:
            # 200 tables would print 800 warnings at every definitions load.
            warnings.simplefilter("ignore", dg.PreviewWarning)
            built.append(
                dg.asset_check(
                    asset=asset_key,
                    name=name,
                    blocking=blocks,
                    description=description,
                    partitions_def=partitions_def,
                )(fn)
            )

    def schema_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from adu_assets.checks.schema_inference import SchemaBaselineStore, compare_schema, infer_schema

        store = SchemaBaselineStore(baseline_store_root())
        current = infer_schema(load(context))
        outcome = compare_schema(store.get(key_text), current, blocking=blocking)
        if outcome.passed:
            # The baseline is the schema of the last load that passed: a new column warns once and is
            # then accepted, while a failed load never becomes the new normal.
            outcome.metadata["baseline_path"] = str(store.put(key_text, current))
        return to_check_result(outcome)

    if include_schema:
        add(
            "schema",
            schema_check,
            blocks=blocking,
            description="Columns and types match the last good load (a new column only warns)",
        )

    if checks_cfg.columns or checks_cfg.unique:

        def rules_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            return to_check_result(validate_rules(load(context), checks_cfg))

        add("rules", rules_check, blocks=blocking, description="Column rules and unique key (pandera)")

    row_rule = checks_cfg.row_count
    if row_rule is not None:

        def row_count_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            return to_check_result(check_row_count(load(context), row_rule, blocking=blocking))

        add(
            "row_count",
            row_count_check,
            blocks=blocking,
            description=f"Row count within [{row_rule.min}, {row_rule.max}]",
        )

    drift_cfg = checks_cfg.drift
    if drift_cfg is not None:

        def drift_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            from adu_assets.checks.drift import run_drift

            outcome = run_drift(
                load_previous(context), load(context), drift_cfg, report_path(context, "drift")
            )
            return to_check_result(outcome)

        # Never blocking: drift is a statistical signal, and one unusual day must not stop every load.
        add(
            "drift",
            drift_check,
            blocks=False,
            description=f"Drift against the previous partition (evidently, threshold {drift_cfg.threshold:g})",
        )

    if profile:

        def profile_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            from adu_assets.checks.profiling import write_profile

            meta: dict[str, Any] = write_profile(
                load(context), report_path(context, "profile"), title=key_text
            )
            meta["path"] = dg.MetadataValue.path(meta["path"])
            return dg.AssetCheckResult(
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"profiled {meta['rows_profiled']} of {meta['rows_total']} rows",
                metadata=check_metadata(meta),
            )

        # A check, not part of the load: the materialization is recorded before it starts, and it is
        # non-blocking, so downstream assets never wait for a slow profile to gate them.
        add(
            "profile",
            profile_check,
            blocks=False,
            description="ydata-profiling HTML report of this partition",
        )

    return built
