"""The landing store: the one owner of the data folder and the warehouse catalog.

The warehouse is a DuckLake: the Parquet files under `<data folder>/parquet/` are its data, and a SQL
catalog (an embedded SQLite file by default, PostgreSQL for several hosts) records which files make up
each table at each snapshot. IO managers, checks, sensors, FileDrop and the CLI get paths and warehouse
connections from a `LandingStore` (Dagster resource key `adu_store`), never from the environment on their own.

Public read paths:
  `adu_assets.warehouse.connect()`    a DuckDB connection with the warehouse attached as `warehouse` and
                                       selected, tables `"<name>_<schema>"."<table>"` with an `adu_partition` column
  `adu sql "SELECT ..."`               the same from a shell
Both read a snapshot: readers never block writers, and writers never block readers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import dagster as dg
from pydantic import Field

from adu_assets.sources.catalog import quote_ident, quote_literal

if TYPE_CHECKING:
    import duckdb
    import polars as pl

T = TypeVar("T")
_log = logging.getLogger(__name__)

STORE_RESOURCE_KEY = "adu_store"
DATA_DIR_ENV = "ADU_DATA_DIR"
CATALOG_ENV = "ADU_WAREHOUSE_CATALOG"
# The name the warehouse is attached under in connections handed to users (`warehouse.connect()`, `adu sql`).
READ_ALIAS = "warehouse"
SQLITE_CATALOG_FILE = "warehouse.sqlite"


class WarehouseConfigError(ValueError):
    """The warehouse catalog setting is wrong; the message names the setting and the fix."""


def default_data_dir() -> Path:
    """ADU_DATA_DIR, else a folder under DAGSTER_HOME, else ./.adu_data."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]) / "adu_data"
    return Path.cwd() / ".adu_data"


def postgres_catalog_dsn(url: str) -> str:
    """libpq keywords for `postgresql://user@host:port/database`; a password in the URL is refused.

    The password comes from the environment only (PGPASSWORD, or a ~/.pgpass file), which libpq reads
    itself: it never appears in the ATTACH string, in metadata or in logs.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        raise WarehouseConfigError(
            f"{CATALOG_ENV} must not contain a password; remove it from the URL and set PGPASSWORD "
            "(or a ~/.pgpass entry) in the environment of every Dagster process instead"
        )
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database:
        raise WarehouseConfigError(
            f"{CATALOG_ENV} must look like postgresql://user@host:port/database (host and database are required)"
        )
    words = {"host": parts.hostname, "port": str(parts.port or 5432), "dbname": database}
    if parts.username:
        words["user"] = unquote(parts.username)
    return " ".join(f"{k}={_libpq_value(v)}" for k, v in words.items())


def _libpq_value(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.\-/]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class LandingStore(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Owns ADU_DATA_DIR (Parquet tree, check baselines, reports) and the warehouse catalog."""

    data_dir: str | None = Field(
        default=None, description="Root of landed data; default ADU_DATA_DIR, else $DAGSTER_HOME/adu_data"
    )
    catalog: str | None = Field(
        default=None,
        description="Warehouse catalog: default ADU_WAREHOUSE_CATALOG, else an embedded SQLite catalog "
        "(<data folder>/warehouse.sqlite); postgresql://user@host:port/database for several hosts "
        "(password from PGPASSWORD, never in the URL)",
    )
    retention_days: float = Field(
        default=0,
        description="Keep superseded Parquet files (and snapshots for time travel) this many days; 0 removes "
        "them right after each commit, so the Parquet tree holds exactly the warehouse's rows",
    )

    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    def parquet_root(self) -> Path:
        """The warehouse's data path: `<root>/parquet/<key parts>/adu_partition=<day>/<unique>.parquet`."""
        return self.root() / "parquet"

    def checks_dir(self) -> Path:
        """Where schema baselines of the inferred schema check live."""
        return self.root() / "checks" / "schemas"

    def reports_dir(self) -> Path:
        """Where drift and profile HTML reports are written."""
        return self.root() / "reports"

    def writers_dir(self) -> Path:
        """Lock files of running writers; the orphan sweep keeps the files of a writer that still holds one."""
        return self.root() / ".adu" / "writers"

    @contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Held around each commit to an SQLite catalog: local writers take turns for the few milliseconds a
        commit lasts, instead of failing with "database is locked" and retrying (measured: 4 writers reached
        10 retries without it). Readers never take it. A PostgreSQL catalog orders commits itself."""
        if self.is_postgres_catalog():
            yield
            return
        path = self.root() / ".adu" / "commit.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- catalog ----------------------------------------------------------------------------------

    def catalog_setting(self) -> str:
        return self.catalog or os.environ.get(CATALOG_ENV) or ""

    def is_postgres_catalog(self) -> bool:
        return self.catalog_setting().startswith(("postgresql://", "postgres://"))

    def catalog_label(self) -> str:
        """Where the catalog lives, for messages and metadata (never a password)."""
        setting = self.catalog_setting()
        if self.is_postgres_catalog():
            parts = urlsplit(setting)
            return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"
        return str(self._sqlite_path())

    def _sqlite_path(self) -> Path:
        setting = self.catalog_setting()
        if setting.startswith("sqlite:"):
            setting = setting[len("sqlite:") :]
        return Path(setting) if setting else self.root() / SQLITE_CATALOG_FILE

    def attach(self, con: duckdb.DuckDBPyConnection, alias: str, *, read_only: bool = False) -> None:
        """Attach the warehouse to `con` as `alias`; the catalog is created on first use."""
        from adu_assets.sources.databases import load_extension

        load_extension(con, "ducklake")
        if self.is_postgres_catalog():
            load_extension(con, "postgres")
            target = "ducklake:postgres:" + postgres_catalog_dsn(self.catalog_setting())
        else:
            load_extension(con, "sqlite")
            path = self._sqlite_path()
            target = f"ducklake:sqlite:{path}"
        data_path = str(self.parquet_root()) + "/"
        self.parquet_root().mkdir(parents=True, exist_ok=True)
        options = [f"DATA_PATH {quote_literal(data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        sql = f"ATTACH {quote_literal(target)} AS {quote_ident(alias)} ({', '.join(options)})"
        if not self.is_postgres_catalog() and not read_only and not self._sqlite_path().exists():
            # The first writers would race to create DuckLake's tables; one creates them, the others wait.
            with self.commit_lock():
                if not self._sqlite_path().exists():
                    _create_sqlite_catalog(self._sqlite_path())
                self._attach_sql(con, sql, alias, read_only)
            return
        self._attach_sql(con, sql, alias, read_only)

    def _attach_sql(self, con: duckdb.DuckDBPyConnection, sql: str, alias: str, read_only: bool) -> None:
        for attempt in range(1, 6):
            try:
                con.execute(sql)
                break
            except Exception as e:
                from adu_assets.secrets import redact

                message = redact(str(e))
                # Two hosts creating a new PostgreSQL catalog at once: the loser sees the winner's tables.
                if attempt < 5 and (is_commit_conflict(e) or "already exists" in message):
                    time.sleep(0.2 * attempt * random.uniform(0.5, 1.5))
                    continue
                if "does not match existing data path" in message:
                    raise WarehouseConfigError(
                        f"the warehouse catalog {self.catalog_label()} belongs to another data folder: "
                        f"{message.splitlines()[0]} Point {DATA_DIR_ENV} at that folder (mounted at the same path "
                        "on every host)"
                    ) from None
                raise WarehouseConfigError(
                    f"cannot open the warehouse catalog {self.catalog_label()}: {message}"
                ) from None
        if not read_only:
            _ensure_catalog_options(con, alias)

    # --- reading ----------------------------------------------------------------------------------

    def connect(self, *, read_only: bool = True, for_user: bool = False) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the warehouse attached as `warehouse` and selected.

        `for_user=True` for a connection that runs SQL a user types (see `new_duckdb`)."""
        from adu_assets.sources.databases import new_duckdb

        con = new_duckdb(for_user=for_user)
        try:
            if read_only and not self.is_postgres_catalog() and not self._sqlite_path().exists():
                # A read-only attach cannot create the catalog; an empty warehouse is a valid one to read.
                self.attach(con, READ_ALIAS)
                con.execute(f"DETACH {quote_ident(READ_ALIAS)}")
            self.attach(con, READ_ALIAS, read_only=read_only)
            con.execute(f"USE {quote_ident(READ_ALIAS)}")
        except BaseException:
            con.close()
            raise
        return con

    def landed_frame(
        self,
        key: dg.AssetKey,
        destinations: Sequence[str] = (),
        partitions: list[str] | None = None,
        *,
        run_id: str | None = None,
    ) -> pl.LazyFrame:
        """The landed rows of `partitions` (all when empty), from one warehouse snapshot, as a polars LazyFrame.

        Every destination list lands in the warehouse, so `destinations` does not change where rows are read.
        `run_id`: a check of that run reads the files the run itself just landed, when that is the same.
        """
        from adu_assets.io_managers.tables import read_landed

        frame: pl.LazyFrame = read_landed(self, key, partitions or [], run_id=run_id)
        return frame

    def previous_landed_frame(
        self,
        key: dg.AssetKey,
        destinations: Sequence[str],
        partitions_def: dg.PartitionsDefinition,
        partition: str,
    ) -> Any:
        """The latest landed partition before `partition` (drift's reference), or None."""
        from adu_assets.io_managers.tables import read_previous_landed

        return read_previous_landed(self, key, partitions_def, partition)

    def sweep_orphans(self) -> int:
        """Delete Parquet files left by crashed writers (never registered, writer gone); returns how many.

        Each write sweeps its own table first, so this is only needed to reclaim space of tables no longer
        written. Files of writers still running are kept.
        """
        from adu_assets.io_managers.landing import sweep_all_orphans

        return sweep_all_orphans(self)


# Messages of a commit that lost a race with another writer. Only these are retried: any other error
# (a type clash, a full disk, a refused password) would fail the same way again.
_CONFLICT_MARKERS = (
    "database is locked",
    "database table is locked",
    "conflict",
    "failed to query most recent snapshot",
    "could not serialize access",
    "deadlock detected",
    "duplicate key value violates unique constraint",
)
COMMIT_ATTEMPTS = 12


def is_commit_conflict(error: BaseException) -> bool:
    text = str(error).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def retry_commit(
    con: duckdb.DuckDBPyConnection, work: Callable[[], T], *, attempts: int = COMMIT_ATTEMPTS
) -> T:
    """Run `work` (a whole BEGIN ... COMMIT) and redo all of it when the commit loses a race.

    After a failed COMMIT DuckDB has no transaction left, so the retry starts from BEGIN again; the
    wait grows with each attempt and is jittered so that racing writers spread out. Bounded: the last
    conflict is raised as it is.
    """
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as e:
            _rollback_quietly(con)
            if attempt == attempts or not is_commit_conflict(e):
                raise
            _log.info(
                "warehouse commit lost a race (attempt %d of %d), retrying: %s",
                attempt,
                attempts,
                str(e).splitlines()[-1][:200],
            )
            time.sleep(min(2.0, 0.02 * 1.6**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:  # no transaction left (a failed COMMIT ends it): nothing to undo
        pass


def _create_sqlite_catalog(path: Path) -> None:
    """An empty SQLite file in WAL mode, which DuckLake then fills with its tables.

    In WAL mode readers never wait for a committing writer, nor writers for readers (the default rollback
    journal locks the whole file during each commit). WAL needs a local disk: for several hosts use the
    PostgreSQL catalog.
    """
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _ensure_catalog_options(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    # DuckLake keeps deletes of small files inside the catalog ("inlined") instead of retiring the file,
    # and then never deletes that file: the Parquet tree would keep rows the warehouse no longer has.
    # With inlining off, replacing a partition always retires its files whole.
    # Quoted, not bound (see `describe_columns`).
    row = con.execute(
        f"SELECT value FROM ducklake_options({quote_literal(alias)}) "
        "WHERE option_name = 'data_inlining_row_limit'"
    ).fetchone()
    if row is None or str(row[0]) != "0":
        retry_commit(
            con,
            lambda: con.execute(f"CALL ducklake_set_option({quote_literal(alias)}, 'data_inlining_row_limit', 0)"),
        )


def connect(store: LandingStore | None = None, *, read_only: bool = True) -> Any:
    """A DuckDB connection with the warehouse attached and selected (tables `"<name>_<schema>"."<table>"`)."""
    return (store or LandingStore()).connect(read_only=read_only, for_user=True)


def import_0_1_data(
    store: LandingStore | None = None, *, warehouse_file: Path | None = None
) -> dict[str, int]:
    """One-off move of a 0.1 data folder into the warehouse; returns rows landed per warehouse table.

    0.1 kept `parquet/<key parts>/adu_partition=<day>/data.parquet` files and a separate `warehouse.duckdb`.
    Each table of the Parquet tree is landed from its files (what glob readers saw), and each table found
    only in `warehouse.duckdb` from there; every table is one commit. The 0.1 files are then moved to
    `<data folder>/0.1-backup/`, so they no longer double the rows of the tree. Safe to run again.
    """
    import shutil

    import dagster as dg

    from adu_assets.io_managers.landing import PARTITION_COLUMN, land, warehouse_table
    from adu_assets.sources.catalog import TableInfo
    from adu_assets.sources.databases import TableStream, new_duckdb

    store = store or LandingStore()
    root = store.root()
    backup = root / "0.1-backup"
    landed: dict[str, int] = {}

    def land_sql(key: dg.AssetKey, con: duckdb.DuckDBPyConnection, sql: str, text: bool) -> None:
        parts = [
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT CAST({PARTITION_COLUMN} AS VARCHAR) FROM ({sql}) ORDER BY 1"
            ).fetchall()
        ]
        schema, table = warehouse_table(key)
        for group in [[p] for p in parts] if text else [parts] if parts else []:
            stream = TableStream(
                con=con,
                sql=sql
                if not text
                else f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM ({sql}) WHERE "
                f"{PARTITION_COLUMN} = {quote_literal(group[0])}",
                table=TableInfo(schema, table),
                source_label="0.1 import",
                partition_keys=[p.replace("/", "__") for p in group],
                partition_expr=None if text else PARTITION_COLUMN,
            )
            meta = land(stream, ["warehouse"], store, key, partition_value=group[0] if text else None)
            landed[f"{schema}.{table}"] = landed.get(f"{schema}.{table}", 0) + int(
                meta["dagster/row_count"].value
            )

    tree_tables: set[tuple[str, str]] = set()
    old_files = sorted(store.parquet_root().glob(f"**/{PARTITION_COLUMN}=*/data.parquet"))
    by_table: dict[Path, list[Path]] = {}
    for f in old_files:
        by_table.setdefault(f.parent.parent, []).append(f)
    for folder, files in by_table.items():
        key = dg.AssetKey(list(folder.relative_to(store.parquet_root()).parts))
        tree_tables.add(warehouse_table(key))
        con = new_duckdb()
        try:
            listing = "[" + ", ".join(quote_literal(str(f)) for f in files) + "]"
            probe = con.execute(
                f"DESCRIBE SELECT * FROM read_parquet({listing}, hive_partitioning = true)"
            ).fetchall()
            text = dict((str(r[0]), str(r[1])) for r in probe).get(PARTITION_COLUMN) != "DATE"
            land_sql(
                key,
                con,
                f"SELECT * FROM read_parquet({listing}, hive_partitioning = true, union_by_name = true)",
                text,
            )
        finally:
            con.close()
        for f in files:
            target = backup / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), str(target))
    old = warehouse_file or root / "warehouse.duckdb"
    if old.exists():
        con = new_duckdb()
        try:
            con.execute(f"ATTACH {quote_literal(str(old))} AS old (READ_ONLY)")
            tables = con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'old'"
            ).fetchall()
            for schema, table in tables:
                if (schema, table) in tree_tables:
                    continue
                cols = dict(
                    con.execute(
                        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'old' "
                        "AND schema_name = ? AND table_name = ?",
                        [schema, table],
                    ).fetchall()
                )
                if PARTITION_COLUMN not in cols:
                    continue
                sql = f"SELECT * FROM old.{quote_ident(schema)}.{quote_ident(table)}"
                land_sql(dg.AssetKey([schema, table]), con, sql, cols[PARTITION_COLUMN] != "DATE")
        finally:
            con.close()
        backup.mkdir(parents=True, exist_ok=True)
        shutil.move(str(old), str(backup / old.name))
    return landed
