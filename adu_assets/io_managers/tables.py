"""`TableLandingIOManager`: lands export streams in the warehouse, and reads them back from a snapshot."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from adu_assets.automation.retries import step_error
from adu_assets.io_managers.landing import (
    PARTITION_COLUMN,
    LandingReport,
    land_report,
    partition_file,
    warehouse_table,
)
from adu_assets.sources.catalog import quote_ident, quote_literal
from adu_assets.sources.databases import TableStream, describe_columns
from adu_assets.warehouse import READ_ALIAS, LandingStore

# A read that planned on a snapshot whose files a writer retired meanwhile (retention_days = 0) fails with
# a missing file; the same read on a fresh snapshot succeeds.
_VANISHED = ("no such file", "could not open file", "no files found", "cannot open file")
READ_ATTEMPTS = 4


@functools.cache
def landing_resources() -> dict[str, Any]:
    """The landing store (`adu_store`) and the table IO manager, one instance of each per process.

    Every DatabaseExport's definitions carry them, so `dg.components.load_defs(adu_assets.defs)` runs
    without definitions.py; being the same objects, Definitions.merge accepts them from every component.
    Building them reads nothing: paths and the catalog are resolved from the environment when used.
    """
    from adu_assets.components.database_export import TABLE_IO_MANAGER_KEY
    from adu_assets.warehouse import STORE_RESOURCE_KEY

    store = LandingStore()
    return {STORE_RESOURCE_KEY: store, TABLE_IO_MANAGER_KEY: TableLandingIOManager(store=store)}


class TableLandingIOManager(dg.ConfigurableIOManager):
    """Lands each output as one warehouse commit; `load_input` returns a polars LazyFrame of the landed rows."""

    store: LandingStore

    def handle_output(self, context: dg.OutputContext, obj: TableStream) -> None:
        if not isinstance(obj, TableStream):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a TableStream, got {type(obj).__name__}"
            )
        destinations = list(context.definition_metadata.get("adu/destinations") or ["parquet"])
        key = context.asset_key
        try:
            metadata, report = land_report(obj, destinations, self.store, key)
            remember_landed(context.run_id, self.store, key, obj.partition_keys, report)
        except Exception as e:
            # Re-raised scrubbed and without its cause, so an unscrubbed driver message never reaches the
            # event log; a permanent cause (a value out of range, a negative interval) fails without retries.
            raise step_error(e, f"export of {key.to_user_string()} failed") from None
        finally:
            obj.close()
        context.add_output_metadata(metadata)
        context.log.info(
            f"landed {metadata['dagster/row_count'].value} rows of {key.to_user_string()} in "
            f"{', '.join(destinations)} ({metadata['duration_s'].value} s, "
            f"warehouse snapshot {metadata.get('warehouse_snapshot', dg.MetadataValue.int(-1)).value})"
        )

    def load_input(self, context: dg.InputContext) -> Any:
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        return read_landed(self.store, context.asset_key, partitions)


def _partition_sql(partitions: Sequence[str], column_type: str) -> str:
    text = column_type.upper() != "DATE"
    values = ", ".join(quote_literal(p) if text else f"DATE {quote_literal(p)}" for p in partitions)
    return f"{PARTITION_COLUMN} IN ({values})"


def _is_vanished(error: BaseException) -> bool:
    text = str(error).lower()
    return any(m in text for m in _VANISHED)


# What the latest writes of this process landed, per (run, store, asset, partitions): the step's own checks
# read the files it just committed without opening the warehouse again. Measured on 10 tables of 600k rows:
# each check's warehouse read cost 0.05-0.15 s (a connection, the catalog, the files' footers).
_JUST_LANDED: OrderedDict[tuple[str, str, dg.AssetKey, tuple[str, ...]], LandingReport] = OrderedDict()
_JUST_LANDED_LIMIT = 64
_JUST_LANDED_LOCK = threading.Lock()


def _landed_key(
    run_id: str, store: LandingStore, key: dg.AssetKey, partitions: Sequence[str]
) -> tuple[str, str, dg.AssetKey, tuple[str, ...]]:
    return run_id, f"{store.root()}|{store.catalog_label()}", key, tuple(partitions)


def remember_landed(
    run_id: str, store: LandingStore, key: dg.AssetKey, partitions: Sequence[str], report: LandingReport
) -> None:
    entry = _landed_key(run_id, store, key, partitions)
    with _JUST_LANDED_LOCK:
        _JUST_LANDED[entry] = report
        _JUST_LANDED.move_to_end(entry)
        while len(_JUST_LANDED) > _JUST_LANDED_LIMIT:
            _JUST_LANDED.popitem(last=False)


def read_just_landed(run_id: str, store: LandingStore, key: dg.AssetKey, partitions: Sequence[str]) -> Any:
    """A lazy scan of the files this run just committed for these partitions, or None.

    Only when reading them equals reading the warehouse: they are the table's columns in its order, hold no
    INTERVAL (polars cannot read it), and are all still there (a later write of the same partitions with
    retention_days = 0 retires them: then the warehouse is read).
    """
    import polars as pl

    wanted = set(partitions)
    entry = _landed_key(run_id, store, key, partitions)
    report: LandingReport | None = None
    with _JUST_LANDED_LOCK:
        # Newest first: the write that covers these partitions (a range run's checks ask one partition at a
        # time), unless a newer write of this run replaced some of them.
        for (*owner, landed), candidate in reversed(_JUST_LANDED.items()):
            if tuple(owner) != entry[:3] or not wanted & set(landed):
                continue
            if wanted <= set(landed):
                report = candidate
            break
    if report is None or not report.matches_table:
        return None
    if any(t.upper().startswith("INTERVAL") for _, t in report.columns):
        return None
    # Each file holds one partition, in its `adu_partition=<value>` folder.
    files = [f for f in report.files if f.parent.name.partition("=")[2] in wanted]
    if not files or not all(f.is_file() for f in files):
        return None  # no rows (the warehouse read gives the empty frame with its columns), or retired
    return pl.scan_parquet([str(f) for f in files]).drop(PARTITION_COLUMN)


def read_landed(
    store: LandingStore, key: dg.AssetKey, partitions: Sequence[str], *, run_id: str | None = None
) -> Any:
    """The landed rows of `partitions` (all when empty) from one warehouse snapshot, as a polars LazyFrame.

    With `run_id`, what that run just landed for these partitions is read from its files
    (`read_just_landed`). INTERVAL columns arrive as text: polars cannot import DuckDB's intervals.
    """
    import polars as pl

    if run_id is not None and partitions:
        just = read_just_landed(run_id, store, key, partitions)
        if just is not None:
            return just

    schema, table = warehouse_table(key)
    con = store.connect()
    try:
        cols = describe_columns(con, READ_ALIAS, schema, table)
        if not cols:
            raise FileNotFoundError(
                f"{key.to_user_string()}: no table {schema}.{table} in the warehouse ({store.catalog_label()}); "
                "materialize it first"
            )
        types = dict(cols)
        where = (
            f" WHERE {_partition_sql(partitions, types.get(PARTITION_COLUMN, 'DATE'))}" if partitions else ""
        )
        target = f"{quote_ident(schema)}.{quote_ident(table)}"
        select = ", ".join(
            f"CAST({quote_ident(n)} AS VARCHAR) AS {quote_ident(n)}"
            if t.upper().startswith("INTERVAL")
            else quote_ident(n)
            for n, t in types.items()
            if n != PARTITION_COLUMN
        )
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                lazy = _lazy_scan(con, target, where, list(types.items()))
                if lazy is not None:
                    return lazy
                arrow = con.execute(f"SELECT {select} FROM {target}{where}").fetch_arrow_table()
                break
            except Exception as e:
                if attempt == READ_ATTEMPTS or not _is_vanished(e):
                    raise
    finally:
        con.close()
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def _lazy_scan(con: Any, target: str, where: str, columns: list[tuple[str, str]]) -> Any:
    """A lazy polars scan of the snapshot's files for these rows, when they can be read as they are.

    Checks mostly need the schema (the file footers) or a row count; reading a large partition into memory
    for that would cost its whole size. The files are immutable, so scanning them later reads the snapshot
    of now, unless a later write of the same partition retired them (retention_days = 0): the check then
    fails and can be re-run. Falls back (None) when the files differ from the table (after a schema change)
    or hold INTERVAL columns (polars cannot read them).
    """
    import polars as pl

    if any(t.upper().startswith("INTERVAL") for _, t in columns):
        return None
    files = [
        str(r[0]) for r in con.execute(f"SELECT DISTINCT filename FROM {target}{where} ORDER BY 1").fetchall()
    ]
    if not files:
        return None
    for f in files:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(f)})").fetchall()
        if [(str(r[0]), str(r[1])) for r in described] != columns:
            return None
    return pl.scan_parquet(files).drop(PARTITION_COLUMN)


def partitions_before(partitions_def: dg.PartitionsDefinition, partition: str, look_back: int) -> list[str]:
    """Up to `look_back` partition keys just before `partition`, oldest first (none for an unknown key)."""
    keys = partitions_def.get_partition_keys()
    try:
        index = keys.index(partition)
    except ValueError:
        return []
    return list(keys[max(0, index - look_back) : index])


def read_previous_landed(
    store: LandingStore,
    key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition,
    partition: str,
    *,
    look_back: int = 31,
) -> Any:
    """The latest landed partition before `partition` (drift's reference), or None."""
    candidates = partitions_before(partitions_def, partition, look_back)
    if not candidates:
        return None
    schema, table = warehouse_table(key)
    con = store.connect()
    try:
        types = dict(describe_columns(con, READ_ALIAS, schema, table))
        row = (types[PARTITION_COLUMN],) if PARTITION_COLUMN in types else None
        if row is None:
            return None
        present = {
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT CAST({PARTITION_COLUMN} AS VARCHAR) FROM {quote_ident(schema)}.{quote_ident(table)} "
                f"WHERE {_partition_sql(candidates, str(row[0]))}"
            ).fetchall()
        }
    finally:
        con.close()
    for previous in reversed(candidates):
        if previous in present:
            return read_landed(store, key, [previous])
    return None


# --- compatibility: callers that name the data folder instead of passing the store ----------------------


def landed_frame(root: Path, key: dg.AssetKey, destinations: Sequence[str], partitions: list[str]) -> Any:
    """`LandingStore(data_dir=root).landed_frame(...)`; prefer the store resource."""
    return read_landed(LandingStore(data_dir=str(root)), key, partitions)


def previous_landed_frame(
    root: Path,
    key: dg.AssetKey,
    destinations: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    partition: str,
) -> Any:
    return read_previous_landed(LandingStore(data_dir=str(root)), key, partitions_def, partition)


# --- plain Parquet trees outside the warehouse (ApiIngest's mapped/ audit copy) -----------------------------


def scan_parquet_tree(root: Path, key: dg.AssetKey, partitions: list[str]) -> Any:
    """A lazy scan of `<root>/parquet/<key>/adu_partition=<p>/data.parquet` files (not a warehouse table)."""
    import polars as pl

    files = (
        [partition_file(root, key, p) for p in partitions]
        if partitions
        else sorted((root / "parquet" / Path(*key.path)).glob(f"{PARTITION_COLUMN}=*/*.parquet"))
    )
    missing = [str(f) for f in files if not f.exists()]
    if missing or not files:
        raise FileNotFoundError(
            f"{key.to_user_string()}: no Parquet for partitions {partitions or 'any'} "
            f"(missing: {', '.join(missing[:3]) or 'all'}); materialize it first"
        )
    return pl.scan_parquet([str(f) for f in files])


def previous_parquet_tree(
    root: Path,
    key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition,
    partition: str,
    *,
    look_back: int = 31,
) -> Any:
    for previous in reversed(partitions_before(partitions_def, partition, look_back)):
        if partition_file(root, key, previous).exists():
            return scan_parquet_tree(root, key, [previous])
    return None
