"""IO managers that land an asset's rows in an Oracle, PostgreSQL or DuckDB table through `upsert()`.

`destination_io_manager(destination)` is the one components use: the destination travels in code, held by
the IO manager object, so neither it nor its secret references (a `password_encrypted` Fernet token is
readable by anyone who can read the UI, and decryptable by anyone holding the key) reach definition
metadata, tags, descriptions, resource config or run config. The password is resolved inside handle_output,
at run time, and never reaches metadata, tags or logs.

`UpsertIOManager` reads the destination from the asset's definition metadata under "adu/destination"; it is
kept for hand-written assets whose destination holds no secret (an environment variable name, a DuckDB file)
and refuses a Fernet token there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from adu_assets.automation.retries import step_error
from adu_assets.io_managers.upsert.base import (
    DestinationConfig,
    DestinationError,
    TooManyRejectedRows,
    UpsertResult,
    upsert,
)

if TYPE_CHECKING:
    import pyarrow as pa
else:
    from adu_assets.io_managers.upsert.lazy_modules import pa

DESTINATION_METADATA_KEY = "adu/destination"


def destination_from_metadata(metadata: Mapping[str, Any], asset: str) -> DestinationConfig:
    raw = metadata.get(DESTINATION_METADATA_KEY)
    # Definition metadata may arrive normalized to a JsonMetadataValue; the dict is inside it.
    raw = getattr(raw, "value", raw)
    if not isinstance(raw, Mapping):
        raise DestinationError(
            f"{asset}: the UpsertIOManager needs the asset's metadata key {DESTINATION_METADATA_KEY!r} "
            "(a destination: connection, table, mode, keys, skip_when)"
        )
    dest = DestinationConfig.model_validate(dict(raw))
    if dest.connection.password_encrypted:
        raise DestinationError(
            f"{asset}: the destination in metadata {DESTINATION_METADATA_KEY!r} holds password_encrypted, and "
            "definition metadata is shown to anyone who can open the UI; pass the destination in code with "
            "destination_io_manager(destination) instead"
        )
    return dest


def to_arrow(obj: Any, asset: str) -> pa.Table | pa.RecordBatchReader:
    if isinstance(obj, pa.Table | pa.RecordBatchReader):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    import polars as pl

    if isinstance(obj, pl.LazyFrame):
        obj = obj.collect(engine="streaming")
    if isinstance(obj, pl.DataFrame):
        return obj.to_arrow()
    raise TypeError(
        f"{asset}: the UpsertIOManager takes a pyarrow Table/RecordBatchReader or a polars DataFrame, "
        f"got {type(obj).__name__}"
    )


def result_metadata(result: UpsertResult, schema: pa.Schema | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "inserted": dg.MetadataValue.int(result.inserted),
        "updated": dg.MetadataValue.int(result.updated),
        "unchanged": dg.MetadataValue.int(result.unchanged),
        "skipped": dg.MetadataValue.int(result.skipped),
        "errors": dg.MetadataValue.int(result.errors),
        "duplicates": dg.MetadataValue.int(result.duplicates),
        "dagster/row_count": dg.MetadataValue.int(result.rows_in),
        "dagster/table_name": result.table,
        "duration_s": dg.MetadataValue.float(round(result.seconds, 3)),
        "rows_per_s": dg.MetadataValue.float(round(result.rows_per_second, 1)),
    }
    if result.error_table:
        md["error_table"] = result.error_table
    if result.error_rows_path:
        md["error_rows_path"] = dg.MetadataValue.path(result.error_rows_path)
    if schema is not None:
        md["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema]
        )
    return md


def _asset_name(context: dg.OutputContext) -> str:
    return context.asset_key.to_user_string() if context.has_asset_key else context.name


def upsert_output(context: dg.OutputContext, obj: Any, dest: DestinationConfig) -> None:
    asset = _asset_name(context)
    data = to_arrow(obj, asset)
    try:
        result = upsert(dest, data, run_id=context.run_id, log=context.log)
    except TooManyRejectedRows as e:
        # Not a success: the run fails, naming the error file or table, with the counts as metadata.
        raise dg.Failure(
            description=str(e), metadata=result_metadata(e.result, data.schema), allow_retries=False
        ) from None
    except (DestinationError, TypeError) as e:
        # The YAML or the data does not fit the table: the same rows would fail again.
        raise dg.Failure(description=str(e), allow_retries=False) from None
    except Exception as e:
        # A driver error can carry connection details; only a scrubbed copy leaves this step. Only a
        # transient cause (lost connection, lock conflict) is left for the step's RetryPolicy.
        raise step_error(e, f"{asset}: upsert into {dest.table} failed") from None
    context.add_output_metadata(result_metadata(result, data.schema))


def _not_read_back(context: dg.InputContext) -> NotImplementedError:
    return NotImplementedError(
        f"{context.upstream_output.asset_key.to_user_string() if context.upstream_output else 'input'}: "
        "an upserted table is not read back through the UpsertIOManager; downstream assets read the raw Parquet "
        "landed under ADU_DATA_DIR, or query the destination table themselves"
    )


class UpsertIOManager(dg.ConfigurableIOManager):
    """Inserts or upserts each output into the table named by the asset's "adu/destination" metadata."""

    batch_size: int | None = None  # overrides destination.batch_size when set

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        dest = destination_from_metadata(context.definition_metadata or {}, _asset_name(context))
        if self.batch_size:
            dest = dest.model_copy(update={"batch_size": self.batch_size})
        upsert_output(context, obj, dest)

    def load_input(self, context: dg.InputContext) -> Any:
        raise _not_read_back(context)


class DestinationIOManager(dg.IOManager):
    """Inserts or upserts each output into the one destination it was built with."""

    def __init__(self, destination: DestinationConfig) -> None:
        self.destination = destination

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        upsert_output(context, obj, self.destination)

    def load_input(self, context: dg.InputContext) -> Any:
        raise _not_read_back(context)


def destination_io_manager(destination: DestinationConfig) -> dg.IOManagerDefinition:
    """An IO manager bound in code to `destination`: it has no config schema, so nothing of the destination
    is in resource config, run config or the UI, only this description (no secret in it)."""
    return dg.IOManagerDefinition.hardcoded_io_manager(
        DestinationIOManager(destination),
        description=f"Upserts into {destination.table} on {destination.connection.describe()}",
    )
