"""`type: adu_assets.ApiIngest`: a REST API task as one daily-partitioned asset keyed `[name]`.

One partition: fetch every page (auth, pagination, retries) with `{partition_start}`, `{partition_end}` and
`{partition_key}` templated into the request; keep the raw records as Parquet for audit and replay; map
fields with vectorized transforms; check the mapped rows; then the UpsertIOManager lands them in Oracle,
PostgreSQL or DuckDB.

The checks run inside the asset, on the mapped rows, *before* the rows are handed to the IO manager: a
blocking failure raises, so the destination table is never touched by a bad load.
"""

import logging
import time
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from adu_assets.automation.retries import network_retry_policy
from adu_assets.checks.freshness import freshness_policy
from adu_assets.checks.rules import ChecksConfig
from adu_assets.io_managers.upsert.base import DestinationConfig
from adu_assets.model_bounds import asset_key_name
from adu_assets.sources.http import RequestConfig
from adu_assets.sources.mapping import MappingConfig

UPSERT_IO_MANAGER_KEY = "adu_upsert_io"
CHECK_NAMES = ("schema", "rules", "row_count")

log = logging.getLogger(__name__)


class ApiIngest(dg.Component, dg.Resolvable, dg.Model):
    """Fetch a REST API per daily partition, map fields to columns, and upsert the rows."""

    name: str = Field(description="Asset key and group name")
    request: RequestConfig
    start_date: str = Field(description="First daily partition, YYYY-MM-DD")
    mappings: list[MappingConfig] = Field(description="source dot path -> target column, with transforms")
    destination: DestinationConfig
    checks: ChecksConfig | None = Field(
        default=None, description="Checks on the mapped rows, before the upsert"
    )
    profile: bool = Field(
        default=False, description="ydata-profiling HTML report of each partition's mapped rows"
    )
    schedule: str | None = Field(default=None, description="Cron string; runs the partition that just ended")
    timezone: str = "UTC"
    max_consecutive_failures: int = Field(
        default=3, description="Circuit breaker: pause the schedule after this many failed runs in a row"
    )
    owners: list[str] = Field(default_factory=list)
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    _name_is_key = field_validator("name")(lambda v: asset_key_name(v))

    @field_validator("mappings")
    @classmethod
    def _some_mapping(cls, v: list[MappingConfig]) -> list[MappingConfig]:
        if not v:
            raise ValueError("mappings must map at least one source field to a target column")
        return v

    def partitions_def(self) -> dg.DailyPartitionsDefinition:
        return dg.DailyPartitionsDefinition(start_date=self.start_date, timezone=self.timezone)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from adu_assets.automation import automation_defs

        asset = self.build_asset()
        return dg.Definitions.merge(
            dg.Definitions(assets=[asset], asset_checks=self.build_after_checks()),
            automation_defs(
                component_name=self.name,
                assets=[asset],
                cron=self.schedule,
                timezone=self.timezone,
                partitions_def=self.partitions_def(),
                max_consecutive_failures=self.max_consecutive_failures,
            ),
        )

    def build_after_checks(self) -> list[dg.AssetChecksDefinition]:
        """Drift and profile of the mapped rows: statistical and slow, so separate non-blocking checks
        that read the mapped Parquet after the load (schema, rules and row count run before it)."""
        cfg = self.checks or ChecksConfig()
        if cfg.drift is None and not self.profile:
            return []
        from adu_assets.checks.asset_checks import build_table_checks
        from adu_assets.io_managers.tables import previous_parquet_tree, scan_parquet_tree
        from adu_assets.settings import data_root

        key = dg.AssetKey([self.name])
        partitions_def = self.partitions_def()

        def load(context: dg.AssetCheckExecutionContext) -> Any:
            return scan_parquet_tree(data_root() / "mapped", key, list(context.partition_keys))

        def load_previous(context: dg.AssetCheckExecutionContext) -> Any:
            return previous_parquet_tree(data_root() / "mapped", key, partitions_def, context.partition_keys[0])

        return build_table_checks(
            key,
            ChecksConfig(drift=cfg.drift),
            load=load,
            load_previous=load_previous,
            baseline_store_root=lambda: data_root() / "checks" / "schemas",
            reports_root=lambda: data_root() / "reports",
            profile=self.profile,
            partitions_def=partitions_def,
            include_schema=False,
        )

    def build_asset(self) -> dg.AssetsDefinition:
        key = dg.AssetKey([self.name])
        checks_cfg = self.checks or ChecksConfig()
        blocking = checks_cfg.blocking
        specs = [
            dg.AssetCheckSpec(
                "schema",
                asset=key,
                blocking=blocking,
                description="Mapped columns and types match the last good load",
            )
        ]
        if checks_cfg.columns or checks_cfg.unique:
            specs.append(
                dg.AssetCheckSpec(
                    "rules",
                    asset=key,
                    blocking=blocking,
                    description="Column rules and unique key on the mapped rows",
                )
            )
        if checks_cfg.row_count is not None:
            specs.append(
                dg.AssetCheckSpec(
                    "row_count", asset=key, blocking=blocking, description="Row count of the mapped rows"
                )
            )
        dest = self.destination
        component = self

        @dg.asset(
            key=key,
            group_name=self.name,
            kinds={"api", dest.connection.kind},
            owners=self.owners or None,
            description=self.description
            or f"{self.request.method} {self.request.url} -> {dest.connection.kind} table {dest.table} ({dest.mode})",
            partitions_def=self.partitions_def(),
            backfill_policy=dg.BackfillPolicy.multi_run(1),
            io_manager_key=UPSERT_IO_MANAGER_KEY,
            # Secret references only (password_env / password_encrypted): resolved inside the IO manager.
            metadata={"adu/destination": dest.model_dump(mode="json")},
            check_specs=specs,
            tags={**self.tags, "adu/kind": "api"},
            pool=f"adu_api_{self.name}",
            freshness_policy=freshness_policy(checks_cfg.freshness),
            retry_policy=network_retry_policy(),
        )
        def api_task(context: dg.AssetExecutionContext) -> Any:
            from adu_assets.io_managers.upsert.base import DestinationError
            from adu_assets.sources.http import ApiHttpError, ApiResponseError
            from adu_assets.sources.mapping import MappingError

            try:
                return (yield from component.run_partition(context, specs))
            except ApiHttpError as e:
                # 5xx/429 were already retried with backoff inside the client; a 4xx will not get better.
                raise dg.Failure(description=str(e), allow_retries=e.status >= 500) from None
            except (ApiResponseError, MappingError, DestinationError) as e:
                raise dg.Failure(description=str(e), allow_retries=False) from None

        return api_task

    def run_partition(self, context: dg.AssetExecutionContext, specs: list[dg.AssetCheckSpec]) -> Any:
        from adu_assets.io_managers.landing import partition_file
        from adu_assets.io_managers.upsert.base import check_destination_columns
        from adu_assets.settings import data_root
        from adu_assets.sources.api_ingest import ingest

        partition = context.partition_key
        window = context.partition_time_window
        variables = {
            "partition_start": window.start.isoformat(),
            "partition_end": window.end.isoformat(),
            "partition_key": partition,
        }
        root = data_root()
        started = time.monotonic()
        # Pages are decoded and mapped in a background thread while later pages download.
        result = ingest(
            self.request, variables, root / "raw" / self.name / partition, self.mappings, log=context.log
        )
        rows = result.rows
        context.log.info(
            f"{self.name} {partition}: {result.records} records from {result.pages} pages "
            f"({result.requests} requests, {result.retries} retries); {rows.height} rows mapped, "
            f"{result.errors.height} mapping errors"
        )
        # A mapped column the table lacks is an error before anything is written.
        check_destination_columns(self.destination, list(rows.columns))

        metadata: dict[str, Any] = {
            "records": dg.MetadataValue.int(result.records),
            "pages": dg.MetadataValue.int(result.pages),
            "requests": dg.MetadataValue.int(result.requests),
            "retries": dg.MetadataValue.int(result.retries),
            "fetch_s": dg.MetadataValue.float(round(result.seconds, 3)),
            "raw_path": dg.MetadataValue.path(str(root / "raw" / self.name / partition)),
            "mapping_errors": dg.MetadataValue.int(result.errors.height),
        }
        if result.errors.height:
            errors_dir = root / "errors" / self.name / partition
            errors_dir.mkdir(parents=True, exist_ok=True)
            path = errors_dir / "mapping_errors.parquet"
            result.errors.write_parquet(path)
            metadata["mapping_errors_path"] = dg.MetadataValue.path(str(path))
            metadata["mapping_errors_preview"] = dg.MetadataValue.md(_markdown(result.errors.head(10)))
        if result.fallback_reason:
            metadata["mapping_path"] = f"two-step ({result.fallback_reason})"
        if result.missing_sources:
            metadata["missing_sources"] = ", ".join(result.missing_sources)

        results = self.evaluate_checks(rows, {s.name for s in specs})
        failed_blocking = [r for r in results if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR]
        if failed_blocking:
            yield from results
            names = ", ".join(r.check_name or "" for r in failed_blocking)
            raise dg.Failure(
                description=f"{self.name} {partition}: blocking check(s) failed ({names}); "
                f"{self.destination.table} was not touched",
                metadata=metadata,
                allow_retries=False,
            )
        # The mapped rows also land as Parquet: the audit trail of what was sent, and drift's reference.
        mapped_file = partition_file(root / "mapped", dg.AssetKey([self.name]), partition)
        mapped_file.parent.mkdir(parents=True, exist_ok=True)
        staging = mapped_file.with_suffix(".staging")
        rows.write_parquet(staging, compression="zstd")
        staging.replace(mapped_file)
        metadata["mapped_path"] = dg.MetadataValue.path(str(mapped_file))
        metadata["prepare_s"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
        yield dg.Output(rows.to_arrow(), metadata=metadata)
        yield from results

    def evaluate_checks(self, rows: Any, wanted: set[str]) -> list[dg.AssetCheckResult]:
        from adu_assets.checks.asset_checks import to_check_result
        from adu_assets.checks.rules import check_row_count, validate_rules
        from adu_assets.checks.schema_inference import SchemaBaselineStore, compare_schema, infer_schema
        from adu_assets.settings import data_root

        cfg = self.checks or ChecksConfig()
        out: list[dg.AssetCheckResult] = []
        store = SchemaBaselineStore(data_root() / "checks" / "schemas")
        current = infer_schema(rows)
        outcome = compare_schema(store.get(self.name), current, blocking=cfg.blocking)
        if outcome.passed:
            store.put(self.name, current)
        out.append(_named(to_check_result(outcome), "schema"))
        if "rules" in wanted:
            out.append(_named(to_check_result(validate_rules(rows, cfg)), "rules"))
        if "row_count" in wanted and cfg.row_count is not None:
            out.append(
                _named(
                    to_check_result(check_row_count(rows, cfg.row_count, blocking=cfg.blocking)), "row_count"
                )
            )
        return out


def _named(result: dg.AssetCheckResult, name: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=result.passed,
        severity=result.severity,
        description=result.description,
        metadata=result.metadata,
    )


def _markdown(frame: Any) -> str:
    from adu_assets.io_managers.landing import markdown_table

    return markdown_table(frame.columns, frame.rows())
