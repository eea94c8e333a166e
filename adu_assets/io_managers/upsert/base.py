"""The dialect-independent half of the upsert landing layer.

Every dialect follows the same shape, measured in PERFORMANCE.md to be 10-20x faster than row-by-row:

    Arrow batch --(vectorized pre-checks)--> staging table (bulk: COPY / register / array bind)
                --(set-based SQL checks)--> one INSERT ... ON CONFLICT / MERGE per batch

How a bad row is isolated without a Python row loop on the hot path:
1. **Vectorized pre-checks** (polars, from the destination's catalog): null keys, NOT NULL columns, strings longer than
   the column allows, NUL bytes, and duplicate keys inside one batch (the last occurrence wins, the earlier ones are
   counted as `duplicates`). Those rows never reach the database.
2. **Set-based checks in the database** (dialect): CHECK constraints evaluated against the staging table, TRY_CAST for
   type conversions (DuckDB), `batcherrors` while array-binding into a typed staging table (Oracle).
3. **Bisection** for whatever is left (foreign keys, unique indexes other than the key, a cast that the pre-checks
   could not foresee): the batch's statement runs inside a savepoint (or its own transaction on DuckDB); if it fails,
   it is rolled back and retried on each half, down to the single row that the database rejects with its own message.
   With k bad rows this costs about 2·k·log2(batch) statements. A budget bounds it; past the budget the rows of a
   still-failing range are all rejected with the database's reason, so nothing is silently lost.

Rejected rows are kept, with their key and reason, in the destination's `error_table` or in a Parquet file under
ADU_DATA_DIR/errors/.

Where the dialect allows it (PostgreSQL), steps 1 and the client-side encoding run one batch ahead in a background
thread, so the client's work overlaps the server's; at most two batches are held then.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from adu_assets.model_bounds import require_at_least
from adu_assets.secrets import redact
from adu_assets.sources.connection import ConnectionConfig

RN = "__adu_rn"  # the row's offset inside its batch; every reject is traced back to the input through it

# Above this many failed statements in one batch, bisection stops and the still-failing ranges are rejected whole.
MAX_FAILED_STATEMENTS_PER_BATCH = 400

ERROR_COLUMNS = ("ADU_RUN_ID", "ADU_REJECTED_AT", "ADU_TABLE", "ADU_KEY", "ADU_REASON", "ADU_ROW")


class DestinationError(ValueError):
    """A destination that cannot take this data (missing table or column, no unique key). Raised before any write."""


class SkipWhen(dg.Model):
    column: str = Field(description="Column of the EXISTING target row to test")
    equals: str | int | bool = Field(description="A target row whose column equals this is left untouched")


class DestinationConfig(dg.Model):
    connection: ConnectionConfig
    table: str = Field(description='Destination table, optionally schema-qualified: "SCHEMA.TABLE"')
    mode: Literal["insert", "upsert"] = "upsert"
    keys: list[str] = Field(
        default_factory=list, description="Columns that identify a row (required for upsert)"
    )
    skip_when: SkipWhen | None = None
    batch_size: int | None = Field(
        default=None,
        description="Rows per staging batch; bounds memory. Default: 250,000 for PostgreSQL, 50,000 otherwise",
    )
    error_table: str | None = Field(
        default=None,
        description="Keep rejected rows in this table (created if missing) instead of a Parquet file",
    )

    @model_validator(mode="after")
    def _check(self) -> DestinationConfig:
        require_at_least(self, "destination", batch_size=1)
        if self.connection.kind not in ("oracle", "postgres", "duckdb"):
            raise ValueError(
                f"destination.connection.kind {self.connection.kind!r} cannot be upserted into: "
                "use oracle, postgres or duckdb"
            )
        if self.mode == "upsert" and not self.keys:
            raise ValueError(
                "destination.keys is required when mode is upsert (the columns that identify a row)"
            )
        if self.skip_when is not None and self.mode != "upsert":
            raise ValueError("destination.skip_when only applies to mode: upsert")
        return self


@dataclass
class UpsertResult:
    table: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: int = 0
    duplicates: int = (
        0  # earlier rows of a key that appeared again later in the same batch (the last one wins)
    )
    rows_in: int = 0
    seconds: float = 0.0
    error_rows_path: str | None = None
    error_table: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_location(self) -> str | None:
        return self.error_table or self.error_rows_path


@dataclass(frozen=True)
class TargetColumn:
    name: str  # as the catalog spells it
    type: str  # the catalog's type name, e.g. "character varying", "NUMBER", "VARCHAR"
    nullable: bool = True
    max_length: int | None = None  # for character types
    length_in_bytes: bool = False  # Oracle VARCHAR2(n BYTE)
    cast_type: str | None = None  # the SQL type to CAST staged values to, when the staged type differs


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    # unchanged = written rows that matched a target row, were not skipped, and had no difference

    def add(self, other: Counts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.skipped += other.skipped


@dataclass
class Plan:
    """What was resolved against the catalog: which input column lands in which target column."""

    dest: DestinationConfig
    schema: str | None
    table: str  # as the catalog spells it
    columns: list[str]  # input column names, in order
    targets: dict[str, TargetColumn]  # input name -> target column
    all_target_columns: list[TargetColumn] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [self.input_name(k) for k in self.dest.keys]

    @property
    def values(self) -> list[str]:
        keys = set(self.keys)
        return [c for c in self.columns if c not in keys]

    def input_name(self, name: str) -> str:
        for c in self.columns:
            if c == name or self.targets[c].name == name:
                return c
        for c in self.columns:
            if c.lower() == name.lower():
                return c
        raise DestinationError(f"destination.keys: {name!r} is not one of the mapped columns {self.columns}")

    def target_name(self, input_name: str) -> str:
        return self.targets[input_name].name

    def skip_target_column(self) -> str | None:
        sw = self.dest.skip_when
        if sw is None:
            return None
        return find_column(self.all_target_columns, sw.column, self.qualified_label()).name

    def qualified_label(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def split_table(table: str) -> tuple[str | None, str]:
    if "." in table:
        schema, name = table.split(".", 1)
        return schema, name
    return None, table


def find_column(columns: Sequence[TargetColumn], name: str, table: str) -> TargetColumn:
    # An exact match first; then a case-insensitive one, because YAML authors write EMPLOYEE_ID for an Oracle column
    # and employee_id for the PostgreSQL one created without quotes.
    for c in columns:
        if c.name == name:
            return c
    folded = [c for c in columns if c.name.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise DestinationError(f"column {name!r} does not exist in destination table {table}")


def resolve_plan(
    dest: DestinationConfig, schema: str | None, table: str, catalog: list[TargetColumn], columns: list[str]
) -> Plan:
    label = f"{schema}.{table}" if schema else table
    missing = []
    targets: dict[str, TargetColumn] = {}
    for c in columns:
        try:
            targets[c] = find_column(catalog, c, label)
        except DestinationError:
            missing.append(c)
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise DestinationError(
            f"destination table {label} has no column {names} (mapped from the input). "
            f"Its columns are: {', '.join(c.name for c in catalog)}. Fix the mapping's target or add the column."
        )
    plan = Plan(
        dest=dest,
        schema=schema,
        table=table,
        columns=list(columns),
        targets=targets,
        all_target_columns=list(catalog),
    )
    for k in dest.keys:
        try:
            plan.input_name(k)
        except DestinationError:
            raise DestinationError(
                f"destination.keys: {k!r} is not among the input columns {columns} for table {label}"
            ) from None
    plan.skip_target_column()  # raises if the skip column is missing
    return plan


# --- input ----------------------------------------------------------------------------------------


def as_reader(data: pa.Table | pa.RecordBatchReader | pa.RecordBatch) -> pa.RecordBatchReader:
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return data.to_reader()
    raise TypeError(f"upsert takes a pyarrow Table or RecordBatchReader, got {type(data).__name__}")


def rechunk(reader: pa.RecordBatchReader, batch_size: int) -> Iterator[pa.Table]:
    """Tables of at most batch_size rows; holds at most one batch_size worth of input (plus one source batch)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for rb in reader:
        while rb.num_rows:
            take = min(rb.num_rows, batch_size - held)
            pending.append(rb.slice(0, take))
            held += take
            rb = rb.slice(take)
            if held == batch_size:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending).combine_chunks()


def normalize_batch(batch: pa.Table) -> pa.Table:
    """Types every driver takes: microsecond timestamps (no database keeps nanoseconds), large strings to strings."""
    cols = []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        t = f.type
        if pa.types.is_timestamp(t) and t.unit == "ns":
            col = pc.cast(col, pa.timestamp("us", t.tz), safe=False)
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            col = pc.cast(col, pa.string())
        elif pa.types.is_dictionary(t):
            col = pc.cast(col, t.value_type)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=batch.column_names)


@dataclass
class Rejects:
    """Rows refused in one batch: offset in the batch -> reason (the first reason found wins)."""

    reasons: dict[int, str] = field(default_factory=dict)

    def add(self, rns: Sequence[int] | np.ndarray, reason: str) -> None:
        for rn in rns:
            self.reasons.setdefault(int(rn), reason)

    def __len__(self) -> int:
        return len(self.reasons)


def precheck(batch: pa.Table, plan: Plan) -> tuple[Rejects, np.ndarray]:
    """Vectorized checks before staging. Returns the rejects and a mask of rows superseded by a later duplicate."""
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    rejects = Rejects()
    label = plan.qualified_label()
    checks: list[tuple[pl.Expr, str]] = []
    for k in plan.keys:
        checks.append((pl.col(k).is_null(), f"key column {plan.target_name(k)} is null"))
    for c in plan.columns:
        tc = plan.targets[c]
        if not tc.nullable:
            checks.append((pl.col(c).is_null(), f"NOT NULL: {label}.{tc.name} cannot be null"))
        if df.schema[c] == pl.String:
            checks.append(
                (
                    pl.col(c).str.contains("\x00", literal=True).fill_null(False),
                    f"{label}.{tc.name}: text contains a NUL byte",
                )
            )
            if tc.max_length:
                length = pl.col(c).str.len_bytes() if tc.length_in_bytes else pl.col(c).str.len_chars()
                unit = "bytes" if tc.length_in_bytes else "characters"
                checks.append(
                    (
                        (length > tc.max_length).fill_null(False),
                        f"value too long: {label}.{tc.name} allows {tc.max_length} {unit}",
                    )
                )
    if checks:
        flags = df.select([expr.alias(f"c{i}") for i, (expr, _) in enumerate(checks)])
        for i, (_, reason) in enumerate(checks):
            hits = np.flatnonzero(flags.get_column(f"c{i}").to_numpy())
            if hits.size:
                rejects.add(hits, reason)
    superseded = np.zeros(batch.num_rows, dtype=bool)
    if plan.dest.mode == "upsert" and plan.keys:
        # The database cannot apply two rows of one key in one statement (PostgreSQL: "cannot affect row a second
        # time"), and the later row is the newer fact, so the earlier ones are dropped and counted.
        last = df.select(pl.struct(plan.keys).is_last_distinct()).to_series().to_numpy()
        superseded = ~last
        if rejects.reasons:
            superseded[list(rejects.reasons)] = False
    return rejects, superseded


# --- rejected rows --------------------------------------------------------------------------------


def errors_root() -> Path:
    from adu_assets.warehouse import LandingStore

    return LandingStore().root()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, int | float | bool | str) or v is None:
        return v
    return str(v)


def error_rows(batch: pa.Table, rejects: Rejects, plan: Plan, run_id: str) -> pa.Table:
    """One row per reject: key, reason and the whole input row as JSON (enough to fix and replay it)."""
    rns = sorted(rejects.reasons)
    rows = batch.take(pa.array(rns, pa.int64())).to_pylist()  # only the rejected rows: few, off the hot path
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    keys = plan.keys or plan.columns[:1]
    return pa.table(
        {
            "ADU_RUN_ID": pa.array([run_id] * len(rns), pa.string()),
            "ADU_REJECTED_AT": pa.array([now] * len(rns), pa.timestamp("us")),
            "ADU_TABLE": pa.array([plan.qualified_label()] * len(rns), pa.string()),
            "ADU_KEY": pa.array(
                [", ".join(f"{plan.target_name(k)}={r.get(k)!s}" for k in keys) for r in rows], pa.string()
            ),
            "ADU_REASON": pa.array([redact(rejects.reasons[rn])[:2000] for rn in rns], pa.string()),
            "ADU_ROW": pa.array(
                [json.dumps({k: _jsonable(v) for k, v in r.items() if k != RN}) for r in rows], pa.string()
            ),
        }
    )


class ParquetErrorFile:
    """Rejected rows of one load in one Parquet file, written to a temporary name and renamed when complete."""

    def __init__(self, plan: Plan, run_id: str) -> None:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in plan.qualified_label())
        self.path = errors_root() / "errors" / safe / f"{run_id}-{uuid.uuid4().hex[:8]}.parquet"
        self._tmp = self.path.with_suffix(".parquet.tmp")
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        self._writer.write_table(table)

    def close(self) -> str | None:
        if self._writer is None:
            return None
        self._writer.close()
        os.replace(self._tmp, self.path)
        return str(self.path)


# --- dialects -------------------------------------------------------------------------------------


class Dialect(ABC):
    """One destination connection for one load. The driver below calls these in order."""

    # Rows per batch when destination.batch_size is not set.
    default_batch_size = 50_000
    # Prepare the next batch (pre-checks, encode()) in a background thread while this one is written. Only where
    # the source can safely be read from another thread than the destination's connection is used from.
    prefetch = False

    def __init__(self, dest: DestinationConfig, log: logging.Logger) -> None:
        self.dest = dest
        self.log = log

    def encode(self, batch: pa.Table) -> Any:
        """Turn the staged batch (with its RN column) into what stage() sends; may run in the prefetch thread."""
        return None

    @abstractmethod
    def catalog(self) -> tuple[str | None, str, list[TargetColumn]]:
        """(schema, table, columns) as the catalog spells them; DestinationError if the table does not exist."""

    @abstractmethod
    def prepare(self, plan: Plan, schema: pa.Schema) -> None:
        """Create the staging table and check the statements (before any write)."""

    @abstractmethod
    def stage(self, batch: pa.Table, encoded: Any = None) -> Rejects:
        """Bulk-load the batch (with its RN column; `encoded` is what encode() made of it) into staging; return
        rows refused while staging or by set checks."""

    @abstractmethod
    def piece(self) -> AbstractContextManager[None]:
        """A unit that can be undone alone: a savepoint, or a transaction where there are no savepoints."""

    @abstractmethod
    def apply(self, lo: int, hi: int) -> Counts:
        """Write the staged rows whose RN is in [lo, hi] and classify them. Runs inside piece()."""

    @abstractmethod
    def end_batch(self) -> None: ...

    @abstractmethod
    def write_error_table(self, name: str, rows: pa.Table) -> str:
        """Append rejected rows to the error table (created if missing); return its qualified name."""

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def error_message(self, exc: BaseException) -> str:
        return redact(" ".join(str(exc).split()))


class DbApiTransactions:
    """commit/rollback/close for a dialect holding a DB-API connection in `self.conn` (owned when
    `self._own`); shared by PostgreSQL and Oracle, whose drivers behave alike here."""

    conn: Any
    log: logging.Logger
    _own: bool

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:
            self.log.debug("rollback failed (connection already gone)")

    def close(self) -> None:
        if self._own:
            self.conn.close()


def isolate(dialect: Dialect, staged: np.ndarray, rejects: Rejects) -> Counts:
    """Apply the staged rows (sorted RNs); bisect failing ranges down to the rows the database refuses."""
    total = Counts()
    failures = 0
    stack: list[np.ndarray] = [staged] if staged.size else []
    while stack:
        rns = stack.pop()
        try:
            with dialect.piece():
                counts = dialect.apply(int(rns[0]), int(rns[-1]))
        except Exception as e:  # a database error: only its message matters, the row is kept in the errors
            if _is_connection_lost(e):
                raise
            failures += 1
            reason = dialect.error_message(e)
            if rns.size == 1:
                rejects.add(rns, reason)
            elif failures >= MAX_FAILED_STATEMENTS_PER_BATCH:
                rejects.add(
                    rns,
                    f"not isolated (more than {MAX_FAILED_STATEMENTS_PER_BATCH} failing statements "
                    f"in this batch); the range failed with: {reason}",
                )
            else:
                mid = rns.size // 2
                stack.append(rns[mid:])
                stack.append(rns[:mid])
            continue
        total.add(counts)
    return total


def _is_connection_lost(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(
        s in text
        for s in (
            "connection is closed",
            "server closed the connection",
            "connection lost",
            "dpi-1080",
            "dpy-4011",
            "not connected",
        )
    )


@dataclass
class PreparedBatch:
    """One batch after the pre-checks, ready to stage."""

    batch: pa.Table  # normalized input columns
    rejects: Rejects
    duplicates: int
    staged: pa.Table  # the rows to stage, with their RN column
    staged_rns: np.ndarray  # sorted
    encoded: Any


def prepare_batch(raw: pa.Table, plan: Plan, dialect: Dialect) -> PreparedBatch:
    batch = normalize_batch(raw.select(plan.columns))
    n = batch.num_rows
    rejects, superseded = precheck(batch, plan)
    keep = ~superseded
    if rejects.reasons:
        keep[list(rejects.reasons)] = False
    rn = pa.array(np.arange(n, dtype=np.int64))
    staged = batch.append_column(RN, rn).filter(pa.array(keep))
    staged_rns = np.flatnonzero(keep).astype(np.int64)
    encoded = dialect.encode(staged) if staged_rns.size else None
    return PreparedBatch(batch, rejects, int(superseded.sum()), staged, staged_rns, encoded)


def prefetched(items: Iterator[PreparedBatch]) -> Generator[PreparedBatch, None, None]:
    """`items`, produced one ahead in a background thread: the next batch is prepared while this one is written.

    At most two prepared batches exist at a time (the one being written and the next), so memory stays bounded by
    about twice the batch size. An exception in the producer is raised here, in the consumer.
    """
    out: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    # Released when the consumer takes an item: only then may the next one be prepared.
    slot = threading.Semaphore(1)
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                while not slot.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                item = next(items, None)
                if item is None:
                    out.put((True, None))
                    return
                out.put((True, item))
        except BaseException as e:  # handed to the consumer, which raises it
            out.put((False, e))

    worker = threading.Thread(target=produce, name="adu-upsert-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = out.get()
            if not ok:
                raise item
            if item is None:
                return
            slot.release()
            yield item
    finally:
        stop.set()
        worker.join()


def run_upsert(
    dialect: Dialect,
    dest: DestinationConfig,
    data: pa.Table | pa.RecordBatchReader,
    *,
    run_id: str,
    log: logging.Logger,
) -> UpsertResult:
    started = time.perf_counter()
    reader = as_reader(data)
    schema_, table, catalog = dialect.catalog()
    plan = resolve_plan(dest, schema_, table, catalog, [n for n in reader.schema.names if n != RN])
    result = UpsertResult(table=plan.qualified_label())
    dialect.prepare(plan, normalize_batch(reader.schema.empty_table().select(plan.columns)).schema)
    error_file = None if dest.error_table else ParquetErrorFile(plan, run_id)
    batch_size = dest.batch_size or dialect.default_batch_size
    batches = (prepare_batch(raw, plan, dialect) for raw in rechunk(reader, batch_size))
    stream = prefetched(batches) if dialect.prefetch else batches
    try:
        for p in stream:
            result.rows_in += p.batch.num_rows
            rejects, staged_rns = p.rejects, p.staged_rns
            result.duplicates += p.duplicates
            if staged_rns.size:
                more = dialect.stage(p.staged, p.encoded)
                if more.reasons:
                    staged_rns = staged_rns[~np.isin(staged_rns, np.fromiter(more.reasons, np.int64))]
                    for k, v in more.reasons.items():
                        rejects.reasons.setdefault(k, v)
                counts = isolate(dialect, staged_rns, rejects)
            else:
                counts = Counts()
            result.inserted += counts.inserted
            result.updated += counts.updated
            result.skipped += counts.skipped
            result.errors += len(rejects)
            if rejects.reasons:
                errs = error_rows(p.batch, rejects, plan, run_id)
                if dest.error_table:
                    result.error_table = dialect.write_error_table(dest.error_table, errs)
                else:
                    assert error_file is not None
                    error_file.write(errs)
            dialect.end_batch()
            log.debug("upsert into %s: %d rows so far", plan.qualified_label(), result.rows_in)
        dialect.commit()
    except BaseException:
        dialect.rollback()
        raise
    finally:
        stream.close()  # stops the prefetch thread, if any
        if error_file is not None:
            result.error_rows_path = error_file.close()
    result.unchanged = (
        result.rows_in - result.inserted - result.updated - result.skipped - result.errors - result.duplicates
    )
    result.seconds = time.perf_counter() - started
    log.info(
        "upsert into %s: %d in, %d inserted, %d updated, %d unchanged, %d skipped, %d duplicates, %d errors "
        "(%.1f s, %.0f rows/s)%s",
        result.table,
        result.rows_in,
        result.inserted,
        result.updated,
        result.unchanged,
        result.skipped,
        result.duplicates,
        result.errors,
        result.seconds,
        result.rows_per_second,
        f"; rejected rows in {result.error_location}" if result.errors else "",
    )
    return result


# --- entry points ---------------------------------------------------------------------------------

_log = logging.getLogger("adu_assets.upsert")


def open_dialect(dest: DestinationConfig, log: logging.Logger, connection: Any | None = None) -> Dialect:
    """The dialect for dest.connection.kind; `connection` (a DB-API connection) is used as is and left open."""
    kind = dest.connection.kind
    if kind == "postgres":
        from adu_assets.io_managers.upsert.postgres import PostgresUpsert

        return PostgresUpsert(dest, log, connection)
    if kind == "duckdb":
        from adu_assets.io_managers.upsert.duckdb import DuckDBUpsert

        return DuckDBUpsert(dest, log, connection)
    if kind == "oracle":
        from adu_assets.io_managers.upsert.oracle import OracleUpsert

        return OracleUpsert(dest, log, connection)
    raise ValueError(
        f"destination.connection.kind {kind!r} cannot be upserted into: use oracle, postgres or duckdb"
    )


def upsert(
    dest: DestinationConfig,
    data: pa.Table | pa.RecordBatchReader,
    *,
    run_id: str,
    log: logging.Logger | None = None,
    connection: Any | None = None,
) -> UpsertResult:
    """Insert or upsert `data` into dest.table; rows the database refuses are kept with their reason.

    Memory is bounded by the batch size (dest.batch_size, else the dialect's default) when `data` is a
    RecordBatchReader; PostgreSQL prepares the next batch while writing one, so it holds two.
    """
    logger = log or _log
    dialect = open_dialect(dest, logger, connection)
    try:
        return run_upsert(dialect, dest, data, run_id=run_id, log=logger)
    finally:
        dialect.close()


def check_destination_columns(
    dest: DestinationConfig, columns: list[str], *, connection: Any | None = None
) -> dict[str, str]:
    """{input column: destination type} from the catalog; one clear DestinationError if the table or a column
    is missing, before anything is written."""
    dialect = open_dialect(dest, _log, connection)
    try:
        schema, table, catalog = dialect.catalog()
        plan = resolve_plan(dest, schema, table, catalog, list(columns))
        return {c: plan.targets[c].type for c in plan.columns}
    finally:
        dialect.rollback()
        dialect.close()
