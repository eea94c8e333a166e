"""Database readers: PostgreSQL, DuckDB and SQLite through DuckDB, Vertica through vertica-python.

Every reader produces a `TableStream`: a DuckDB connection plus a SELECT over the source. The IO managers
run it straight into Parquet or the DuckDB warehouse, so rows never pass through Python.

PostgreSQL goes through DuckDB's postgres scanner (measured at 1.15x raw COPY, against 2.65x for ADBC and
8.3x for polars.read_database): it reads with binary COPY over ctid ranges on one exported snapshot.
Extensions are loaded from their PyPI packages by path; DuckDB is told never to install or autoload, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adu_assets.secrets import redact, scrub_exception
from adu_assets.sources.catalog import ColumnInfo, TableInfo, quote_ident, quote_literal
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.type_map import (
    HUGEINT_LIMIT,
    ColumnRead,
    NotExact,
    NumericProbe,
    PgColumn,
    SqliteProbe,
    duck_read,
    pg_guardable,
    pg_guarded_numeric,
    pg_needs_probe,
    pg_numeric_typmod,
    pg_probe_magnitude,
    pg_read,
    sqlite_back,
    sqlite_read,
    sqlite_source_expr,
)

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

SOURCE_ALIAS = "src"

_EXTENSION_PACKAGES = {
    "postgres": "duckdb_extension_postgres_scanner",
    "sqlite": "duckdb_extension_sqlite_scanner",
    "ducklake": "duckdb_extension_ducklake",
}


class SourceError(RuntimeError):
    """A source could not be read. Messages name the table and cause, never a secret.

    `retryable` is False for causes a retry cannot fix (a missing table or column, a refused password).
    """

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is None:
            retryable = not any(m in message for m in _PERMANENT)
        self.retryable = retryable


_PERMANENT = (
    "was not found at the source",
    "is not in",
    "password authentication failed",
    "does not exist",
    "permission denied",
    "is not installed",
    "no extension built",
)


@cache
def extension_path(kind: str) -> Path:
    package = _EXTENSION_PACKAGES[kind]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise SourceError(
            f"the DuckDB extension package {package} is not installed; install it from PyPI or your local "
            "wheelhouse (it must match the installed duckdb version)"
        ) from None
    import duckdb

    version = f"v{duckdb.__version__}"
    root = Path(module.__path__[0]) / "extensions"
    exact = list((root / version).glob("*.duckdb_extension"))
    if exact:
        return exact[0]
    found = sorted(root.rglob("*.duckdb_extension"))
    raise SourceError(
        f"{package} has no extension built for duckdb {duckdb.__version__} (found: "
        f"{', '.join(p.parent.name for p in found) or 'none'}); pin duckdb and the extension to the same version"
    )


# DuckDB checks an extension's signature on every LOAD by hashing the whole file (35-42 MB: 0.08-0.13 s per
# load), and every new in-memory database loads its extensions afresh: exporting one table with its checks
# loaded 7 of them, 0.6 s of a 1.8 s step. So DuckDB checks each file's signature once per process, on a
# throwaway database; later loads of the same unchanged file (same inode, size and modification time) go into
# our own connections, which are opened with `allow_unsigned_extensions` and only ever LOAD a file that
# passed. Connections handed to users (`adu sql`, `adu_assets.warehouse.connect()`) keep DuckDB's check on
# every load, so a LOAD typed there is checked as DuckDB always does.
_VERIFIED: dict[Path, tuple[int, int, int]] = {}
_VERIFY_LOCK = threading.Lock()


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check_signature(path: Path) -> None:
    """Have DuckDB check the file's signature, by loading it into a throwaway database."""
    import duckdb

    with closing(duckdb.connect(":memory:", config=_AIR_GAPPED)) as probe:
        probe.execute(f"LOAD {quote_literal(str(path))}")


# Air-gapped: an extension is loaded by path or not at all.
_AIR_GAPPED: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def new_duckdb(
    database: str = ":memory:", *, threads: int | None = None, for_user: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for our own SQL. `for_user=True`: one whose SQL a user types (every LOAD checked)."""
    import duckdb

    config = dict(_AIR_GAPPED)
    if not for_user:
        # Only files whose signature was checked in this process are loaded into it (load_extension).
        config["allow_unsigned_extensions"] = True
    if threads:
        config["threads"] = threads
    con = duckdb.connect(database, config=config)
    utc_session(con)
    # Row order inside a partition carries no meaning (a PostgreSQL heap has none); not preserving it lets
    # DuckDB write Parquet and warehouse tables from all threads at once (measured 10-40% faster).
    con.execute("SET preserve_insertion_order = false")
    # DuckDB draws a progress bar on stderr for long queries, which would fill every step's captured log.
    con.execute("SET enable_progress_bar = false")
    if not for_user:
        # A missing name makes DuckDB look for a similar one in every attached database ("Did you mean"),
        # which loads the whole catalog of an attached PostgreSQL source. Our own lookups expect misses
        # (`describe_columns` of a table not landed yet) and need no suggestions.
        con.execute("SET catalog_error_max_schemas = 0")
    return con


def utc_session(con: duckdb.DuckDBPyConnection) -> None:
    """Daily partitions are UTC days: timestamptz comparisons must not depend on the host's zone. The time
    zone is a setting of each connection: a `cursor()` of `con` needs it again."""
    con.execute("SET TimeZone = 'UTC'")


def load_extension(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    path = extension_path(kind)
    trusting = con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()
    if not (trusting and trusting[0]):
        con.execute(f"LOAD {quote_literal(str(path))}")  # DuckDB checks the signature itself
        return
    with _VERIFY_LOCK:
        seen = _fingerprint(path)
        if _VERIFIED.get(path) != seen:  # first load in this process, or the file was replaced since
            _check_signature(path)
            _VERIFIED[path] = seen
        con.execute(f"LOAD {quote_literal(str(path))}")


@dataclass
class Plan:
    """How one table is read: the SELECT, its type notes, whether numeric columns are checked while read
    (`pg_guarded_numeric`), and the SELECT split in parts for parallel reading (`_pg_split`)."""

    sql: str
    notes: list[str]
    guarded: bool = False
    parts: list[str] = field(default_factory=list)


@dataclass
class TableStream:
    """Rows of one source table for one partition window, ready to be landed.

    `sql` is evaluated on `con`. It can be consumed once: landers write Parquet first and load the
    warehouse from that file, so the source is read a single time.
    """

    con: duckdb.DuckDBPyConnection
    sql: str
    table: TableInfo
    source_label: str
    partition_keys: list[str]
    # SQL over the stream's columns giving each row's partition key (YYYY-MM-DD); None for snapshots.
    partition_expr: str | None = None
    notes: list[str] = field(default_factory=list)
    # Set when numeric columns are read guarded (`pg_guarded_numeric`): plans the probed read instead.
    replan: Callable[[], Plan] | None = None
    # The same rows as `sql`, split over ctid ranges of the PostgreSQL table (`_pg_split`), for
    # `read_parts`; empty when the read is one query.
    parts: list[str] = field(default_factory=list)

    def read_probed(self) -> bool:
        """Switch a guarded read to the probed one (the caller reads again); False if it is not guarded."""
        if self.replan is None:
            return False
        plan = self.replan()
        self.sql, self.notes, self.parts = plan.sql, plan.notes, plan.parts
        self.replan = None
        return True

    def read_parts(self, statement: Callable[[int, str], str]) -> list[tuple[Any, ...] | None] | None:
        """Run `statement(i, part)` for every part at once, each on its own cursor of `con`, and return the
        first row of each; None when the parts cannot share a snapshot (the caller reads in one query).

        postgres_query reads on one thread: one PostgreSQL backend computes the rows and one DuckDB thread
        decodes and compresses them. Parts spread that over the cores as the scanner does for plain
        reads (10 tables of 600k rows with an unconstrained numeric: 0.70 -> 0.47 s each on 2 cores).
        All parts read in one snapshot of the source (`_share_snapshot`), so together they are exactly
        the rows one query would read. The first failure interrupts the other parts and is raised.
        """
        cursors: list[duckdb.DuckDBPyConnection] = []
        try:
            for _ in self.parts:
                cursor = self.con.cursor()
                cursors.append(cursor)
                utc_session(cursor)
                cursor.execute("BEGIN TRANSACTION")
            try:
                _share_snapshot(cursors, self.table)
            except Exception as e:
                # No connection to spare (max_connections), or a pooler or server without exported
                # snapshots: one query reads the same rows.
                log.warning(
                    "%s.%s: read in one query, the parts cannot share a snapshot: %s",
                    self.table.schema,
                    self.table.name,
                    redact(str(e)).strip().splitlines()[-1][:300],
                )
                return None
            rows = _run_parallel(cursors, [statement(i, part) for i, part in enumerate(self.parts)])
            for cursor in cursors:
                cursor.execute("COMMIT")
            return rows
        finally:
            for cursor in cursors:
                try:
                    cursor.close()  # rolls back what is still open
                except Exception:  # closing must never hide the real error
                    log.debug("closing a part's cursor failed", exc_info=True)

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:  # closing must never hide the real error
            log.debug("closing the extraction connection failed", exc_info=True)


def _share_snapshot(cursors: list[duckdb.DuckDBPyConnection], table: TableInfo) -> None:
    """Make every cursor's PostgreSQL transaction read the first one's snapshot, with `table` locked.

    Each cursor is its own DuckDB transaction, so its own PostgreSQL connection; the first exports its
    snapshot and stays open (the snapshot lives as long as it does) while the others import it before any
    query of theirs, as the scanner's parallel readers do.

    Every part holds the table's ACCESS SHARE lock (what any read takes) before a part reads. The first
    takes it before its snapshot: a TRUNCATE or a rewriting ALTER TABLE, which are not MVCC-safe, then
    waits for the read instead of emptying the table under the snapshot. The others take it NOWAIT: once
    such a command is queued behind the first part's lock, their request would queue behind it, and the
    first part (committed only with the others) would never let it through. They raise instead, and the
    caller reads in one query.
    """

    def execute(cursor: duckdb.DuckDBPyConnection, command: str) -> None:
        cursor.execute(f"CALL postgres_execute({quote_literal(SOURCE_ALIAS)}, {quote_literal(command)})")

    lock = f"LOCK TABLE {quote_ident(table.schema)}.{quote_ident(table.name)} IN ACCESS SHARE MODE"
    execute(cursors[0], lock)
    snapshot = str(_pg_query(cursors[0], "SELECT pg_export_snapshot()")[0][0])
    for cursor in cursors[1:]:
        execute(cursor, f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot)}")
        execute(cursor, f"{lock} NOWAIT")


def _run_parallel(
    cursors: list[duckdb.DuckDBPyConnection], statements: list[str]
) -> list[tuple[Any, ...] | None]:
    """Each statement on its cursor, in threads (DuckDB releases the GIL); the first error wins."""
    rows: list[tuple[Any, ...] | None] = [None] * len(statements)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def stop_all() -> None:
        for cursor in cursors:
            try:
                cursor.interrupt()
            except Exception:  # an already finished cursor
                pass

    def work(i: int) -> None:
        try:
            rows[i] = cursors[i].execute(statements[i]).fetchone()
        except BaseException as e:
            with lock:
                errors.append(e)  # the first one is the cause; the others are its interruptions
            stop_all()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(statements))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # the run is being stopped: stop the reads before leaving
        stop_all()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
    return rows


@contextmanager
def open_source(cfg: ConnectionConfig, *, label: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with the source attached read-only as `src`."""
    con = new_duckdb()
    try:
        attach_source(con, cfg, label=label)
        yield con
    finally:
        con.close()


def attach_source(con: duckdb.DuckDBPyConnection, cfg: ConnectionConfig, *, label: str) -> None:
    try:
        if cfg.kind == "postgres":
            load_extension(con, "postgres")
            password = cfg.resolve_password()
            parts = {
                "HOST": cfg.host,
                "PORT": str(cfg.resolved_port),
                "DATABASE": cfg.database,
                "USER": cfg.user,
                "PASSWORD": password,
            }
            # A temporary, in-memory DuckDB secret keeps the password out of the ATTACH string, so
            # it cannot surface in DuckDB's own error messages or query logs.
            body = ", ".join(f"{k} {quote_literal(str(v))}" for k, v in parts.items() if v is not None)
            con.execute(f"CREATE OR REPLACE TEMPORARY SECRET adu_source (TYPE postgres, {body})")
            # Options checked at load and quoted the libpq way: a value cannot add a key (dbname=, host=).
            con.execute(
                f"ATTACH {quote_literal(cfg.libpq_options())} AS {SOURCE_ALIAS} "
                "(TYPE postgres, SECRET adu_source, READ_ONLY)"
            )
        elif cfg.kind == "sqlite":
            path = cfg.resolved_path
            if not path.exists():
                raise SourceError(f"SQLite file {path} does not exist")
            load_extension(con, "sqlite")
            con.execute(f"ATTACH {quote_literal(str(path))} AS {SOURCE_ALIAS} (TYPE sqlite, READ_ONLY)")
        elif cfg.kind == "duckdb":
            path = cfg.resolved_path
            if not path.exists():
                raise SourceError(f"DuckDB file {path} does not exist")
            con.execute(f"ATTACH {quote_literal(str(path))} AS {SOURCE_ALIAS} (READ_ONLY)")
        else:
            raise SourceError(f"{cfg.kind} sources are not read through DuckDB")
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(str(scrub_exception(e, f"cannot open source {label} ({cfg.describe()})"))) from None


def discover(cfg: ConnectionConfig, schema: str, *, label: str) -> list[TableInfo]:
    """Every base table of `schema`, with its columns; views are left out."""
    if cfg.kind == "vertica":
        from adu_assets.sources import vertica

        conn = vertica.connect_vertica(cfg)
        try:
            return vertica.discover_tables(conn, schema)
        finally:
            conn.close()
    with open_source(cfg, label=label) as con:
        return _discover_attached(con, cfg, schema)


def _discover_attached(
    con: duckdb.DuckDBPyConnection, cfg: ConnectionConfig, schema: str
) -> list[TableInfo]:
    # Quoted, not bound (see `describe_columns`).
    rows = con.execute(
        f"""
        SELECT t.table_name, c.column_name, c.data_type, c.is_nullable
        FROM duckdb_tables() t
        JOIN duckdb_columns() c USING (database_name, schema_name, table_name)
        WHERE t.database_name = {quote_literal(SOURCE_ALIAS)} AND t.schema_name = {quote_literal(schema)}
          AND NOT t.temporary
        ORDER BY t.table_name, c.column_index
        """
    ).fetchall()
    native: dict[tuple[str, str], str] = {}
    base_tables: set[str] = set()
    if cfg.kind == "postgres":
        for pg_table, is_partition, column, declared in _pg_catalog(con, schema):
            # The postgres scanner lists views among its tables; only base tables are exported. A partitioned
            # table is exported once, as its parent: its partitions hold the same rows again.
            if is_partition:
                continue
            base_tables.add(pg_table)
            native[(pg_table, column)] = declared
    tables: dict[str, list[ColumnInfo]] = {}
    for table, column, dtype, nullable in rows:
        if cfg.kind == "postgres" and table not in base_tables:
            continue
        tables.setdefault(table, []).append(
            ColumnInfo(column, native.get((table, column), dtype), bool(nullable))
        )
    return [TableInfo(schema, name, tuple(cols)) for name, cols in tables.items()]


def _pg_query(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` run by PostgreSQL itself (its catalog and probes)."""
    rows: list[tuple[Any, ...]] = con.execute(
        f"SELECT * FROM postgres_query({quote_literal(SOURCE_ALIAS)}, {quote_literal(sql)})"
    ).fetchall()
    return rows


def _pg_catalog(con: duckdb.DuckDBPyConnection, schema: str) -> list[tuple[str, bool, str, str]]:
    """(table, is a partition, column, declared type) of every table and partitioned table (relkind r, p)."""
    inner = (
        "SELECT c.relname::text, c.relispartition, a.attname::text, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = {quote_literal(schema)} AND c.relkind IN ('r', 'p') "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
    )
    return [(str(r[0]), bool(r[1]), str(r[2]), str(r[3])) for r in _pg_query(con, inner)]


def _pg_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[PgColumn]:
    """The columns of one table with what the type map needs: a domain resolved to its base type, through
    any chain of domains (the typmod nearest the column wins, as in PostgreSQL)."""
    inner = (
        "WITH RECURSIVE chain(oid, base, typmod, depth) AS ("
        " SELECT oid, typbasetype, typtypmod, 1 FROM pg_type WHERE typtype = 'd'"
        " UNION ALL"
        " SELECT c.oid, t.typbasetype, CASE WHEN c.typmod <> -1 THEN c.typmod ELSE t.typtypmod END, c.depth + 1"
        " FROM chain c JOIN pg_type t ON t.oid = c.base WHERE t.typtype = 'd' AND c.depth < 16"
        "), dom AS (SELECT DISTINCT ON (oid) oid, base, typmod FROM chain ORDER BY oid, depth DESC) "
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS declared, "
        "CASE WHEN t.typtype = 'd' THEN format_type(dom.base, dom.typmod) "
        "ELSE format_type(a.atttypid, a.atttypmod) END AS base, t.typtype::text AS typtype, "
        "COALESCE(b.typcategory, t.typcategory)::text AS category, "
        "format_type(NULLIF(COALESCE(b.typelem, t.typelem), 0), NULL) AS element, NOT a.attnotnull AS nullable "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN dom ON t.typtype = 'd' AND dom.oid = t.oid "
        "LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = dom.base "
        f"WHERE n.nspname = {quote_literal(schema)} AND c.relname = {quote_literal(table)} "
        "AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )
    return [
        PgColumn(
            name=r[0], declared=r[1], base=r[2], typtype=r[3], category=r[4], element=r[5], nullable=bool(r[6])
        )
        for r in _pg_query(con, inner)
    ]


def _refuse_case_twins(info: TableInfo, where: str) -> None:
    """DuckDB, Parquet readers and the warehouse match column names without regard to case: a table with
    both "Amount" and "amount" cannot land with both, so it is refused, naming them."""
    seen: dict[str, list[str]] = {}
    for c in info.columns:
        seen.setdefault(c.name.lower(), []).append(c.name)
    twins = [names for names in seen.values() if len(names) > 1]
    if twins:
        raise SourceError(
            f"{where}: {info.schema}.{info.name} has columns whose names differ only in letter case "
            f"({'; '.join(', '.join(names) for names in twins)}); DuckDB and the warehouse cannot keep them "
            "apart, so the table is not exported",
            retryable=False,
        )


def _pg_table_info(
    con: duckdb.DuckDBPyConnection, schema: str, table: str, columns: list[PgColumn], *, where: str
) -> TableInfo:
    """`columns` (from `_pg_columns`) as a TableInfo, or the not-found error naming the schema's tables."""
    if columns:
        return TableInfo(schema, table, tuple(ColumnInfo(c.name, c.declared, c.nullable) for c in columns))
    names = sorted({r[0] for r in _pg_catalog(con, schema)})
    known = ", ".join(names[:20]) or "none"
    raise SourceError(f"{where}: table {schema}.{table} was not found at the source (tables found: {known})")


def find_table(
    catalog: list[TableInfo], schema: str, name: str, *, where: str, case_sensitive: bool = True
) -> TableInfo:
    def same(a: str, b: str) -> bool:
        return a == b if case_sensitive else a.lower() == b.lower()

    for t in catalog:
        if same(t.schema, schema) and same(t.name, name):
            return t
    known = ", ".join(sorted(t.name for t in catalog)[:20]) or "none"
    raise SourceError(f"{where}: table {schema}.{name} was not found at the source (tables found: {known})")


def check_column(table: TableInfo, column: str, *, where: str, case_sensitive: bool = True) -> ColumnInfo:
    for c in table.columns:
        if c.name == column or (not case_sensitive and c.name.lower() == column.lower()):
            return c
    raise SourceError(
        f"{where}: column {column!r} is not in {table.schema}.{table.name} "
        f"(columns: {', '.join(c.name for c in table.columns)})"
    )


def window_filter(column: str, window: tuple[datetime, datetime]) -> str:
    """`column` within [start, end), as SQL. The bounds are written as UTC instants (a partition's window
    is in the partitions' time zone); DuckDB pushes the filter down to PostgreSQL, so an index on the
    column keeps daily partitions cheap."""
    start, end = (quote_literal(w.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")) for w in window)
    col = quote_ident(column)
    return f"{col} >= CAST({start} AS TIMESTAMPTZ) AND {col} < CAST({end} AS TIMESTAMPTZ)"


def partition_key_expr(column: str, timezone: str = "UTC") -> str:
    # The day of the incremental column in the partitions' time zone: the key of the row's daily partition.
    return f"strftime(timezone({quote_literal(timezone)}, CAST({quote_ident(column)} AS TIMESTAMPTZ)), '%Y-%m-%d')"


def describe_columns(
    con: duckdb.DuckDBPyConnection, database: str, schema: str, table: str
) -> list[tuple[str, str]]:
    """(column name, DuckDB type) of one table, in column order; [] when there is no such table.

    DESCRIBE binds just that table. `duckdb_columns()` lists every attached database instead, and on a
    connection with PostgreSQL attached that loads the scanner's catalog of every schema of the source
    database (0.15 s per export at 1,000 tables, growing with the database). The names are quoted into the
    SQL, never bound: binding parameters makes DuckDB's Python client import pandas (0.5-0.7 s per process),
    which nothing on the export path needs otherwise.
    """
    import duckdb

    try:
        rows = con.execute(
            f"DESCRIBE {quote_ident(database)}.{quote_ident(schema)}.{quote_ident(table)}"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    return [(str(r[0]), str(r[1])) for r in rows]


def open_table_stream(
    cfg: ConnectionConfig,
    *,
    schema: str,
    table: str,
    label: str,
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
    partition_keys: list[str],
    timezone: str = "UTC",
    casts: dict[str, str] | None = None,
) -> TableStream:
    """Open the source and describe the SELECT for one table and partition window.

    The table and column names are checked against the live catalog first, so a name from YAML can only
    ever select an existing table; it is quoted as well. Every column is read through the type map
    (`type_map.py`): the SELECT already has exact, Parquet-writable types, or this raises a SourceError
    naming the column and the `cast:` that would let it land, before anything is written.
    """
    where = f"{label}.{table}"
    if cfg.kind == "vertica":
        return _vertica_stream(
            cfg, schema, table, label, incremental_column, window, partition_keys, timezone, casts or {}
        )

    con = new_duckdb()
    try:
        attach_source(con, cfg, label=label)
        pg_columns: list[PgColumn] | None = None
        try:
            if cfg.kind == "postgres":
                # Only this table's rows of PostgreSQL's catalog (a partition may be exported on its own).
                pg_columns = _pg_columns(con, schema, table)
                info = _pg_table_info(con, schema, table, pg_columns, where=where)
            else:
                catalog = _discover_attached(con, cfg, schema)
                info = find_table(catalog, schema, table, where=where)
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(
                str(scrub_exception(e, f"{where}: cannot read the catalog of {schema}"))
            ) from None
        _refuse_case_twins(info, where)
        if incremental_column:
            check_column(info, incremental_column, where=where)
        casts = dict(casts or {})
        unknown = sorted(set(casts) - {c.name for c in info.columns})
        if unknown:
            raise SourceError(
                f"{where}: cast: names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                f"not in {schema}.{table} (columns: {', '.join(c.name for c in info.columns)})",
                retryable=False,
            )
        duck_types = dict(describe_columns(con, SOURCE_ALIAS, schema, table))
        if not duck_types:
            raise SourceError(f"{where}: DuckDB's {cfg.kind} scanner does not see the table {schema}.{table}")
        replan: Callable[[], Plan] | None = None
        parts: list[str] = []
        try:
            if cfg.kind == "postgres":
                plan = _pg_select(con, info, duck_types, casts, incremental_column, window, columns=pg_columns)
                sql, notes, parts = plan.sql, plan.notes, plan.parts
                if plan.guarded:
                    pg_casts, pg_info = casts, info

                    def replan() -> Plan:
                        try:
                            return _pg_select(
                                con, pg_info, duck_types, pg_casts, incremental_column, window, guarded=False
                            )
                        except (NotExact, ValueError) as e:
                            raise SourceError(f"{where}: {e}", retryable=False) from None
                        except SourceError:
                            raise
                        except Exception as e:
                            raise SourceError(str(scrub_exception(e, f"{where}: cannot plan the read"))) from None

            elif cfg.kind == "sqlite":
                sql, notes = _sqlite_select(con, info, duck_types, casts, incremental_column, window)
            else:
                sql, notes = _duckdb_select(con, info, duck_types, casts, incremental_column, window)
        except NotExact as e:
            raise SourceError(f"{where}: {e}", retryable=False) from None
        except ValueError as e:  # a `cast:` word the type map does not know
            raise SourceError(f"{where}: {e}", retryable=False) from None
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(str(scrub_exception(e, f"{where}: cannot plan the read"))) from None
        return TableStream(
            con=con,
            sql=sql,
            table=info,
            source_label=cfg.describe(),
            partition_keys=partition_keys,
            partition_expr=partition_key_expr(incremental_column, timezone) if incremental_column else None,
            notes=notes,
            replan=replan,
            parts=parts,
        )
    except BaseException:
        con.close()
        raise


def _fqn(table: TableInfo) -> str:
    return f"{SOURCE_ALIAS}.{quote_ident(table.schema)}.{quote_ident(table.name)}"


def _assemble(
    reads: list[ColumnRead],
    source: str,
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
    *,
    filter_inside: bool,
) -> str:
    select_list = ", ".join(r.select_expr for r in reads)
    sql = f"SELECT {select_list} FROM {source}"
    if incremental_column and window:
        if filter_inside:
            sql += f" WHERE {window_filter(incremental_column, window)}"
        else:
            sql = f"SELECT * FROM ({sql}) WHERE {window_filter(incremental_column, window)}"
    return sql


def _pg_window_filter(column: str, declared: str, window: tuple[datetime, datetime]) -> str:
    """`window_filter` in PostgreSQL's SQL, for a SELECT PostgreSQL runs itself: the same rows (a date or
    timestamp compares as a UTC wall clock, as DuckDB's CAST to TIMESTAMPTZ in a UTC session does)."""
    col = quote_ident(column)
    if declared.startswith("timestamp") and "with time zone" in declared:
        start, end = (
            quote_literal(w.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")) + "::timestamptz"
            for w in window
        )
    else:
        start, end = (
            quote_literal(w.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")) + "::timestamp" for w in window
        )
    return f"{col} >= {start} AND {col} < {end}"


def _pg_select(
    con: duckdb.DuckDBPyConnection,
    info: TableInfo,
    duck_types: dict[str, str],
    casts: dict[str, str],
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
    *,
    guarded: bool = True,
    columns: list[PgColumn] | None = None,
) -> Plan:
    """The SELECT for one PostgreSQL table, its type notes, and whether numeric columns are read guarded.

    Numeric columns need their values known before the read (a NaN the scanner would read as 0, the scale of
    an unconstrained numeric). When the read goes through PostgreSQL's own SQL anyway (an unconstrained
    numeric is cast there), it is `guarded`: one pass reads and checks (`pg_guarded_numeric`), and a value it
    cannot land makes the export fall back to probing (`guarded=False`). Otherwise one probe query first (a
    NaN count for numeric(p,s)), then the scanner's parallel read.
    """
    if columns is None:  # a second plan reads the catalog again: the table may have changed in between
        columns = _pg_columns(con, info.schema, info.name)
    table_sql = f"{quote_ident(info.schema)}.{quote_ident(info.name)}"
    declared = {c.name: c.declared for c in columns}
    pg_filter = (
        # The base type: a domain over timestamptz compares as timestamptz.
        _pg_window_filter(
            incremental_column, next(c.base for c in columns if c.name == incremental_column), window
        )
        if incremental_column and window
        else None
    )
    numeric = [c for c in columns if pg_needs_probe(c)]
    guarded = (
        guarded
        and any(pg_numeric_typmod(c.base) is None for c in numeric)
        and all(pg_guardable(c) and c.name not in casts for c in numeric)
    )
    if guarded:
        reads = [
            pg_guarded_numeric(c)
            if pg_needs_probe(c)
            else pg_read(c, duck_types.get(c.name, ""), None, casts.get(c.name))
            for c in columns
        ]
    else:
        probes = _pg_probe(
            con, [(c, pg_probe_magnitude(c, casts.get(c.name))) for c in numeric], table_sql, pg_filter
        )
        reads = [
            pg_read(c, duck_types.get(c.name, ""), probes.get(c.name), casts.get(c.name)) for c in columns
        ]
    notes = [r.note for r in reads if r.note]
    if not any(r.source_expr for r in reads):
        # The scanner reads every column as it is: parallel binary COPY over ctid ranges. The window filter
        # goes on the source column (pushed down to PostgreSQL) unless the column is converted on the way
        # (a domain arrives as text): then it filters the converted value.
        raw = next(
            (r.select_expr == quote_ident(r.name) for r in reads if r.name == incremental_column), True
        )
        return Plan(_assemble(reads, _fqn(info), incremental_column, window, filter_inside=raw), notes)
    # Some column must be converted by PostgreSQL itself (numeric text, a wider DECIMAL): one query.
    inner = ", ".join(f"{r.source_expr or quote_ident(r.name)} AS {quote_ident(r.name)}" for r in reads)
    pg_sql = f"SELECT {inner} FROM {table_sql}" + (f" WHERE {pg_filter}" if pg_filter else "")
    source = f"postgres_query({quote_literal(SOURCE_ALIAS)}, {quote_literal(pg_sql)})"
    sql = _assemble(reads, source, None, None, filter_inside=True)
    # postgres_query maps a few types otherwise than the scanner's catalog (point and composites arrive as
    # text, not STRUCT): say so, so a schema that differs from an earlier run is explained.
    landed = {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()}
    for r in reads:
        if r.source_expr is None and r.select_expr == quote_ident(r.name) and r.note is None:
            scanned, now = duck_types.get(r.name, ""), landed.get(r.name, "")
            if scanned and now and scanned != now:
                notes.append(
                    f"{r.name}: {declared[r.name]} read as {now} (the table is read through postgres_query, "
                    f"the scanner alone would give {scanned})"
                )
    # A window reads the rows PostgreSQL's planner finds (an index on the column): one query. Otherwise the
    # whole table, which parts read faster.
    parts = [] if pg_filter else _pg_split(con, info, reads, inner, table_sql)
    return Plan(sql, notes, guarded, parts)


# A part reads at least this many pages (8 kB each), as the scanner's parallel tasks do (pg_pages_per_task),
# and a table is read in at most MAX_PARTS parts (as many PostgreSQL connections).
MIN_PART_PAGES = 1000
MAX_PARTS = 8


def _pg_split(
    con: duckdb.DuckDBPyConnection, info: TableInfo, reads: list[ColumnRead], inner: str, table_sql: str
) -> list[str]:
    """The read of a whole plain table as one query per ctid range (see `TableStream.read_parts`); [] when
    one query is as good: fewer than two DuckDB threads, a small table, a partitioned table, or PostgreSQL
    before 14, where a ctid range is no TID Range Scan and each part would read the whole table."""
    threads = con.execute("SELECT current_setting('threads')").fetchone()
    if not threads or int(threads[0]) < 2:
        return []
    try:
        row = _pg_query(
            con,
            "SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::bigint, "
            "current_setting('server_version_num')::int FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {quote_literal(info.schema)} AND c.relname = {quote_literal(info.name)}",
        )
    except Exception:  # sizes are an optimisation: without them the table is read in one query
        log.debug("no size for %s.%s: read in one query", info.schema, info.name, exc_info=True)
        return []
    if not row or row[0][0] != "r" or int(row[0][2]) < 140000:
        return []
    pages = int(row[0][1])
    n = min(int(threads[0]), MAX_PARTS, pages // MIN_PART_PAGES)
    if n < 2:
        return []
    step = -(-pages // n)
    parts = []
    for i in range(n):
        # The first part has no lower bound and the last no upper one: rows added past the size read above
        # (visible to the snapshot or not) still belong to exactly one part.
        bounds = ([f"ctid >= '({i * step},0)'::tid"] if i else []) + (
            [f"ctid < '({(i + 1) * step},0)'::tid"] if i < n - 1 else []
        )
        pg_sql = f"SELECT {inner} FROM {table_sql} WHERE {' AND '.join(bounds)}"
        source = f"postgres_query({quote_literal(SOURCE_ALIAS)}, {quote_literal(pg_sql)})"
        parts.append(_assemble(reads, source, None, None, filter_inside=True))
    return parts


def _pg_probe(
    con: duckdb.DuckDBPyConnection,
    columns: list[tuple[PgColumn, bool]],
    table_sql: str,
    pg_filter: str | None,
) -> dict[str, NumericProbe]:
    """One pass of PostgreSQL over the rows being exported: per numeric column, NaN/Infinity count and,
    where the read depends on them (`pg_probe_magnitude`), largest magnitude (exact, as text) and largest
    scale. `scale()` is NULL for NaN and +-Infinity."""
    if not columns:
        return {}
    parts: list[str] = []
    for c, magnitude in columns:
        q = quote_ident(c.name)
        i = len(parts)
        if magnitude:
            parts.append(f"count(*) FILTER (WHERE {q} IS NOT NULL AND scale({q}) IS NULL) AS p{i}")
            parts.append(f"(max(abs({q})) FILTER (WHERE scale({q}) IS NOT NULL))::text AS p{i + 1}")
            parts.append(f"max(scale({q})) AS p{i + 2}")
        else:  # NaN is the only special a constrained numeric holds, and 'NaN' = 'NaN' in PostgreSQL
            parts.append(f"count(*) FILTER (WHERE {q} = 'NaN'::numeric) AS p{i}")
            parts.append(f"NULL::text AS p{i + 1}")
            parts.append(f"NULL::integer AS p{i + 2}")
    sql = f"SELECT {', '.join(parts)} FROM {table_sql}" + (f" WHERE {pg_filter}" if pg_filter else "")
    row = _pg_query(con, sql)[0]
    return {
        c.name: NumericProbe(
            specials=int(row[3 * i] or 0),
            max_abs=row[3 * i + 1],
            max_scale=None if row[3 * i + 2] is None else int(row[3 * i + 2]),
        )
        for i, (c, _) in enumerate(columns)
    }


def _duckdb_select(
    con: duckdb.DuckDBPyConnection,
    info: TableInfo,
    duck_types: dict[str, str],
    casts: dict[str, str],
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
) -> tuple[str, list[str]]:
    huge = [n for n, t in duck_types.items() if t.upper() in ("HUGEINT", "UHUGEINT") and n not in casts]
    fits: dict[str, bool] = {}
    if huge:
        # One probe: do all values fit DECIMAL(38,0)? (a DuckDB file is read-only here, so the read agrees)
        limit = str(HUGEINT_LIMIT)
        parts = [f"coalesce(bool_and({quote_ident(n)} BETWEEN -{limit} AND {limit}), true)" for n in huge]
        row = con.execute(f"SELECT {', '.join(parts)} FROM {_fqn(info)}").fetchone()
        fits = {n: bool(row[i]) for i, n in enumerate(huge)} if row else {}
    reads = [duck_read(n, t, fits.get(n), casts.get(n)) for n, t in duck_types.items()]
    notes = [r.note for r in reads if r.note]
    return _assemble(reads, _fqn(info), incremental_column, window, filter_inside=False), notes


_SQLITE_OFFSET = "({q} GLOB '*[+-][0-9][0-9]:[0-9][0-9]' OR {q} GLOB '*[+-][0-9][0-9][0-9][0-9]')"


def _sqlite_query(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = con.execute(
        f"SELECT * FROM sqlite_query({quote_literal(SOURCE_ALIAS)}, {quote_literal(sql)})"
    ).fetchall()
    return rows


def _sqlite_select(
    con: duckdb.DuckDBPyConnection,
    info: TableInfo,
    duck_types: dict[str, str],
    casts: dict[str, str],
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
) -> tuple[str, list[str]]:
    declared: dict[str, str] = {
        str(n): str(t or "")
        for n, t in _sqlite_query(
            con, f"SELECT name, type FROM pragma_table_info({quote_literal(info.name)})"
        )
    }
    table_sql = quote_ident(info.name)
    probed = [
        n
        for n, t in duck_types.items()
        if n not in casts and (not declared.get(n, "").strip() or t.upper() in ("TIMESTAMP", "DOUBLE"))
    ]
    probes: dict[str, SqliteProbe] = {}
    if probed:
        parts: list[str] = []
        for n in probed:
            q = quote_ident(n)
            i = len(parts)
            parts.append(
                f"(SELECT group_concat(k) FROM (SELECT DISTINCT typeof({q}) AS k FROM {table_sql})) AS p{i}"
            )
            parts.append(
                f"(SELECT count(*) FROM {table_sql} WHERE typeof({q}) = 'text' "
                f"AND {_SQLITE_OFFSET.format(q=q)}) AS p{i + 1}"
            )
            # Integers a DOUBLE cannot hold exactly (SQLite keeps NUMERIC values as 64-bit integers).
            parts.append(
                f"(SELECT count(*) FROM {table_sql} WHERE typeof({q}) = 'integer' "
                f"AND ({q} > 9007199254740992 OR {q} < -9007199254740992)) AS p{i + 2}"
            )
        row = _sqlite_query(con, f"SELECT {', '.join(parts)}")[0]
        for i, n in enumerate(probed):
            kinds = frozenset(str(row[3 * i] or "").split(",")) - {""}
            probes[n] = SqliteProbe(
                kinds=kinds, offsets=int(row[3 * i + 1] or 0), wide_integers=int(row[3 * i + 2] or 0)
            )
    reads = [
        sqlite_read(n, declared.get(n, ""), t, probes.get(n), casts.get(n)) for n, t in duck_types.items()
    ]
    notes = [r.note for r in reads if r.note]
    if not any(r.source_expr for r in reads):
        return _assemble(reads, _fqn(info), incremental_column, window, filter_inside=False), notes
    # sqlite_query returns every column as text: plain columns are rendered so they cast back exactly.
    full = [
        r
        if r.source_expr
        else ColumnRead(
            r.name, sqlite_back(r.name, duck_types[r.name]), sqlite_source_expr(r.name, duck_types[r.name])
        )
        for r in reads
    ]
    inner = ", ".join(f"{r.source_expr} AS {quote_ident(r.name)}" for r in full)
    source = (
        f"sqlite_query({quote_literal(SOURCE_ALIAS)}, {quote_literal(f'SELECT {inner} FROM {table_sql}')})"
    )
    return _assemble(full, source, incremental_column, window, filter_inside=False), notes


def _vertica_stream(
    cfg: ConnectionConfig,
    schema: str,
    table_name: str,
    label: str,
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
    partition_keys: list[str],
    timezone: str,
    casts: dict[str, str],
) -> TableStream:
    from adu_assets.sources import vertica

    conn = vertica.connect_vertica(cfg)
    try:
        catalog = vertica.discover_tables(conn, schema, [table_name])
    finally:
        conn.close()
    # Vertica folds unquoted names, so YAML names match its catalog case-insensitively.
    table = find_table(catalog, schema, table_name, where=f"{label}.{table_name}", case_sensitive=False)
    if incremental_column:
        check_column(table, incremental_column, where=f"{label}.{table_name}", case_sensitive=False)
    where = f"{label}.{table_name}"
    names = {c.name.casefold() for c in table.columns}
    unknown = sorted(k for k in casts if k.casefold() not in names)
    if unknown:
        raise SourceError(
            f"{where}: cast: names {', '.join(unknown)}, not in {schema}.{table.name} "
            f"(columns: {', '.join(c.name for c in table.columns)})",
            retryable=False,
        )
    try:
        sql, params = vertica.build_select(
            table, incremental_column=incremental_column, window=window, casts=casts
        )
        schema, _ = vertica.arrow_schema_for(table, casts)
        notes = vertica.type_notes(table, casts)
    except ValueError as e:
        raise SourceError(f"{where}: {e}", retryable=False) from None
    reader = vertica.stream_query(lambda: vertica.connect_vertica(cfg), sql, params, schema)
    con = new_duckdb()
    # DuckDB scans the Arrow stream batch by batch: Vertica rows reach Parquet without a full copy in memory.
    con.register("vertica_stream", reader)
    return TableStream(
        con=con,
        sql="SELECT * FROM vertica_stream",
        table=table,
        source_label=cfg.describe(),
        partition_keys=partition_keys,
        partition_expr=partition_key_expr(incremental_column, timezone) if incremental_column else None,
        notes=notes,
    )
