"""`type: adu_assets.DatabaseExport`: every table of one source schema as a partitioned asset.

Key `[name, schema, table]`, group `name`. A table with `incremental_column` gets daily partitions over
that column (a range runs as one run); a table without one gets daily snapshot partitions. With `tables:`
omitted, the schema's base tables are discovered once and cached as defs state; `adu refresh-state`
(or `dg utils refresh-defs-state`) refreshes the cache.
"""

import asyncio
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster.components import DefsStateConfig, DefsStateConfigArgs, ResolvedDefsStateConfig
from dagster.components.utils.project_paths import get_local_state_path
from pydantic import Field, field_validator, model_validator

from adu_assets.automation.retries import network_retry_policy
from adu_assets.checks.freshness import freshness_policy
from adu_assets.checks.rules import ChecksConfig, FreshnessConfig
from adu_assets.model_bounds import asset_key_name, iso_date, require_at_least
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.connection import ConnectionConfig

warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

log = logging.getLogger(__name__)

TABLE_IO_MANAGER_KEY = "adu_table_io"
Destination = Literal["parquet", "warehouse", "duckdb"]


class TableConfig(dg.Model):
    name: str = Field(description="Table name as the source spells it")
    incremental_column: str | None = Field(
        default=None,
        description="Timestamp or date column: daily partitions over it; omit for daily snapshots",
    )
    description: str | None = None
    owners: list[str] | None = None
    checks: ChecksConfig | None = Field(default=None, description="Data checks (see DESIGN.md)")
    profile: bool = Field(default=False, description="ydata-profiling HTML report for each partition")
    freshness: FreshnessConfig | None = Field(default=None, description="{max_lag_hours: N}")


class DatabaseExport(dg.StateBackedComponent, dg.Resolvable, dg.Model):
    """Export the tables of one database schema to Parquet and/or the DuckDB warehouse."""

    name: str = Field(description="Asset key prefix and group name")
    connection: ConnectionConfig
    schema: str = Field(  # type: ignore[assignment]  # shadows BaseModel.schema; the YAML contract says `schema`
        default="public", description="Source schema (main for DuckDB/SQLite files)"
    )
    tables: list[TableConfig] | None = Field(
        default=None, description="Tables to export; omit to export every base table of the schema"
    )
    start_date: str = Field(description="First daily partition, YYYY-MM-DD")
    destinations: list[Destination] = Field(default_factory=lambda: list[Destination](["parquet", "duckdb"]))
    schedule: str | None = Field(default=None, description="Cron string; one schedule for the component")
    timezone: str = "UTC"
    owners: list[str] = Field(default_factory=list)
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    max_consecutive_failures: int = Field(
        default=3,
        description="Circuit breaker: pause the schedule/sensor after this many failed runs in a row",
    )
    watermark_sensor: bool = Field(
        default=False,
        description="Poll max(incremental_column) and run the partitions that got new rows",
    )
    watermark_interval_seconds: int = Field(default=300, description="Seconds between watermark polls")
    defs_state: ResolvedDefsStateConfig = Field(default_factory=DefsStateConfigArgs.local_filesystem)

    _name_is_key = field_validator("name")(lambda v: asset_key_name(v))

    _iso_date = field_validator("start_date")(lambda v: iso_date(v))

    @model_validator(mode="after")
    def _bounds(self) -> "DatabaseExport":
        require_at_least(self, self.name, max_consecutive_failures=1, watermark_interval_seconds=30)
        return self

    @field_validator("destinations")
    @classmethod
    def _some_destination(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("destinations must name at least one of: parquet, duckdb")
        return v

    # --- defs state: the discovered catalog ---------------------------------------------------------

    @property
    def defs_state_config(self) -> DefsStateConfig:
        return DefsStateConfig.from_args(self.defs_state, default_key=f"DatabaseExport[{self.name}]")

    def write_state_to_path(self, state_path: Path) -> None:
        from adu_assets.sources.databases import discover

        catalog = discover(self.connection, self.schema, label=self.name)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"schema": self.schema, "tables": [t.to_json() for t in catalog]}))
        tmp.replace(state_path)

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        catalog = self._load_catalog(context, state_path)
        if self.tables is not None:
            configs = self.tables
        elif catalog is not None:
            configs = [TableConfig(name=t.name) for t in catalog]
        else:
            return dg.Definitions()
        by_name = {t.name: t for t in catalog or []}
        assets = [self.build_table_asset(cfg, by_name.get(cfg.name)) for cfg in configs]
        checks = [c for cfg in configs for c in self.build_table_checks(cfg)]
        return dg.Definitions.merge(
            dg.Definitions(assets=assets, asset_checks=checks), self.build_automation(configs, assets)
        )

    def build_automation(
        self, configs: list[TableConfig], assets: list[dg.AssetsDefinition]
    ) -> dg.Definitions:
        from adu_assets.automation import WatermarkSpec, automation_defs

        incremental = {c.name: c.incremental_column for c in configs if c.incremental_column}
        watermark = None
        if self.watermark_sensor and incremental:
            watermark = WatermarkSpec(
                connection=self.connection,
                schema=self.schema,
                tables=incremental,
                asset_keys={t: self.asset_key(t) for t in incremental},
                minimum_interval_seconds=self.watermark_interval_seconds,
            )
        return automation_defs(
            component_name=self.name,
            assets=assets,
            cron=self.schedule,
            timezone=self.timezone,
            partitions_def=self.partitions_def(),
            max_consecutive_failures=self.max_consecutive_failures,
            watermark=watermark,
        )

    def _load_catalog(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> list[TableInfo] | None:
        if state_path is None and self.tables is None:
            # First load with nothing cached: discover now, so a new YAML file works without an extra step.
            try:
                asyncio.run(self.refresh_state(context.project_root))
            except Exception as e:
                from adu_assets.secrets import redact

                log.error(
                    "DatabaseExport %s: discovery failed, no assets built: %s", self.name, redact(str(e))
                )
                return None
            state_path = get_local_state_path(self.defs_state_config.key, context.project_root)
        if state_path is None or not state_path.exists():
            return None
        data = json.loads(state_path.read_text())
        return [TableInfo.from_json(t) for t in data.get("tables", [])]

    # --- one asset per table ------------------------------------------------------------------------

    def asset_key(self, table: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, self.schema, table])

    def partitions_def(self) -> dg.DailyPartitionsDefinition:
        return dg.DailyPartitionsDefinition(start_date=self.start_date, timezone=self.timezone)

    def build_table_checks(self, cfg: TableConfig) -> list[dg.AssetChecksDefinition]:
        """Asset checks on the landed partition: an inferred schema check always, plus what YAML declares."""
        from adu_assets.checks.asset_checks import build_table_checks
        from adu_assets.settings import data_root
        from adu_assets.warehouse import LandingStore

        key = self.asset_key(cfg.name)
        destinations = list(self.destinations)
        partitions_def = self.partitions_def()

        # A range run (single-run backfill) checks every partition it landed; drift compares against
        # the partition before the range.
        def load(context: dg.AssetCheckExecutionContext) -> Any:
            return LandingStore().landed_frame(key, destinations, list(context.partition_keys))

        def load_previous(context: dg.AssetCheckExecutionContext) -> Any:
            first = context.partition_keys[0]
            return LandingStore().previous_landed_frame(key, destinations, partitions_def, first)

        return build_table_checks(
            key,
            cfg.checks,
            load=load,
            load_previous=load_previous,
            baseline_store_root=lambda: data_root() / "checks" / "schemas",
            reports_root=lambda: data_root() / "reports",
            profile=cfg.profile,
            partitions_def=partitions_def,
        )

    def build_table_asset(self, cfg: TableConfig, info: TableInfo | None) -> dg.AssetsDefinition:
        key = self.asset_key(cfg.name)
        connection = self.connection
        schema = self.schema
        component = self.name
        incremental = cfg.incremental_column
        timezone = self.timezone
        description = (
            cfg.description
            or self.description
            or (
                f"{schema}.{cfg.name} from {connection.describe()}"
                + (f", daily partitions over {incremental}" if incremental else ", daily snapshots")
            )
        )
        metadata: dict[str, Any] = {
            "adu/destinations": list(self.destinations),
            "adu/source": connection.describe(),
            "adu/incremental_column": incremental or "",
        }
        if info is not None and info.columns:
            metadata["dagster/column_schema"] = dg.TableSchema(
                columns=[dg.TableColumn(name=c.name, type=c.type) for c in info.columns]
            )

        @dg.asset(
            key=key,
            group_name=component,
            kinds={connection.kind, *self.destinations},
            owners=cfg.owners or self.owners or None,
            description=description,
            partitions_def=self.partitions_def(),
            backfill_policy=dg.BackfillPolicy.single_run() if incremental else dg.BackfillPolicy.multi_run(1),
            io_manager_key=TABLE_IO_MANAGER_KEY,
            metadata=metadata,
            tags={**self.tags, "adu/kind": "export"},
            pool=connection.pool_name(),
            retry_policy=network_retry_policy(),
            freshness_policy=freshness_policy(
                cfg.freshness or (cfg.checks.freshness if cfg.checks else None)
            ),
        )
        def export_table(context: dg.AssetExecutionContext) -> Any:
            from adu_assets.sources.databases import SourceError, open_table_stream

            keys = list(context.partition_keys)
            window = context.partition_time_window
            context.log.info(
                f"exporting {schema}.{cfg.name} from {connection.describe()}: "
                + (f"partitions {keys[0]}..{keys[-1]}" if len(keys) > 1 else f"partition {keys[0]}")
                + (f" over {incremental}" if incremental else " (snapshot)")
            )
            try:
                return open_table_stream(
                    connection,
                    schema=schema,
                    table=cfg.name,
                    label=component,
                    incremental_column=incremental,
                    window=(window.start, window.end) if incremental else None,
                    partition_keys=keys,
                    timezone=timezone,
                )
            except SourceError as e:
                # A missing table or a refused password will not fix itself: fail now, without retries.
                raise dg.Failure(description=str(e), allow_retries=e.retryable) from None

        return export_table
