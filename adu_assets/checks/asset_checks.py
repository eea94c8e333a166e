"""Turn a table's `checks:` / `profile:` YAML into Dagster asset checks.

Two ways to attach them. `table_checks_in_step` (DatabaseExport) declares the fast checks (schema, rules,
row_count) as `check_specs` on the asset and evaluates them inside the asset's own step, right after the IO
manager landed the data: one op per table instead of up to four. The check ops were about a third of the
definitions-load time (630 of 830 ops at 200 tables), and each was a step of its own at run time. The slow, optional checks (drift: evidently,
profile: ydata) stay separate `@asset_check` ops, so a slow report never holds the export's step or pool
slot. `build_table_checks` makes every check a separate op (ApiIngest, FileDrop).

A check that crashes never shows only "Execution failed": it becomes a failed result whose description
names the check, the partition and the error (ERROR severity; it blocks downstream when the check is
blocking).

Each rule group is its own check, so the UI shows which kind of trust failed: `schema` (always, inferred),
`rules` (pandera column rules and the unique key), `row_count`, `drift` and `profile`. On a partitioned
asset the checks carry the same partitions definition, so Dagster 1.13 records one result per partition;
in a single-run range backfill each partition is checked on its own rows and recorded under its own key.

Nothing heavy is imported here: pandera.polars, evidently and ydata_profiling load inside the check
functions, so building checks for 200 tables costs only the decorators.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` annotation of each check
# function at definition time and rejects it when it is a string.
import re
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import dagster as dg

from adu_assets.checks.reports import check_metadata
from adu_assets.checks.rules import CheckOutcome, ChecksConfig, check_row_count, validate_rules

if TYPE_CHECKING:
    import polars as pl

# String forward references: polars (0.6 s) is not imported while definitions load.
# The context is Dagster's AssetCheckExecutionContext (separate ops) or a PartitionCheckContext (in-step).
LoadFn = Callable[[Any], "pl.LazyFrame"]
LoadPreviousFn = Callable[[Any], "pl.LazyFrame | None"]


def to_check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata=check_metadata(outcome.metadata),
    )


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


# What a check function needs of its context: `partition_keys`, `has_partition_key(_range)`, `resources`,
# `log`. Both Dagster's AssetCheckExecutionContext and `PartitionCheckContext` (in-step) provide these.
CheckFn = Callable[[Any], dg.AssetCheckResult]


@dataclass(frozen=True)
class TableCheck:
    name: str
    fn: CheckFn
    blocking: bool
    description: str
    # Slow checks (evidently, ydata-profiling) run as their own op, never inside the export's step.
    slow: bool = False


class PartitionCheckContext:
    """A step's context narrowed to one partition, so checks give one result per partition even in a
    single-run range backfill."""

    def __init__(self, context: Any, partition_key: str | None) -> None:
        self._context = context
        self.partition_keys = [partition_key] if partition_key is not None else []
        self.has_partition_key = partition_key is not None
        self.has_partition_key_range = False
        self.partition_key = partition_key
        self.resources = context.resources
        self.log = context.log
        self.run_id = context_run_id(context)


def context_run_id(context: Any) -> str | None:
    """The run id of an asset, asset check or narrowed check context (each spells it differently)."""
    run_id = getattr(context, "run_id", None)
    if run_id is None:
        run_id = getattr(getattr(context, "run", None), "run_id", None)
    return str(run_id) if run_id is not None else None


def partition_text(context: Any) -> str:
    try:
        keys = (
            list(context.partition_keys)
            if (context.has_partition_key or context.has_partition_key_range)
            else []
        )
    except Exception:
        keys = []
    if not keys:
        return "unpartitioned"
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


def crashed_result(name: str, context: Any, error: BaseException, *, blocking: bool) -> dg.AssetCheckResult:
    """A check that raised, as a failed result that says why and where (not a bare "Execution failed")."""
    from adu_assets.secrets import redact

    partition = partition_text(context)
    reason = redact(f"{type(error).__name__}: {error}".strip())
    first_line = reason.splitlines()[0] if reason else type(error).__name__
    tail = "".join(traceback.format_exception(error)[-6:])
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"The {name} check crashed on partition {partition}: {first_line[:500]}",
        metadata={
            "partition": partition,
            "error": dg.MetadataValue.text(reason[:4000]),
            "traceback": dg.MetadataValue.text(redact(tail)[-4000:]),
            "blocking": blocking,
        },
    )


def guarded(check: TableCheck) -> CheckFn:
    def run(context: Any) -> dg.AssetCheckResult:
        try:
            return check.fn(context)
        except Exception as e:
            context.log.error(f"check {check.name} crashed on partition {partition_text(context)}: {e}")
            return crashed_result(check.name, context, e, blocking=check.blocking)

    return run


def table_checks(
    asset_key: dg.AssetKey,
    cfg: ChecksConfig | None,
    *,
    load: LoadFn,
    load_previous: LoadPreviousFn,
    baseline_store_root: Callable[[], Path],
    profile: bool,
    reports_root: Callable[[], Path] | None = None,
    include_schema: bool = True,
) -> list[TableCheck]:
    """The checks one table's YAML asks for, as plain functions of a check context (see the builders below).

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

    def report_path(context: Any, kind: str) -> Path:
        root = reports_root() if reports_root else baseline_store_root().parent / "reports"
        keys = (
            list(context.partition_keys)
            if context.has_partition_key_range or context.has_partition_key
            else []
        )
        partition = (keys[0] if len(keys) == 1 else f"{keys[0]}_{keys[-1]}") if keys else "unpartitioned"
        return root / quote(key_text, safe="") / f"{kind}-{_file_part(partition)}.html"

    built: list[TableCheck] = []

    def schema_check(context: Any) -> dg.AssetCheckResult:
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
        built.append(
            TableCheck(
                "schema",
                schema_check,
                blocking,
                "Columns and types match the last good load (a new column only warns)",
            )
        )

    if checks_cfg.columns or checks_cfg.unique:

        def rules_check(context: Any) -> dg.AssetCheckResult:
            return to_check_result(validate_rules(load(context), checks_cfg))

        built.append(TableCheck("rules", rules_check, blocking, "Column rules and unique key (pandera)"))

    row_rule = checks_cfg.row_count
    if row_rule is not None:

        def row_count_check(context: Any) -> dg.AssetCheckResult:
            return to_check_result(check_row_count(load(context), row_rule, blocking=blocking))

        built.append(
            TableCheck(
                "row_count", row_count_check, blocking, f"Row count within [{row_rule.min}, {row_rule.max}]"
            )
        )

    drift_cfg = checks_cfg.drift
    if drift_cfg is not None:

        def drift_check(context: Any) -> dg.AssetCheckResult:
            from adu_assets.checks.drift import run_drift

            outcome = run_drift(
                load_previous(context), load(context), drift_cfg, report_path(context, "drift")
            )
            return to_check_result(outcome)

        # Never blocking: drift is a statistical signal, and one unusual day must not stop every load.
        built.append(
            TableCheck(
                "drift",
                drift_check,
                False,
                f"Drift against the previous partition (evidently, threshold {drift_cfg.threshold:g})",
                slow=True,
            )
        )

    if profile:

        def profile_check(context: Any) -> dg.AssetCheckResult:
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
        built.append(
            TableCheck(
                "profile",
                profile_check,
                False,
                "ydata-profiling HTML report of this partition",
                slow=True,
            )
        )

    return built


def check_ops(
    asset_key: dg.AssetKey,
    checks: Sequence[TableCheck],
    partitions_def: dg.PartitionsDefinition | None,
    required_resource_keys: set[str] | None = None,
) -> list[dg.AssetChecksDefinition]:
    """Each check as its own `@asset_check` op (one result per partition of the run)."""
    built: list[dg.AssetChecksDefinition] = []
    with warnings.catch_warnings():
        # partitions_def on an asset check is a preview API in 1.13 and warns once per check:
        # 200 tables would print 800 warnings at every definitions load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for check in checks:
            built.append(
                dg.asset_check(
                    asset=asset_key,
                    name=check.name,
                    blocking=check.blocking,
                    description=check.description,
                    partitions_def=partitions_def,
                    required_resource_keys=required_resource_keys,
                )(_as_check_fn(guarded(check)))  # type: ignore[arg-type]  # a generator: one result per partition
            )
    return built


def _as_check_fn(
    run: CheckFn,
) -> Callable[
    [dg.AssetCheckExecutionContext], Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output[None]]
]:
    # Dagster reads the `context` annotation, so the op function is declared here with a real type.
    def check_fn(
        context: dg.AssetCheckExecutionContext,
    ) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output[None]]:
        keys = list(context.partition_keys) if context.has_partition_key_range else []
        if len(keys) <= 1:
            yield run(context)
            return
        # A single-run range backfill: Dagster 1.13 would record one result without a partition, so
        # each partition is checked on its own rows and recorded under its own key.
        spec = context.check_specs[0]
        for key in keys:
            result = run(PartitionCheckContext(context, key))
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=spec.name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
                blocking=spec.blocking,
                partition=key,
            )
        yield dg.Output(None, output_name=context.op_execution_context.op_def.output_defs[0].name)

    return check_fn


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
    """Asset checks for one table, each its own op (see `table_checks` for the arguments)."""
    checks = table_checks(
        asset_key,
        cfg,
        load=load,
        load_previous=load_previous,
        baseline_store_root=baseline_store_root,
        profile=profile,
        reports_root=reports_root,
        include_schema=include_schema,
    )
    return check_ops(asset_key, checks, partitions_def)


@dataclass(frozen=True)
class InStepChecks:
    """Checks declared on the asset (`specs`) and evaluated by `evaluate` inside its step, plus the slow
    checks as separate ops (`separate`)."""

    specs: list[dg.AssetCheckSpec]
    checks: list[TableCheck]
    separate: list[dg.AssetChecksDefinition]

    def evaluate(
        self, context: dg.AssetExecutionContext, partition_keys: Sequence[str] | None
    ) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output[None]]:
        """Run the in-step checks on what the step just landed: call after `yield dg.Output(...)`.

        One result per check and partition. A single partition yields AssetCheckResults (Dagster adds the
        partition and the materialization it checks); a range run yields one AssetCheckEvaluation per
        partition, since Dagster 1.13 would record a range step's result without a partition.
        """
        selected = context.selected_asset_check_keys
        asset_key = context.asset_key
        todo = [c for c in self.checks if dg.AssetCheckKey(asset_key, c.name) in selected]
        keys = list(partition_keys or [])
        if len(keys) <= 1:
            view = PartitionCheckContext(context, keys[0] if keys else None)
            for check in todo:
                result = guarded(check)(view)
                yield dg.AssetCheckResult(
                    asset_key=asset_key,
                    check_name=check.name,
                    passed=result.passed,
                    severity=result.severity,
                    description=result.description,
                    metadata=result.metadata,
                )
            return
        assets_def = context.assets_def
        for check in todo:
            check_key = dg.AssetCheckKey(asset_key, check.name)
            for key in keys:
                result = guarded(check)(PartitionCheckContext(context, key))
                yield dg.AssetCheckEvaluation(
                    asset_key=asset_key,
                    check_name=check.name,
                    passed=result.passed,
                    metadata=result.metadata,
                    severity=result.severity,
                    description=result.description,
                    blocking=check.blocking,
                    partition=key,
                )
            yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(check_key))


def table_checks_in_step(
    asset_key: dg.AssetKey,
    cfg: ChecksConfig | None,
    *,
    load: LoadFn,
    load_previous: LoadPreviousFn,
    baseline_store_root: Callable[[], Path],
    profile: bool,
    partitions_def: dg.PartitionsDefinition | None,
    reports_root: Callable[[], Path] | None = None,
    required_resource_keys: set[str] | None = None,
) -> InStepChecks:
    """Like `build_table_checks`, but schema / rules / row_count are evaluated inside the asset's step.

    `required_resource_keys` go on the separate ops, so their `context.resources` match the asset's.
    """
    checks = table_checks(
        asset_key,
        cfg,
        load=load,
        load_previous=load_previous,
        baseline_store_root=baseline_store_root,
        profile=profile,
        reports_root=reports_root,
    )
    fast = [c for c in checks if not c.slow]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [
            dg.AssetCheckSpec(
                name=c.name,
                asset=asset_key,
                blocking=c.blocking,
                description=c.description,
                partitions_def=partitions_def,
            )
            for c in fast
        ]
    return InStepChecks(
        specs=specs,
        checks=fast,
        separate=check_ops(asset_key, [c for c in checks if c.slow], partitions_def, required_resource_keys),
    )
