"""`type: adu_assets.DatabaseExport`: every table of one source schema as a partitioned asset.

Key `[name, schema, table]`, group `name`. A table with `incremental_column` gets daily partitions over
that column (a range runs as one run); a table without one gets daily snapshot partitions. With `tables:`
omitted, the schema's base tables are discovered once and cached as defs state; `adu refresh-state`
(or `dg utils refresh-defs-state`) refreshes the cache.
"""

import asyncio
import functools
import inspect
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import dagster as dg
from dagster.components import DefsStateConfig, DefsStateConfigArgs, ResolvedDefsStateConfig
from dagster.components.utils.project_paths import get_local_state_path
from pydantic import Field, field_validator, model_validator

from adu_assets.automation.retries import network_retry_policy
from adu_assets.checks.freshness import freshness_policy
from adu_assets.checks.rules import ChecksConfig, FreshnessConfig
from adu_assets.defs_loader import yaml_metadata
from adu_assets.model_bounds import asset_key_name, iso_date, key_part, require_at_least
from adu_assets.sources.catalog import TableInfo
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.warehouse import STORE_RESOURCE_KEY

if TYPE_CHECKING:
    from adu_assets.checks.asset_checks import InStepChecks

warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

log = logging.getLogger(__name__)

TABLE_IO_MANAGER_KEY = "adu_table_io"
Destination = Literal["parquet", "warehouse", "duckdb"]


@functools.cache
def daily_partitions(start_date: str, timezone: str) -> dg.DailyPartitionsDefinition:
    # One instance per component rather than one per asset and check: Dagster caches partition keys
    # and snapshots per instance.
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone)


_SIGNATURES: dict[Any, inspect.Signature] = {}


def same_signature(fn: Any) -> Any:
    """Give `fn` the signature computed once for its code: Dagster's decorators inspect a compute
    function's signature 17 times per asset, which was a fifth of the load time at 1,000 tables."""
    signature = _SIGNATURES.get(fn.__code__)
    if signature is None:
        signature = _SIGNATURES[fn.__code__] = inspect.signature(fn)
    fn.__signature__ = signature
    return fn


class TableConfig(dg.Model):
    name: str = Field(description="Table name as the source spells it")
    incremental_column: str | None = Field(
        default=None,
        description="Timestamp or date column: daily partitions over it; omit for daily snapshots",
    )
    description: str | None = None
    owners: list[str] | None = None
    checks: ChecksConfig | None = Field(default=None, description="Data checks: column rules, unique, row_count, drift (see the README, Checks)")
    profile: bool = Field(default=False, description="ydata-profiling HTML report for each partition")
    freshness: FreshnessConfig | None = Field(default=None, description="{max_lag_hours: N}")
    cast: dict[str, str] | None = Field(
        default=None,
        description="Per column, land in this form instead of the exact one: double, text, bigint, integer "
        "or decimal(p,s); e.g. {amount: double}. Noted in type_notes",
    )
    asset_name: str | None = Field(
        default=None,
        description="Last part of the asset key (letters, digits, underscores); default: the table name, "
        "made readable (`Order Details` -> `Order_Details`)",
    )

    @field_validator("cast")
    @classmethod
    def _cast_words(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        from adu_assets.sources.type_map import cast_target

        for column, word in (v or {}).items():
            try:
                cast_target(str(word))
            except ValueError as e:
                raise ValueError(f"cast.{column}: {e}") from None
        return v

    @field_validator("asset_name")
    @classmethod
    def _asset_name_is_key(cls, v: str | None) -> str | None:
        return None if v is None else asset_key_name(v)


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

    # build_table_asset adds the YAML code reference itself (see defs_loader.yaml_metadata).
    adds_yaml_metadata: ClassVar[bool] = True

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
        where = context.path / "defs.yaml" if context.path.is_dir() else context.path
        if self.tables is not None and not configs:
            raise ValueError(f"{where}: tables: DatabaseExport {self.name}: the list is empty; name at least "
                             "one table, or remove `tables:` to export every table of the schema")
        if not configs:
            # Zero assets without a word looks like a working source; it is almost always a wrong `schema:`.
            raise ValueError(
                f"{where}: schema: DatabaseExport {self.name}: schema {self.schema!r} has no tables at "
                f"{self.connection.describe()}, so no assets were built. Fix `schema:` (it is usually "
                "'public' for PostgreSQL and 'main' for DuckDB/SQLite files; names are case-sensitive) or "
                "list the tables under `tables:`, then run `adu refresh-state`"
            )
        self.check_unique_keys(configs)
        by_name = {t.name: t for t in catalog or []}
        assets: list[dg.AssetsDefinition] = []
        separate_checks: list[dg.AssetChecksDefinition] = []
        for cfg in configs:
            # Schema, rules and row_count run inside the table's own step (one op per table, see
            # asset_checks.py); drift and profile stay separate ops.
            checks = self.build_table_checks(cfg)
            assets.append(self.build_table_asset(cfg, by_name.get(cfg.name), checks))
            separate_checks.extend(checks.separate)
        from adu_assets.io_managers.tables import landing_resources

        return dg.Definitions.merge(
            dg.Definitions(assets=assets, asset_checks=separate_checks, resources=landing_resources()),
            self.build_automation(configs, assets),
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
        if state_path is not None and self.tables is None and state_path.exists():
            # A cache from before `schema:` was edited describes another schema: discover again.
            if json.loads(state_path.read_text()).get("schema") != self.schema:
                state_path = None
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
        """`[name, schema, table]`, each part readable and valid as a Dagster key part; SQL keeps using the
        exact source names."""
        override = next((t.asset_name for t in self.tables or [] if t.name == table and t.asset_name), None)
        return dg.AssetKey([self.name, key_part(self.schema), override or key_part(table)])

    def check_unique_keys(self, configs: list[TableConfig]) -> None:
        """Two source tables must not share an asset key, nor keys differing only in case: the warehouse's
        table names and many file systems do not tell case apart, so the second table would overwrite the
        first. Refused when definitions load, naming both tables."""
        seen: dict[str, str] = {}
        for cfg in configs:
            folded = "/".join(self.asset_key(cfg.name).path).casefold()
            other = seen.setdefault(folded, cfg.name)
            if other != cfg.name:
                raise ValueError(
                    f"DatabaseExport {self.name}: tables {other!r} and {cfg.name!r} of schema {self.schema} "
                    f"would land under the same asset key {'/'.join(self.asset_key(cfg.name).path)!r} "
                    "(names are made readable and compared without case); list them under tables: and give "
                    "one an asset_name"
                )

    def partitions_def(self) -> dg.DailyPartitionsDefinition:
        return daily_partitions(self.start_date, self.timezone)

    def build_table_checks(self, cfg: TableConfig) -> "InStepChecks":
        """Asset checks on the landed partition: an inferred schema check always, plus what YAML declares."""
        from adu_assets.checks.asset_checks import table_checks_in_step
        from adu_assets.settings import data_root
        from adu_assets.warehouse import LandingStore

        key = self.asset_key(cfg.name)
        destinations = list(self.destinations)
        partitions_def = self.partitions_def()

        # A range run (single-run backfill) checks every partition it landed; drift compares against
        # the partition before the range.
        # The configured store (resource `adu_store`), so its catalog and retention are the ones landing used.
        def store(context: dg.AssetCheckExecutionContext) -> LandingStore:
            resource = getattr(context.resources, STORE_RESOURCE_KEY, None)
            return resource if isinstance(resource, LandingStore) else LandingStore()

        def load(context: dg.AssetCheckExecutionContext) -> Any:
            from adu_assets.checks.asset_checks import context_run_id

            return store(context).landed_frame(
                key, destinations, list(context.partition_keys), run_id=context_run_id(context)
            )

        def load_previous(context: dg.AssetCheckExecutionContext) -> Any:
            first = context.partition_keys[0]
            return store(context).previous_landed_frame(key, destinations, partitions_def, first)

        return table_checks_in_step(
            key,
            cfg.checks,
            load=load,
            load_previous=load_previous,
            baseline_store_root=lambda: data_root() / "checks" / "schemas",
            reports_root=lambda: data_root() / "reports",
            profile=cfg.profile,
            partitions_def=partitions_def,
            # Checks may read the landed data through the LandingStore resource (context.resources).
            required_resource_keys={STORE_RESOURCE_KEY},
        )

    def build_table_asset(
        self, cfg: TableConfig, info: TableInfo | None, checks: "InStepChecks | None" = None
    ) -> dg.AssetsDefinition:
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
        metadata.update(yaml_metadata())
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
            check_specs=checks.specs if checks else None,
            # In-step checks read the landed data through the step's context.resources.
            required_resource_keys={STORE_RESOURCE_KEY},
        )
        @same_signature
        def export_table(context: dg.AssetExecutionContext) -> Any:
            from adu_assets.sources.databases import SourceError, open_table_stream

            keys = list(context.partition_keys)
            window = context.partition_time_window
            try:
                stream = open_table_stream(
                    connection,
                    schema=schema,
                    table=cfg.name,
                    label=component,
                    incremental_column=incremental,
                    window=(window.start, window.end) if incremental else None,
                    partition_keys=keys,
                    timezone=timezone,
                    casts=dict(cfg.cast or {}),
                )
            except SourceError as e:
                # A missing table or a refused password will not fix itself: fail now, without retries.
                raise dg.Failure(description=str(e), allow_retries=e.retryable) from None
            # The IO manager lands the stream before this generator resumes, so the checks read landed data.
            # What was read goes into the materialization, not a log line: every event is a write to
            # Dagster's event storage, paid per step.
            yield dg.Output(
                stream,
                metadata={
                    "adu/read": f"{schema}.{cfg.name}"
                    + (f" over {incremental} in [{window.start}, {window.end})" if incremental else " (snapshot)")
                },
            )
            if checks is not None:
                yield from checks.evaluate(context, keys)

        return export_table
