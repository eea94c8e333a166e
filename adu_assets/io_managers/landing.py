"""Land a `TableStream` in the warehouse: Parquet files in the data tree, registered in one DuckLake commit.

Layout under the data folder (see `adu_assets.warehouse.LandingStore`):
    parquet/<key parts>/adu_partition=<YYYY-MM-DD>/<writer>-<uuid>.parquet   immutable, zstd, never rewritten
    warehouse.sqlite (or a PostgreSQL catalog)   ->  table "<name>_<schema>"."<table>" with `adu_partition DATE`

One write:
  1. sweep the table's orphans (files of crashed writers that were never registered);
  2. check the incoming columns against the warehouse table: new columns are added, lossless widenings become
     `ALTER ... SET DATA TYPE`, anything else fails here, before a single row is read;
  3. write the rows once, as `<unique>.parquet.tmp` in the partition folders (invisible to `*.parquet` globs),
     then rename them to `.parquet`;
  4. one transaction: DELETE the partitions' rows (which retires their old files whole) and
     `ducklake_add_data_files` the new ones; COMMIT. A lost race is retried from BEGIN (bounded, jittered);
  5. retire superseded files: by default deleted at once, so the tree holds exactly the warehouse's rows;
     with `retention_days` they stay for time travel that long.
A failure anywhere before the COMMIT deletes this write's files and leaves both the tree and the warehouse as
they were. A SIGKILL leaves unregistered files whose writer lock is free; the next write of the table deletes them.

Why the tree is the warehouse: registering the files (0.07 s for 1M rows) instead of copying them into a
database keeps Parquet + warehouse at the cost of Parquet alone, and there is one copy that cannot disagree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import dagster as dg

from adu_assets.sources.catalog import quote_ident, quote_literal
from adu_assets.sources.databases import TableStream, describe_columns
from adu_assets.sources.type_map import GUARD_ERRORS
from adu_assets.warehouse import LandingStore, retry_commit

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

PARTITION_COLUMN = "adu_partition"
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd"
PREVIEW_ROWS = 5
# The alias the warehouse is attached under on a writer's connection (beside the source, attached as `src`).
WRITE_ALIAS = "adu_wh"
PENDING_SUFFIX = ".tmp"
# `<writer>-<uuid>.parquet[.tmp]`: the writer id ties a file to the lock of the process that wrote it.
_FILE_NAME = re.compile(r"^(?P<writer>[0-9a-f]{16})-[0-9a-f-]{32,36}\.parquet(\.tmp)?$")

# `warehouse` and `parquet` are two faces of one landing (the Parquet files ARE the warehouse's data), so
# every list lands the same way; `duckdb` is the 0.1 word for `warehouse`.
DESTINATION_ALIASES = {"parquet": "parquet", "warehouse": "warehouse", "duckdb": "warehouse"}


def normalize_destinations(destinations: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in destinations:
        if d not in DESTINATION_ALIASES:
            raise ValueError(
                f"unknown destination {d!r}; use parquet, warehouse (or its old name duckdb), or both"
            )
        if DESTINATION_ALIASES[d] not in out:
            out.append(DESTINATION_ALIASES[d])
    if not out:
        raise ValueError("destinations is empty; use [parquet], [warehouse] or [parquet, warehouse]")
    return out


class WarehouseSchemaError(ValueError):
    """New rows do not fit the warehouse table without loss; nothing was written."""


# --- paths ----------------------------------------------------------------------------------------


def as_store(store: LandingStore | Path | str) -> LandingStore:
    return store if isinstance(store, LandingStore) else LandingStore(data_dir=str(store))


def table_dir(root: Path, key: dg.AssetKey) -> Path:
    return root / "parquet" / Path(*key.path)


def partition_dir(root: Path, key: dg.AssetKey, partition: str) -> Path:
    return table_dir(root, key) / f"{PARTITION_COLUMN}={partition}"


def partition_file(root: Path, key: dg.AssetKey, partition: str) -> Path:
    """One fixed file a partition: the layout of trees outside the warehouse (ApiIngest's `mapped/` audit copy)."""
    return partition_dir(root, key, partition) / "data.parquet"


def landed_files(root: Path, key: dg.AssetKey, partition: str | None = None) -> list[Path]:
    """The committed-looking files of a table (or one partition) in the tree, as a glob reader sees them."""
    base = partition_dir(root, key, partition) if partition else table_dir(root, key)
    pattern = "*.parquet" if partition else f"{PARTITION_COLUMN}=*/*.parquet"
    return sorted(base.glob(pattern))


def warehouse_table(key: dg.AssetKey) -> tuple[str, str]:
    """("<name>_<schema>", "<table>") for an export key; ("<name>", "<name>") for a one-part key."""
    if len(key.path) == 1:
        return key.path[0], key.path[0]
    return "_".join(key.path[:-1]), key.path[-1]


def _target(key: dg.AssetKey, alias: str = WRITE_ALIAS) -> str:
    schema, table = warehouse_table(key)
    return f"{quote_ident(alias)}.{quote_ident(schema)}.{quote_ident(table)}"


# --- writers and orphans ----------------------------------------------------------------------------


class Writer:
    """A lock file held for the whole write; its id prefixes every file the write creates.

    A file in the tree that no catalog snapshot knows is either a running writer's (its lock is held: keep
    it) or a crashed writer's (the kernel released the lock: delete it). A writer releases its lock only
    after its COMMIT, so a sweep that finds the lock free and then reads the catalog sees the file registered
    if it ever will be.
    """

    def __init__(self, store: LandingStore) -> None:
        self.id = secrets.token_hex(8)
        self.path = store.writers_dir() / f"{self.id}.lock"
        self._fd: int | None = None

    def __enter__(self) -> Writer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweep may have found the new file unlocked and removed it before our flock: then the lock we
            # hold is on a file nobody else can see, so take it again under the path.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.write(fd, f"{socket.gethostname()}\n{os.getpid()}\n".encode())
                    self._fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self._fd)  # closing releases the lock
                self._fd = None


# Another host's lock cannot be tested here (file locks do not reliably cross a network share), so a writer
# of another host counts as running until its lock file is this old.
REMOTE_WRITER_GRACE_S = 24 * 3600
# A lock file without its host line yet is a writer starting up.
STARTING_GRACE_S = 60


def writer_alive(store: LandingStore, writer_id: str) -> bool:
    path = store.writers_dir() / f"{writer_id}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        age = time.time() - os.fstat(fd).st_mtime
        host = os.read(fd, 256).decode(errors="replace").split("\n", 1)[0]
        if host and host != socket.gethostname():
            return age < REMOTE_WRITER_GRACE_S
        if not host and age < STARTING_GRACE_S:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)  # a dead writer's lock: nothing will take it again (ids are never reused)
    return False


def _registered_names(con: duckdb.DuckDBPyConnection, writer_ids: Sequence[str], alias: str) -> set[str]:
    """File names of these writers that the catalog knows, in any snapshot or awaiting deletion."""
    meta = quote_ident(f"__ducklake_metadata_{alias}")
    names: set[str] = set()
    for writer in writer_ids:
        like = f"%{writer}-%"
        for table in ("ducklake_data_file", "ducklake_files_scheduled_for_deletion"):
            rows = con.execute(f"SELECT path FROM {meta}.{table} WHERE path LIKE {quote_literal(like)}").fetchall()
            names.update(Path(str(r[0])).name for r in rows)
    return names


def sweep_table_orphans(
    con: duckdb.DuckDBPyConnection, store: LandingStore, key: dg.AssetKey, *, alias: str = WRITE_ALIAS
) -> int:
    """Delete this table's files of crashed writers; files of running writers and registered files stay."""
    removed = _sweep_dir(con, store, table_dir(store.root(), key), alias)
    _remove_stale_locks(store)
    return removed


def _remove_stale_locks(store: LandingStore) -> None:
    """Lock and probe files of crashed writers (a writer killed before it wrote a data file leaves only these)."""
    folder = store.writers_dir()
    for path in folder.glob("*.probe.parquet"):
        if not writer_alive(store, path.name.split(".", 1)[0]):
            path.unlink(missing_ok=True)
    for path in folder.glob("*.lock"):
        writer_alive(store, path.stem)  # unlinks the lock when its writer is gone


def _sweep_dir(con: duckdb.DuckDBPyConnection, store: LandingStore, folder: Path, alias: str) -> int:
    by_writer: dict[str, list[Path]] = {}
    for path in folder.glob(f"{PARTITION_COLUMN}=*/*"):
        m = _FILE_NAME.match(path.name)
        if m:
            by_writer.setdefault(m.group("writer"), []).append(path)
    # Liveness first, catalog second: a writer frees its lock only after its commit is visible.
    dead = [w for w in by_writer if not writer_alive(store, w)]
    if not dead:
        return 0
    registered = _registered_names(con, dead, alias)
    removed = 0
    for writer in dead:
        for path in by_writer[writer]:
            if path.name.removesuffix(PENDING_SUFFIX) not in registered:
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d orphaned Parquet file(s) of crashed writers under %s", removed, folder)
    return removed


def sweep_all_orphans(store: LandingStore) -> int:
    from adu_assets.sources.databases import new_duckdb

    folders = {p.parent for p in store.parquet_root().glob(f"**/{PARTITION_COLUMN}=*")}
    if not folders:
        return 0
    con = new_duckdb()
    try:
        store.attach(con, WRITE_ALIAS)
        removed = sum(_sweep_dir(con, store, f, WRITE_ALIAS) for f in sorted(folders))
        _remove_stale_locks(store)
        return removed
    finally:
        con.close()


# --- schema ------------------------------------------------------------------------------------------

_SIGNED = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"]
_UNSIGNED = ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"]
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def widens(old: str, new: str) -> bool:
    """True when every value of type `old` is exactly representable in `new` (and they differ)."""
    old, new = old.upper(), new.upper()
    if old == new:
        return False
    if old in _SIGNED and new in _SIGNED:
        return _SIGNED.index(new) > _SIGNED.index(old)
    if old in _UNSIGNED and new in _UNSIGNED:
        return _UNSIGNED.index(new) > _UNSIGNED.index(old)
    if old in _UNSIGNED and new in _SIGNED:
        return _SIGNED.index(new) > _UNSIGNED.index(old)
    if old == "FLOAT" and new == "DOUBLE":
        return True
    mo, mn = _DECIMAL.match(old), _DECIMAL.match(new)
    if mo and mn:
        (po, so), (pn, sn) = (int(mo[1]), int(mo[2])), (int(mn[1]), int(mn[2]))
        return sn >= so and pn - sn >= po - so
    # DuckDB's VARCHAR has no length, so a longer source text type arrives as the same VARCHAR.
    return False


def plan_schema(
    table_label: str, existing: Sequence[tuple[str, str]], incoming: Sequence[tuple[str, str]]
) -> list[str]:
    """ALTER clauses (without `ALTER TABLE <t>`) that let `incoming` land in a table with `existing` columns.

    Raises WarehouseSchemaError naming every column that would lose information or change meaning.
    """
    have = dict(existing)
    clauses: list[str] = []
    problems: list[str] = []
    for name, new in incoming:
        old = have.get(name)
        if old is None:
            clauses.append(f"ADD COLUMN {quote_ident(name)} {new}")
        elif old == new:
            continue
        elif widens(old, new):
            clauses.append(f"ALTER COLUMN {quote_ident(name)} SET DATA TYPE {new}")
        else:
            problems.append(f"column {name}: warehouse type {old}, new rows {new}")
    if problems:
        raise WarehouseSchemaError(
            f"warehouse table {table_label}: {'; '.join(problems)}. Only lossless widenings (a larger DECIMAL "
            "precision or scale, a wider integer, FLOAT to DOUBLE) are applied, so nothing was written. Cast the "
            "column at the source to the warehouse type, or drop the warehouse table to start it over"
        )
    return clauses


def _table_columns(con: duckdb.DuckDBPyConnection, key: dg.AssetKey, alias: str) -> list[tuple[str, str]]:
    schema, table = warehouse_table(key)
    return describe_columns(con, alias, schema, table)


# --- one write ---------------------------------------------------------------------------------------


@dataclass
class LandingReport:
    rows: int = 0
    seconds: float = 0.0
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    snapshot_id: int | None = None
    preview_md: str | None = None
    # The table's columns are exactly `columns`, in order (no column the new files lack): then reading the
    # new files gives what reading these partitions through the warehouse gives.
    matches_table: bool = False


def _sql_list(items: Sequence[Path | str]) -> str:
    return "[" + ", ".join(quote_literal(str(p)) for p in items) + "]"


def _partition_literal(value: str, text: bool) -> str:
    return quote_literal(value) if text else f"DATE {quote_literal(value)}"


def _tagged_source(stream: TableStream, partition_value: str | None, sql: str | None = None) -> str:
    """The stream's rows (or those of `sql`, one of its parts) with their `adu_partition` value (DATE for
    exports, text for dropped files)."""
    keys = stream.partition_keys
    rows = sql or stream.sql
    if partition_value is not None:
        return f"SELECT *, CAST({quote_literal(partition_value)} AS VARCHAR) AS {PARTITION_COLUMN} FROM ({rows})"
    if stream.partition_expr == PARTITION_COLUMN:
        # The rows carry their DATE partition already (an import of a 0.1 warehouse or Parquet tree).
        days = ", ".join(_partition_literal(k, False) for k in keys)
        return f"SELECT * FROM ({rows}) WHERE {PARTITION_COLUMN} IN ({days})"
    if len(keys) > 1 and stream.partition_expr is not None:
        days = ", ".join(_partition_literal(k, False) for k in keys)
        return (
            f"SELECT * FROM (SELECT *, CAST({stream.partition_expr} AS DATE) AS {PARTITION_COLUMN} "
            f"FROM ({rows})) WHERE {PARTITION_COLUMN} IN ({days})"
        )
    return f"SELECT *, {_partition_literal(keys[0], False)} AS {PARTITION_COLUMN} FROM ({rows})"


def _probe_columns(
    con: duckdb.DuckDBPyConnection, source: str, store: LandingStore, writer: Writer
) -> list[tuple[str, str]]:
    """The column types the Parquet files will have (what the warehouse sees), from an empty file.

    Parquet has no HUGEINT, ENUM or TIME WITH TIME ZONE, so the source's own types can differ from what lands.
    """
    probe = store.writers_dir() / f"{writer.id}.probe.parquet"
    try:
        con.execute(
            f"COPY (SELECT * FROM ({source}) LIMIT 0) TO {quote_literal(str(probe))} ({PARQUET_OPTIONS})"
        )
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(str(probe))})").fetchall()
    finally:
        probe.unlink(missing_ok=True)
    return [(str(r[0]), str(r[1])) for r in rows]


def _write_files(
    con: duckdb.DuckDBPyConnection,
    stream: TableStream,
    partition_value: str | None,
    root: Path,
    key: dg.AssetKey,
    writer: Writer,
    folder_key: str | None,
) -> list[Path]:
    """Write the rows once, as pending files in their partition folders, then give them their final names."""
    keys = stream.partition_keys
    source = _tagged_source(stream, partition_value)
    if folder_key is not None or len(keys) == 1 or stream.partition_expr is None:
        folder = partition_dir(root, key, folder_key or keys[0])
        folder.mkdir(parents=True, exist_ok=True)
        sources = [_tagged_source(stream, partition_value, part) for part in stream.parts]
        pending = [folder / f"{writer.id}-{uuid.uuid4()}.parquet{PENDING_SUFFIX}" for _ in sources or [source]]

        def copy(i: int, rows: str) -> str:
            return f"COPY ({rows}) TO {quote_literal(str(pending[i]))} ({PARQUET_OPTIONS})"

        # A split read writes one file per part, all at once (`TableStream.read_parts`).
        counts = stream.read_parts(lambda i, _: copy(i, sources[i])) if sources else None
        if counts is None:
            pending = pending[:1]
            counts = [con.execute(copy(0, source)).fetchone()]
        written = []
        for path, row in zip(pending, counts, strict=True):
            if row and row[0]:
                written.append(path)
            else:
                path.unlink(missing_ok=True)  # no rows: the partition becomes empty, no file is needed
    else:
        base = table_dir(root, key)
        base.mkdir(parents=True, exist_ok=True)
        # One pass over the source, split by day straight into the partition folders. APPEND never touches
        # files already there; the pending extension keeps the new ones out of `*.parquet` globs.
        con.execute(
            f"COPY ({source}) TO {quote_literal(str(base))} ({PARQUET_OPTIONS}, PARTITION_BY ({PARTITION_COLUMN}), "
            f"WRITE_PARTITION_COLUMNS true, APPEND, FILENAME_PATTERN {quote_literal(writer.id + '-{uuid}')}, "
            f"FILE_EXTENSION {quote_literal('parquet' + PENDING_SUFFIX)})"
        )
        written = sorted(base.glob(f"{PARTITION_COLUMN}=*/{writer.id}-*.parquet{PENDING_SUFFIX}"))
    final = []
    for path in written:
        done = path.with_name(path.name.removesuffix(PENDING_SUFFIX))
        os.replace(path, done)
        final.append(done)
    return final


def _rows_by_partition(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not files:
        return counts
    rows = con.execute(
        f"SELECT file_name, num_rows FROM parquet_file_metadata({_sql_list(files)})"
    ).fetchall()
    for name, n in rows:
        partition = Path(str(name)).parent.name.split("=", 1)[1]
        counts[partition] = counts.get(partition, 0) + int(n)
    return counts


def _commit(
    con: duckdb.DuckDBPyConnection,
    key: dg.AssetKey,
    incoming: Sequence[tuple[str, str]],
    partition_filter: str,
    files: Sequence[Path],
) -> None:
    """One transaction: schema changes, the partitions' old rows out, the new files in."""
    schema, table = warehouse_table(key)
    target = _target(key)
    con.execute("BEGIN TRANSACTION")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(WRITE_ALIAS)}.{quote_ident(schema)}")
    existing = _table_columns(con, key, WRITE_ALIAS)
    if not existing:
        cols = ", ".join(f"{quote_ident(n)} {t}" for n, t in incoming)
        con.execute(f"CREATE TABLE {target} ({cols})")
    else:
        for clause in plan_schema(f"{schema}.{table}", existing, incoming):
            con.execute(f"ALTER TABLE {target} {clause}")
    con.execute(f"DELETE FROM {target} WHERE {partition_filter}")
    if files:
        con.execute(
            # The file's own adu_partition column is the value (a dropped file's path keeps its "/").
            f"CALL ducklake_add_data_files({quote_literal(WRITE_ALIAS)}, {quote_literal(table)}, "
            f"{_sql_list(files)}, schema => {quote_literal(schema)}, allow_missing => true, "
            "hive_partitioning => false)"
        )
    con.execute("COMMIT")


def _last_snapshot(con: duckdb.DuckDBPyConnection) -> int | None:
    try:
        row = con.execute(
            f"SELECT id FROM ducklake_last_committed_snapshot({quote_literal(WRITE_ALIAS)})"
        ).fetchone()
    except Exception:  # only metadata: the commit is done
        log.debug("reading the committed snapshot id failed", exc_info=True)
        return None
    return int(row[0]) if row and row[0] is not None else None


def _discard(con: duckdb.DuckDBPyConnection, store: LandingStore, key: dg.AssetKey, writer: Writer) -> None:
    """After a failed write: delete this writer's files unless the catalog has them (it then committed)."""
    mine = [
        p
        for p in table_dir(store.root(), key).glob(f"{PARTITION_COLUMN}=*/{writer.id}-*")
        if _FILE_NAME.match(p.name)
    ]
    if not mine:
        return
    try:
        registered = _registered_names(con, [writer.id], WRITE_ALIAS)
    except Exception:  # catalog unreachable: leave them; the next write sweeps them once our lock is free
        log.warning(
            "could not check %d file(s) of a failed write against the catalog; left for the next sweep",
            len(mine),
        )
        return
    for path in mine:
        if path.name.removesuffix(PENDING_SUFFIX) not in registered:
            path.unlink(missing_ok=True)


def retire_superseded(con: duckdb.DuckDBPyConnection, store: LandingStore, alias: str = WRITE_ALIAS) -> None:
    """Delete files no snapshot within `retention_days` needs; a failure here only delays it to the next write."""
    seconds = max(0.0, float(store.retention_days) * 86400.0)
    try:
        retry_commit(
            con,
            lambda: con.execute(
                f"CALL ducklake_expire_snapshots({quote_literal(alias)}, "
                f"older_than => now() - to_microseconds(CAST({int(seconds * 1e6)} AS BIGINT)))"
            ),
            attempts=5,
        )
        retry_commit(
            con,
            lambda: con.execute(f"CALL ducklake_cleanup_old_files({quote_literal(alias)}, cleanup_all => true)"),
            attempts=5,
        )
    except Exception as e:
        from adu_assets.secrets import redact

        log.warning(
            "superseded warehouse files were not removed yet (the next write retries): %s", redact(str(e))
        )


def write_table(
    stream: TableStream,
    store: LandingStore,
    key: dg.AssetKey,
    *,
    partition_value: str | None = None,
) -> LandingReport:
    """Land `stream` as one warehouse commit. `partition_value` makes `adu_partition` that text (FileDrop);
    otherwise it is the DATE of the stream's partition keys."""
    con = stream.con
    root = store.root()
    schema, table = warehouse_table(key)
    text = partition_value is not None
    report = LandingReport()
    with Writer(store) as writer:
        store.attach(con, WRITE_ALIAS)
        try:
            sweep_table_orphans(con, store, key)
            source = _tagged_source(stream, partition_value)
            incoming = _probe_columns(con, source, store, writer)
            # Fail on a lossy type change before reading the source; checked again inside the commit.
            existing = _table_columns(con, key, WRITE_ALIAS)
            plan_schema(f"{schema}.{table}", existing, incoming)
            names = [n for n, _ in incoming]
            report.matches_table = [n for n, _ in existing] == names[: len(existing)]
            values = [partition_value] if partition_value is not None else list(stream.partition_keys)
            assert values, "no partition to land"
            partition_filter = (
                f"{PARTITION_COLUMN} IN ({', '.join(_partition_literal(v, text) for v in values)})"
            )
            files: list[Path] = []
            try:
                files = _write_files(
                    con, stream, partition_value, root, key, writer, stream.partition_keys[0] if text else None
                )
                report.rows_by_partition = {k: 0 for k in stream.partition_keys}
                report.rows_by_partition.update(_rows_by_partition(con, files))
                with store.commit_lock():
                    retry_commit(con, lambda: _commit(con, key, incoming, partition_filter, files))
            except BaseException:
                _discard(con, store, key, writer)
                raise
            report.snapshot_id = _last_snapshot(con)
            report.files = files
            report.rows = sum(report.rows_by_partition.values())
            report.columns = [(n, t) for n, t in incoming if n != PARTITION_COLUMN]
            if files:
                try:
                    report.preview_md = _preview(
                        con, f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM read_parquet({_sql_list(files)})"
                    )
                except (
                    Exception
                ):  # a later write of the partition already retired the files: data is committed
                    log.debug("no preview: the landed files were already superseded", exc_info=True)
            with store.commit_lock():
                retire_superseded(con, store)
        finally:
            try:
                con.execute(f"DETACH {quote_ident(WRITE_ALIAS)}")
            except Exception:  # a broken connection must not hide the real error
                log.debug("detaching the warehouse failed", exc_info=True)
    return report


# --- metadata -------------------------------------------------------------------------------------


def _preview(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    rel = con.execute(f"SELECT * FROM ({sql}) LIMIT {PREVIEW_ROWS}")
    names = [d[0] for d in rel.description or []]
    rows = rel.fetchall()
    return markdown_table(names, rows)


def markdown_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= 60 else s[:57] + "..."

    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def land(
    stream: TableStream,
    destinations: Sequence[str],
    store: LandingStore | Path | str,
    key: dg.AssetKey,
    *,
    partition_value: str | None = None,
) -> dict[str, Any]:
    """Land the stream (one warehouse commit) and return the materialization metadata.

    Every destination list lands the same files and commit: `parquet` and `warehouse` (`duckdb`) are the
    tree and the catalog view of the same data.
    """
    return land_report(stream, destinations, store, key, partition_value=partition_value)[0]


def land_report(
    stream: TableStream,
    destinations: Sequence[str],
    store: LandingStore | Path | str,
    key: dg.AssetKey,
    *,
    partition_value: str | None = None,
) -> tuple[dict[str, Any], LandingReport]:
    """`land`, also returning what landed (the files, their columns)."""
    normalize_destinations(destinations)
    store = as_store(store)
    started = time.monotonic()
    try:
        report = write_table(stream, store, key, partition_value=partition_value)
    except Exception as e:
        # A guarded read (numeric columns checked while read, `pg_guarded_numeric`) met a value it cannot land
        # as planned, or planned a type the warehouse table cannot take (a table landed with DECIMAL(38,20)
        # by an earlier probe): nothing was committed. Probe the columns and read again, once; the probe
        # picks the types it always picked.
        unfit = any(m in str(e) for m in GUARD_ERRORS)
        if not (unfit or isinstance(e, WarehouseSchemaError)) or not stream.read_probed():
            raise
        log.info(
            "%s: %s: probed the numeric columns and read again",
            key.to_user_string(),
            "a numeric value does not fit the type planned without a probe (NaN, Infinity, a longer scale "
            "or a larger number)"
            if unfit
            else "the type planned without a probe differs from the warehouse table's",
        )
        report = write_table(stream, store, key, partition_value=partition_value)
    seconds = time.monotonic() - started
    schema, table = warehouse_table(key)
    root = store.root()
    rows = report.rows
    keys = stream.partition_keys
    meta: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=t) for n, t in report.columns]
        ),
        "dagster/table_name": f"warehouse.{schema}.{table}",
        "path": dg.MetadataValue.path(
            str(partition_dir(root, key, keys[0]) if len(keys) == 1 else table_dir(root, key))
        ),
        "duration_s": dg.MetadataValue.float(round(seconds, 3)),
        "rows_per_s": dg.MetadataValue.float(round(rows / seconds, 1) if seconds > 0 else 0.0),
        "source": stream.source_label,
        "partitions": ", ".join(keys),
        "warehouse_rows": dg.MetadataValue.int(rows),
        "warehouse_catalog": store.catalog_label(),
        "files": dg.MetadataValue.int(len(report.files)),
    }
    if report.snapshot_id is not None:
        meta["warehouse_snapshot"] = dg.MetadataValue.int(report.snapshot_id)
    if len(report.rows_by_partition) > 1:
        meta["rows_by_partition"] = dg.MetadataValue.json(report.rows_by_partition)
    meta["preview"] = dg.MetadataValue.md(
        report.preview_md or markdown_table([n for n, _ in report.columns], [])
    )
    if stream.notes:
        meta["type_notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in stream.notes))
    return meta, report
