"""`TableLandingIOManager`: lands export streams in Parquet and/or DuckDB, and reads them back lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from adu_assets.io_managers.landing import (
    PARTITION_COLUMN,
    land,
    partition_file,
    warehouse_path,
    warehouse_table,
)
from adu_assets.secrets import scrub_exception
from adu_assets.settings import data_root
from adu_assets.sources.catalog import quote_ident
from adu_assets.sources.databases import TableStream


class TableLandingIOManager(dg.ConfigurableIOManager):
    """Writes each partition atomically; `load_input` returns a polars LazyFrame over the landed data."""

    data_dir: str | None = None

    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else data_root()

    def handle_output(self, context: dg.OutputContext, obj: TableStream) -> None:
        if not isinstance(obj, TableStream):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a TableStream, got {type(obj).__name__}"
            )
        destinations = list(context.definition_metadata.get("adu/destinations") or ["parquet"])
        key = context.asset_key
        try:
            metadata = land(obj, destinations, self.root(), key)
        except Exception as e:
            # Re-raised without its cause, so an unscrubbed driver message never reaches the event log.
            raise scrub_exception(e, f"export of {key.to_user_string()} failed") from None
        finally:
            obj.close()
        context.add_output_metadata(metadata)
        context.log.info(
            f"landed {metadata['dagster/row_count'].value} rows of {key.to_user_string()} in "
            f"{', '.join(destinations)} ({metadata['duration_s'].value} s)"
        )

    def load_input(self, context: dg.InputContext) -> Any:
        import polars as pl

        key = context.asset_key
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        meta = context.upstream_output.definition_metadata if context.upstream_output else {}
        destinations = list((meta or {}).get("adu/destinations") or ["parquet"])
        root = self.root()
        if "parquet" in destinations:
            files = (
                [partition_file(root, key, p) for p in partitions]
                if partitions
                else sorted((root / "parquet" / Path(*key.path)).glob(f"{PARTITION_COLUMN}=*/*.parquet"))
            )
            missing = [str(f) for f in files if not f.exists()]
            if missing or not files:
                raise FileNotFoundError(
                    f"{key.to_user_string()}: no landed Parquet for partitions {partitions or 'any'} "
                    f"(missing: {', '.join(missing[:3]) or 'all'}); materialize it first"
                )
            return pl.scan_parquet([str(f) for f in files])
        import duckdb

        schema, table = warehouse_table(key)
        with duckdb.connect(str(warehouse_path(root)), read_only=True) as con:
            sql = f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)}"
            params: list[Any] = []
            if partitions:
                sql += f" WHERE {PARTITION_COLUMN} IN (SELECT CAST(unnest(?) AS DATE))"
                params.append(partitions)
            return pl.from_arrow(con.execute(sql, params).arrow()).lazy()
