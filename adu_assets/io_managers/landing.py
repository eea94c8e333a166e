"""Land a `TableStream` in Parquet and/or the DuckDB warehouse.

Layout under ADU_DATA_DIR:
    parquet/<name>/<schema>/<table>/adu_partition=<YYYY-MM-DD>/data.parquet   (hive style, one file a partition)
    warehouse.duckdb  ->  table "<name>_<schema>"."<table>" with an `adu_partition DATE` column

Parquet is written to a staging file and moved over the old one with os.replace, so a crash mid-write
leaves the previous version intact. The warehouse replaces a partition's rows (DELETE + INSERT) in one
transaction. When both destinations are asked for, the warehouse is loaded from the fresh Parquet files:
the source is read once, and both copies come from the same snapshot.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from adu_assets.sources.catalog import quote_ident, quote_literal
from adu_assets.sources.databases import TableStream

if TYPE_CHECKING:
    import duckdb

PARTITION_COLUMN = "adu_partition"
PARQUET_FILE = "data.parquet"
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd"
PREVIEW_ROWS = 5


def table_dir(root: Path, key: dg.AssetKey) -> Path:
    return root / "parquet" / Path(*key.path)


def partition_file(root: Path, key: dg.AssetKey, partition: str) -> Path:
    return table_dir(root, key) / f"{PARTITION_COLUMN}={partition}" / PARQUET_FILE


def warehouse_path(root: Path) -> Path:
    return root / "warehouse.duckdb"


def warehouse_table(key: dg.AssetKey) -> tuple[str, str]:
    """("<name>_<schema>", "<table>") for an export key; ("<name>", "<name>") for a one-part key."""
    if len(key.path) == 1:
        return key.path[0], key.path[0]
    return "_".join(key.path[:-1]), key.path[-1]


@dataclass
class LandingReport:
    rows: int = 0
    seconds: float = 0.0
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    parquet_files: list[Path] = field(default_factory=list)
    warehouse_table: str | None = None
    preview_md: str | None = None


# --- Parquet --------------------------------------------------------------------------------------


def write_parquet(stream: TableStream, root: Path, key: dg.AssetKey) -> LandingReport:
    con = stream.con
    keys = stream.partition_keys
    staging = table_dir(root, key) / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    report = LandingReport()
    try:
        if len(keys) == 1 or stream.partition_expr is None:
            staged = {keys[0]: staging / PARQUET_FILE}
            count = con.execute(
                f"COPY ({stream.sql}) TO {quote_literal(str(staged[keys[0]]))} ({PARQUET_OPTIONS})"
            ).fetchone()
            report.rows_by_partition[keys[0]] = int(count[0]) if count else 0
        else:
            staged = _write_partitioned(con, stream, staging, report)
        report.rows = sum(report.rows_by_partition.values())
        report.columns = _parquet_columns(con, next(iter(staged.values())))
        for partition, path in staged.items():
            final = partition_file(root, key, partition)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            report.parquet_files.append(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _write_partitioned(
    con: duckdb.DuckDBPyConnection, stream: TableStream, staging: Path, report: LandingReport
) -> dict[str, Path]:
    """A range of partitions in one pass over the source, split by the incremental column's day."""
    assert stream.partition_expr is not None
    con.execute(
        f"COPY (SELECT *, {stream.partition_expr} AS {PARTITION_COLUMN} FROM ({stream.sql})) "
        f"TO {quote_literal(str(staging / 'split'))} "
        f"({PARQUET_OPTIONS}, PARTITION_BY ({PARTITION_COLUMN}), FILENAME_PATTERN 'part_{{i}}')"
    )
    staged: dict[str, Path] = {}
    written = {p.name.split("=", 1)[1]: p for p in (staging / "split").glob(f"{PARTITION_COLUMN}=*")}
    template: Path | None = None
    for partition in stream.partition_keys:
        out = staging / f"{partition}.parquet"
        folder = written.get(partition)
        if folder is not None:
            files = sorted(folder.glob("*.parquet"))
            src = f"read_parquet({_sql_list(files)})"
            template = template or files[0]
        else:
            src = None
        staged[partition] = out
        if src is not None:
            count = con.execute(
                f"COPY (SELECT * FROM {src}) TO {quote_literal(str(out))} ({PARQUET_OPTIONS})"
            ).fetchone()
            report.rows_by_partition[partition] = int(count[0]) if count else 0
    # Days without rows still get a file, empty but with the schema, so every partition is readable.
    for partition, out in staged.items():
        if not out.exists():
            empty_src = f"read_parquet({quote_literal(str(template))})" if template else f"({stream.sql})"
            con.execute(
                f"COPY (SELECT * FROM {empty_src} LIMIT 0) TO {quote_literal(str(out))} ({PARQUET_OPTIONS})"
            )
            report.rows_by_partition[partition] = 0
    return staged


def _parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[str, str]]:
    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(str(path))})").fetchall()
    return [(r[0], r[1]) for r in rows if r[0] != PARTITION_COLUMN]


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(quote_literal(str(p)) for p in paths) + "]"


# --- DuckDB warehouse -----------------------------------------------------------------------------


@contextmanager
def warehouse_lock(path: Path) -> Iterator[None]:
    """DuckDB allows one writing process per file; steps of a multiprocess run take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_warehouse(
    stream: TableStream, root: Path, key: dg.AssetKey, parquet: LandingReport | None
) -> LandingReport:
    con = stream.con
    schema, table = warehouse_table(key)
    target = f"wh.{quote_ident(schema)}.{quote_ident(table)}"
    partitions = stream.partition_keys
    if parquet is not None:
        # Read back what was just landed: one read of the source serves both destinations.
        source = (
            f"SELECT * REPLACE (CAST({PARTITION_COLUMN} AS DATE) AS {PARTITION_COLUMN}) "
            f"FROM read_parquet({_sql_list(parquet.parquet_files)}, hive_partitioning = true)"
        )
    elif stream.partition_expr is not None and len(partitions) > 1:
        source = f"SELECT *, CAST({stream.partition_expr} AS DATE) AS {PARTITION_COLUMN} FROM ({stream.sql})"
    else:
        source = f"SELECT *, DATE {quote_literal(partitions[0])} AS {PARTITION_COLUMN} FROM ({stream.sql})"

    report = LandingReport(warehouse_table=f"{schema}.{table}")
    in_list = ", ".join(f"DATE {quote_literal(p)}" for p in partitions)
    count, incoming = replace_partition_rows(con, root, key, source, f"{PARTITION_COLUMN} IN ({in_list})")
    report.rows = count
    report.columns = incoming
    if parquet is None:
        with attached_warehouse(con, root):
            report.preview_md = _preview(
                con,
                f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM {target} WHERE {PARTITION_COLUMN} IN ({in_list})",
            )
    return report


@contextmanager
def attached_warehouse(con: duckdb.DuckDBPyConnection, root: Path) -> Iterator[None]:
    path = warehouse_path(root)
    with warehouse_lock(path):
        con.execute(f"ATTACH {quote_literal(str(path))} AS wh")
        try:
            yield
        finally:
            con.execute("DETACH wh")


def replace_partition_rows(
    con: duckdb.DuckDBPyConnection, root: Path, key: dg.AssetKey, source: str, partition_filter: str
) -> tuple[int, list[tuple[str, str]]]:
    """Replace the warehouse rows matching `partition_filter` with the rows of `source`, in one transaction.

    `source` must carry the `adu_partition` column. The table is created on first use, and a column that is
    new at the source is added rather than refused. Returns the rows inserted and the incoming columns.
    """
    schema, table = warehouse_table(key)
    target = f"wh.{quote_ident(schema)}.{quote_ident(table)}"
    with attached_warehouse(con, root):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS wh.{quote_ident(schema)}")
        incoming = con.execute(f"DESCRIBE {source}").fetchall()
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() "
                "WHERE database_name = 'wh' AND schema_name = ? AND table_name = ?",
                [schema, table],
            ).fetchall()
        }
        con.execute("BEGIN TRANSACTION")
        try:
            if not existing:
                con.execute(f"CREATE TABLE {target} AS {source} LIMIT 0")
            for name, dtype, *_ in incoming:
                if existing and name not in existing:
                    con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {dtype}")
            con.execute(f"DELETE FROM {target} WHERE {partition_filter}")
            count = con.execute(f"INSERT INTO {target} BY NAME {source}").fetchone()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return (int(count[0]) if count else 0), [(r[0], r[1]) for r in incoming if r[0] != PARTITION_COLUMN]


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


def land(stream: TableStream, destinations: Sequence[str], root: Path, key: dg.AssetKey) -> dict[str, Any]:
    """Land the stream in every destination and return the materialization metadata."""
    started = time.monotonic()
    parquet: LandingReport | None = None
    warehouse: LandingReport | None = None
    if "parquet" in destinations:
        parquet = write_parquet(stream, root, key)
    if "duckdb" in destinations:
        warehouse = load_warehouse(stream, root, key, parquet)
    seconds = time.monotonic() - started
    main = parquet or warehouse
    assert main is not None, "no destination"
    rows = main.rows
    meta: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=t) for n, t in main.columns]
        ),
        "duration_s": dg.MetadataValue.float(round(seconds, 3)),
        "rows_per_s": dg.MetadataValue.float(round(rows / seconds, 1) if seconds > 0 else 0.0),
        "source": stream.source_label,
        "partitions": ", ".join(stream.partition_keys),
    }
    if parquet is not None:
        files = parquet.parquet_files
        meta["path"] = dg.MetadataValue.path(str(files[0] if len(files) == 1 else table_dir(root, key)))
        if len(parquet.rows_by_partition) > 1:
            meta["rows_by_partition"] = dg.MetadataValue.json(parquet.rows_by_partition)
        meta["preview"] = dg.MetadataValue.md(
            _preview(stream.con, f"SELECT * FROM read_parquet({_sql_list(files)})")
        )
    if warehouse is not None:
        meta["dagster/table_name"] = f"{warehouse_path(root)}:{warehouse.warehouse_table}"
        meta["warehouse_rows"] = dg.MetadataValue.int(warehouse.rows)
        if warehouse.preview_md:
            meta["preview"] = dg.MetadataValue.md(warehouse.preview_md)
    if stream.notes:
        meta["type_notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in stream.notes))
    return meta
