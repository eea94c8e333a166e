"""`TableLandingIOManager`: lands export streams in Parquet and/or DuckDB, and reads them back lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from adu_assets.automation.retries import step_error
from adu_assets.io_managers.landing import (
    PARTITION_COLUMN,
    land,
    partition_file,
    warehouse_path,
    warehouse_table,
)
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
            # Re-raised scrubbed and without its cause, so an unscrubbed driver message never reaches the
            # event log; a permanent cause (a value out of range, a negative interval) fails without retries.
            raise step_error(e, f"export of {key.to_user_string()} failed") from None
        finally:
            obj.close()
        context.add_output_metadata(metadata)
        context.log.info(
            f"landed {metadata['dagster/row_count'].value} rows of {key.to_user_string()} in "
            f"{', '.join(destinations)} ({metadata['duration_s'].value} s)"
        )

    def load_input(self, context: dg.InputContext) -> Any:
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        meta = context.upstream_output.definition_metadata if context.upstream_output else {}
        destinations = list((meta or {}).get("adu/destinations") or ["parquet"])
        return landed_frame(self.root(), context.asset_key, destinations, partitions)


def landed_frame(root: Path, key: dg.AssetKey, destinations: Sequence[str], partitions: list[str]) -> Any:
    """The landed rows of `partitions` (all when empty) as a polars LazyFrame: Parquet when it was a
    destination (scanned lazily), else the warehouse table."""
    import polars as pl

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
        sql = f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM {quote_ident(schema)}.{quote_ident(table)}"
        params: list[Any] = []
        if partitions:
            sql += f" WHERE {PARTITION_COLUMN} IN (SELECT CAST(unnest(?) AS DATE))"
            params.append(partitions)
        frame = pl.from_arrow(con.execute(sql, params).arrow())
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy()


def previous_landed_frame(
    root: Path,
    key: dg.AssetKey,
    destinations: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    partition: str,
    *,
    look_back: int = 31,
) -> Any:
    """The latest landed partition before `partition` (drift's reference), or None."""
    keys = partitions_def.get_partition_keys()
    try:
        index = keys.index(partition)
    except ValueError:
        return None
    for previous in reversed(keys[max(0, index - look_back) : index]):
        if "parquet" in destinations and not partition_file(root, key, previous).exists():
            continue
        try:
            return landed_frame(root, key, destinations, [previous])
        except (FileNotFoundError, OSError):
            continue
    return None
