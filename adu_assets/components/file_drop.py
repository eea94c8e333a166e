"""`type: adu_assets.FileDrop`: files dropped into a folder, landed in Parquet and the DuckDB warehouse.

One asset keyed `[name]` with one dynamic partition per file (its path relative to `folder`), and a sensor
`<name>_file_sensor` that adds a partition and requests one run for every new file. The sensor's cursor
holds the files it has handed out as `{path: [size, mtime_ns]}`, so each version of a file runs exactly
once: a file dropped again with new content (another size or mtime) is a new version and replaces its
partition; a file that was deleted leaves the cursor, so the cursor only grows with the folder.

A file is read by DuckDB (`read_csv` / `read_json` / `read_parquet`), streaming from disk into Parquet
without rows passing through Python, and landed with the same code as the database exports:
  parquet/<name>/adu_partition=<file>/<unique>.parquet, registered in warehouse table "<name>"."<name>"
in one commit, where `adu_partition` holds the file's path (text, not a date as for exports).

A file DuckDB cannot read (bad syntax, wrong extension, a column whose type clashes with the warehouse
table) is moved to `quarantine_folder` beside a `<file>.reason.txt`, and that file's run fails with the
reason. Other files are separate runs and go on. To retry a quarantined file, fix it and drop it again.
"""

import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field, field_validator, model_validator

from adu_assets.model_bounds import asset_key_name, iso_date
from adu_assets.settings import OutsideFolderError, data_root, expand_path, inside_folder

if TYPE_CHECKING:
    import duckdb

FileFormat = Literal["auto", "csv", "json", "ndjson", "parquet"]
Destination = Literal["parquet", "warehouse", "duckdb"]

EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Files still being written by common tools, and our own reason notes.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".reason.txt", "~")
REASON_SUFFIX = ".reason.txt"
ALL_DESTINATIONS: tuple[Destination, ...] = ("parquet", "duckdb")


class CsvDialect(dg.Model):
    """How CSV files are split. Each field left out is detected per file; a file that does not parse
    cleanly under the resulting dialect (an unterminated quote, a row with too many or too few fields)
    is quarantined whole, never landed in part."""

    delimiter: str | None = Field(default=None, description='Field separator, e.g. "," ";" "\\t" "|"')
    quote: str | None = Field(default=None, description='Quote character (default: ")')
    escape: str | None = Field(default=None, description="Escape character inside quotes (default: the quote)")
    header: bool | None = Field(
        default=None,
        description="Whether the first line names the columns. Default: detected, and a file without a "
        "detectable header is quarantined (set false to accept such files as column0, column1, ...)",
    )


class FileDrop(dg.Component, dg.Resolvable, dg.Model):
    """Ingest CSV, JSON, NDJSON and Parquet files that appear in a folder, each exactly once."""

    name: str = Field(description="Asset key and group name")
    folder: str = Field(description="Folder to watch; ~ and ${ENV} are expanded")
    glob: str = Field(
        default="*", description='Files to pick up, relative to folder (e.g. "*.csv", "**/*.json")'
    )
    format: FileFormat = Field(
        default="auto", description="auto (by extension) | csv | json | ndjson | parquet"
    )
    csv: CsvDialect | None = Field(
        default=None, description="CSV dialect: delimiter, quote, escape, header (each detected if left out)"
    )
    destinations: list[Destination] = Field(default_factory=lambda: list(ALL_DESTINATIONS))
    quarantine_folder: str | None = Field(
        default=None,
        description="Where unreadable files go, with a .reason.txt (default: <folder>/quarantine)",
    )
    start_date: str | None = Field(
        default=None, description="Ignore files last modified before this date (YYYY-MM-DD)"
    )
    min_age_seconds: int = Field(
        default=10,
        description="A file modified more recently is left for a later tick (it may still be written)",
    )
    max_files_per_tick: int = Field(
        default=50, description="At most this many runs requested per sensor tick"
    )
    minimum_interval_seconds: int = Field(default=30, description="Seconds between two looks at the folder")
    owners: list[str] = Field(default_factory=list)
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    _name_is_key = field_validator("name")(lambda v: asset_key_name(v))

    _iso_date = field_validator("start_date")(lambda v: iso_date(v))

    # Bounds are checked here rather than with Field(ge=...): Dagster's resolver rejects Annotated types.
    @model_validator(mode="after")
    def _check_numbers(self) -> "FileDrop":
        if not self.destinations:
            raise ValueError("destinations must name at least one of: parquet, duckdb")
        if self.min_age_seconds < 0:
            raise ValueError("min_age_seconds must be 0 or more")
        if self.max_files_per_tick < 1:
            raise ValueError("max_files_per_tick must be 1 or more")
        if self.minimum_interval_seconds < 1:
            raise ValueError("minimum_interval_seconds must be 1 or more")
        return self

    # --- paths ---------------------------------------------------------------------------------------

    def folder_path(self) -> Path:
        return expand_path(self.folder)

    def quarantine_path(self) -> Path:
        return (
            expand_path(self.quarantine_folder)
            if self.quarantine_folder
            else self.folder_path() / "quarantine"
        )

    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.name])

    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=f"{self.name}_files")

    def job_name(self) -> str:
        return f"{self.name}_job"

    def sensor_name(self) -> str:
        return f"{self.name}_file_sensor"

    # --- definitions ---------------------------------------------------------------------------------

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        asset = self.build_asset()
        job = dg.define_asset_job(
            self.job_name(),
            selection=[self.asset_key()],
            partitions_def=self.partitions_def(),
            description=f"Land one file of {self.folder}",
            tags={"adu/component": self.name},
        )
        return dg.Definitions(assets=[asset], jobs=[job], sensors=[self.build_sensor(job)])

    def build_asset(self) -> dg.AssetsDefinition:
        component = self

        @dg.asset(
            key=self.asset_key(),
            group_name=self.name,
            kinds={"file", *self.destinations},
            owners=self.owners or None,
            description=self.description
            or f"Files matching {self.glob} in {self.folder}, one partition per file",
            partitions_def=self.partitions_def(),
            metadata={"adu/destinations": list(self.destinations), "adu/folder": self.folder},
            tags={**self.tags, "adu/kind": "file_drop"},
        )
        def ingest_file(context: dg.AssetExecutionContext) -> dg.MaterializeResult[Any]:
            return component.ingest(context.partition_key, context.log, context.run_id)

        return ingest_file

    def build_sensor(self, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
        component = self

        @dg.sensor(
            name=self.sensor_name(),
            job=job,
            minimum_interval_seconds=self.minimum_interval_seconds,
            # The folder is the whole point of the component: watching it should not need a click.
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Requests one run per new file matching {self.glob} in {self.folder}",
            tags={"adu/component": self.name},
        )
        def file_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            return component.evaluate_sensor(context.cursor, now=time.time())

        return file_sensor

    # --- the sensor ----------------------------------------------------------------------------------

    def list_files(self, now: float) -> dict[str, tuple[int, int]]:
        """Files ready to ingest: {path relative to folder: (size, mtime_ns)}."""
        folder = self.folder_path()
        if not folder.is_dir():
            return {}
        quarantine = self.quarantine_path().resolve()
        not_before = (
            datetime.strptime(self.start_date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            if self.start_date
            else None
        )
        found: dict[str, tuple[int, int]] = {}
        for path in folder.glob(self.glob):
            if path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # moved away between listing and stat
                continue
            if not path.is_file() or path.resolve().is_relative_to(quarantine):
                continue
            if now - stat.st_mtime < self.min_age_seconds:
                continue
            if not_before is not None and stat.st_mtime < not_before:
                continue
            found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        return found

    def evaluate_sensor(self, raw_cursor: str | None, *, now: float) -> dg.SensorResult:
        seen = load_file_cursor(raw_cursor)
        files = self.list_files(now)
        # Oldest first, so a backlog is worked through in the order it arrived.
        new = sorted(
            (rel for rel, sig in files.items() if seen.get(rel) != sig), key=lambda r: (files[r][1], r)
        )
        taken = new[: self.max_files_per_tick]
        cursor = {rel: sig for rel, sig in seen.items() if rel in files}
        cursor.update({rel: files[rel] for rel in taken})
        encoded = dump_file_cursor(cursor)
        if not taken:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no new files in {self.folder} ({len(files)} already processed)"),
                cursor=encoded,
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=rel,
                    # The run key names the file version: even a lost cursor cannot run it twice.
                    run_key=f"{rel}:{files[rel][0]}:{files[rel][1]}",
                    tags={"adu/file": rel[-200:], "adu/trigger": "file_drop"},
                )
                for rel in taken
            ],
            dynamic_partitions_requests=[self.partitions_def().build_add_request(taken)],
            cursor=encoded,
        )

    # --- the asset -----------------------------------------------------------------------------------

    def file_format(self, path: Path) -> str | None:
        if self.format != "auto":
            return self.format
        return EXTENSIONS.get(path.suffix.lower())

    def ingest(self, rel: str, logger: Any, run_id: str) -> dg.MaterializeResult[Any]:
        from adu_assets.sources.databases import new_duckdb

        # `rel` is a partition key, which anyone allowed to launch runs can choose: "../x" or "/etc/x" must
        # neither be read nor be moved to quarantine.
        try:
            path = inside_folder(
                self.folder_path(), self.folder_path() / rel, what=f"{self.name}: file {rel!r}"
            )
        except OutsideFolderError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from None
        if not path.is_file():
            raise dg.Failure(
                f"{self.name}: {path} is gone (moved or deleted after the sensor saw it); drop it again to retry",
                allow_retries=False,
            )
        fmt = self.file_format(path)
        if fmt is None:
            reason = (
                f"cannot tell the format of {path.name} from its extension; name it .csv, .json, .ndjson or "
                f".parquet, or set format: in {self.name}'s YAML"
            )
            self._reject(path, rel, reason, run_id)
        if path.stat().st_size == 0:
            self._reject(path, rel, "the file is empty", run_id)
        import duckdb

        from adu_assets.io_managers.landing import WarehouseSchemaError

        error: str | None = None
        con = new_duckdb()
        csv_options: dict[str, Any] | None = None
        # DuckDB reads a path holding * ? [ as a pattern: `x[1].csv` would read x1.csv instead.
        read_path = readable_alias(path)
        try:
            if fmt == "csv":
                csv_options, error = csv_dialect(con, read_path, self.csv or CsvDialect(), self.name)
            if error is None:
                metadata = self._land(con, read_path, rel, fmt, csv_options)
        # What the file itself can cause: bad syntax or encoding, or values that do not fit the column
        # types (of the file, or of the warehouse table earlier files made). Other errors (disk, lock, our
        # own SQL) fail the run but leave the file where it is, to be retried. Landing is all or nothing
        # (staged Parquet, one warehouse transaction), so nothing of a file that fails here has landed.
        except (duckdb.InvalidInputException, duckdb.ConversionException) as e:
            error = f"DuckDB could not read it as {fmt}: {e}"
        except WarehouseSchemaError as e:
            error = str(e)
        except BaseException:
            con.close()
            raise
        try:
            if error is not None and csv_options:
                # Only now pay for a second pass over the file: which lines do not fit, and why.
                error = csv_bad_lines(con, read_path, csv_options, self.name) or error
        finally:
            con.close()
            if read_path != path:
                shutil.rmtree(read_path.parent, ignore_errors=True)
        if error is not None:
            # Outside the except block, so the DuckDB traceback is not chained into the event log as well.
            self._reject(path, rel, error, run_id)
        logger.info(
            f"landed {metadata['dagster/row_count'].value} rows of {rel} in {', '.join(self.destinations)}"
        )
        return dg.MaterializeResult(metadata={**metadata, "file": rel, "format": fmt})

    def _land(
        self,
        con: "duckdb.DuckDBPyConnection",
        path: Path,
        rel: str,
        fmt: str,
        csv_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from adu_assets.io_managers.landing import land
        from adu_assets.sources.catalog import TableInfo
        from adu_assets.sources.databases import TableStream

        root = data_root()
        key = self.asset_key()
        stream = TableStream(
            con=con,
            sql=f"SELECT * FROM {reader_sql(path, fmt, csv_options)}",
            table=TableInfo(schema=self.name, name=rel),
            source_label=f"file:{path}",
            # The Parquet folder is named after the partition; a "/" from a sub-folder would nest it.
            partition_keys=[landing_key(rel)],
        )
        # One warehouse commit: the file's Parquet in the tree and its rows in the warehouse, or neither.
        return land(stream, list(self.destinations), root, key, partition_value=rel)

    def _reject(self, path: Path, rel: str, reason: str, run_id: str) -> NoReturn:
        target = inside_folder(
            self.quarantine_path(), self.quarantine_path() / rel, what=f"{self.name}: quarantine of {rel!r}"
        )
        target = quarantine_file(path, target, reason, run_id)
        raise dg.Failure(
            description=f"{self.name}: {rel} was quarantined to {target}: {reason}",
            metadata={"quarantined_to": dg.MetadataValue.path(str(target)), "reason": reason[:2000]},
            # Reading the same bytes again cannot succeed; a fixed file dropped again gets its own run.
            allow_retries=False,
        )


# --- helpers beside the code that needs them -----------------------------------------------------------


def load_file_cursor(raw: str | None) -> dict[str, tuple[int, int]]:
    import json

    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): (int(v[0]), int(v[1])) for k, v in data.items() if isinstance(v, list) and len(v) == 2}


def dump_file_cursor(cursor: dict[str, tuple[int, int]]) -> str:
    import json

    return json.dumps({k: list(v) for k, v in sorted(cursor.items())}, separators=(",", ":"))


def landing_key(rel: str) -> str:
    return rel.replace("/", "__")


def sql_literal(value: str) -> str:
    from adu_assets.sources.catalog import quote_literal

    return quote_literal(value)


_GLOB_CHARS = ("*", "?", "[", "{")


def readable_alias(path: Path) -> Path:
    """`path`, or a hard link to it (a copy across file systems) under a name DuckDB cannot take for a
    glob pattern; the caller removes the alias's folder."""
    if not any(c in str(path) for c in _GLOB_CHARS):
        return path
    folder = Path(tempfile.mkdtemp(prefix="adu-drop-"))
    alias = folder / ("file" + "".join(x for x in path.suffixes[-2:] if not any(c in x for c in _GLOB_CHARS)))
    try:
        os.link(path, alias)
    except OSError:
        shutil.copyfile(path, alias)
    return alias


def reader_sql(path: Path, fmt: str, csv_options: dict[str, Any] | None = None) -> str:
    p = sql_literal(str(path))
    if fmt == "csv":
        # Types are sniffed; the dialect comes from csv_dialect(), which checked that the whole file parses
        # under it. A ragged row is an error, not a guess.
        options = "".join(
            f", {k} = {sql_literal(v) if isinstance(v, str) else str(v).lower()}"
            for k, v in (csv_options or {}).items()
        )
        return f"read_csv({p}, auto_detect = true, strict_mode = true{options})"
    if fmt == "json":
        return f"read_json({p}, format = 'auto')"
    if fmt == "ndjson":
        return f"read_json({p}, format = 'newline_delimited')"
    if fmt == "parquet":
        return f"read_parquet({p})"
    raise ValueError(f"unknown file format {fmt!r}")


# Separators tried when the sniffer settles on one that the header line does not even contain (it does
# that for ragged files, which then land as one column holding whole lines).
_COMMON_DELIMITERS = (",", ";", "\t", "|")
_REJECTS_SHOWN = 5


def csv_dialect(
    con: "duckdb.DuckDBPyConnection", path: Path, declared: CsvDialect, component: str
) -> tuple[dict[str, Any], str | None]:
    """The dialect to read `path` with ({read_csv option: value}), or why the file must be quarantined
    before it is read.

    DuckDB's sniffer would rather guess than fail: a stray quote makes it read with no quoting at all
    (the quote lands inside the value), ragged rows make it pick a separator that splits nothing, and a
    header it cannot tell from data becomes column0, column1, ... in the shared warehouse table. So the
    quote is '"' unless declared, the separator must occur in the header line, and a missing header is not
    guessed. The file is then read strictly under the result, so a line that does not fit fails the read
    (and `csv_bad_lines` says which).
    """
    import duckdb

    p = sql_literal(str(path))
    sniffed_delim, sniffed_quote, sniffed_escape, sniffed_header = ",", "", "", True
    if declared.delimiter is None or declared.header is None:
        try:
            row = con.execute(f"SELECT Delimiter, Quote, Escape, HasHeader FROM sniff_csv({p})").fetchone()
        except (duckdb.InvalidInputException, duckdb.ConversionException) as e:
            return {}, f"DuckDB could not detect a CSV dialect: {str(e).splitlines()[0]}"
        if row is not None:
            sniffed_delim, sniffed_quote, sniffed_escape, sniffed_header = row
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    try:
        head = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        return {}, "the first line is not UTF-8 text"
    delim = declared.delimiter
    if delim is None:
        delim = sniffed_delim
        if delim not in head:
            counts = {d: head.count(d) for d in _COMMON_DELIMITERS}
            best = max(counts, key=lambda d: counts[d])
            delim = best if counts[best] else delim
    quote = declared.quote or (sniffed_quote if sniffed_quote not in ("", "(empty)") else '"')
    escape = declared.escape or (sniffed_escape if sniffed_escape not in ("", "(empty)") else quote)
    header = declared.header
    if header is None:
        if not sniffed_header:
            return {}, (
                "no header line was detected (the first line looks like data); add a header line, or set "
                f"csv.header: false in {component}'s YAML to accept such files with columns column0, column1, ..."
            )
        header = True
    return {"delim": delim, "quote": quote, "escape": escape, "header": header}, None


def csv_bad_lines(
    con: "duckdb.DuckDBPyConnection", path: Path, options: dict[str, Any], component: str
) -> str | None:
    """Why `path` does not parse under `options`, line by line, or None when every line does.

    One pass over the whole file with every column as text and the column count taken from the first
    line, so each line that does not fit is named: an unterminated quote, too many or too few fields.
    """
    import csv as pycsv

    import duckdb

    delim, quote, escape, header = options["delim"], options["quote"], options["escape"], options["header"]
    with open(path, "rb") as f:
        head = f.readline(1 << 20).decode("utf-8-sig", errors="replace").rstrip("\r\n")
    width = max(1, len(next(pycsv.reader([head], delimiter=delim[0], quotechar=quote[0]), [])))
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
    check = (
        f"read_csv({sql_literal(str(path))}, auto_detect = false, columns = {columns}, "
        f"delim = {sql_literal(delim)}, quote = {sql_literal(quote)}, escape = {sql_literal(escape)}, "
        f"header = false, skip = {1 if header else 0}, strict_mode = true, store_rejects = true, "
        "rejects_table = 'adu_csv_rejects', rejects_scan = 'adu_csv_scans', rejects_limit = 10000)"
    )
    shown = f"delimiter {delim!r}, quote {quote!r}, {width} columns"
    try:
        con.execute(f"SELECT count(*) FROM {check}").fetchall()  # fetchall: rejects are stored at the end
        # One reason per line: DuckDB reports a row with two extra fields twice ("Found: 5", "Found: 6"),
        # and the real count is the last; an unterminated quote explains everything after it.
        problems = con.execute(
            "SELECT line, rtrim(arg_max(error_message, CASE error_type WHEN 'UNQUOTED VALUE' THEN 1000000000 "
            "ELSE coalesce(column_idx, 0) END), '.'), count(*) OVER () FROM adu_csv_rejects "
            "GROUP BY line ORDER BY line LIMIT ?",
            [_REJECTS_SHOWN],
        ).fetchall()
    except (duckdb.InvalidInputException, duckdb.ConversionException) as e:
        return f"it does not parse as CSV ({shown}): {str(e).splitlines()[0]}"
    finally:
        con.execute("DROP TABLE IF EXISTS adu_csv_rejects")
        con.execute("DROP TABLE IF EXISTS adu_csv_scans")
    if not problems:
        return None
    lines = "; ".join(f"line {line}: {message}" for line, message, _ in problems)
    return (
        f"it does not parse cleanly as CSV ({shown}): {problems[0][2]} bad line(s), {lines}. Nothing of it "
        f"was landed. Fix the file and drop it again, or declare the dialect under csv: in {component}'s YAML"
    )


def quarantine_file(path: Path, target: Path, reason: str, run_id: str) -> Path:
    """Move a bad file out of the watched folder, with a note saying why; never overwrite an earlier one."""
    from adu_assets.secrets import redact

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = target.with_name(f"{target.stem}.{stamp}{target.suffix}")
    shutil.move(str(path), str(target))
    note = target.with_name(target.name + REASON_SUFFIX)
    note.write_text(
        f"file: {path}\nquarantined: {datetime.now(UTC).isoformat()}\nrun: {run_id}\nreason: {redact(reason)}\n"
    )
    return target
