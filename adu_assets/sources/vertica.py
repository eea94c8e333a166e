"""Vertica reader: discovery through `v_catalog`, and a SELECT streamed into Arrow record batches.

Vertica has no client-side `COPY ... TO STDOUT`, so rows come through vertica-python's result protocol and are
turned into Arrow one batch at a time (`fetchmany`, never `fetchall`): memory is bounded by the batch size,
not by the table. See PERFORMANCE.md ("Vertica").

Every statement here uses server-side binding (`use_prepared_statements=True`, `?` placeholders). That is the
only mode in which vertica-python honours `binary_transfer`, and it keeps schema and table names and window
bounds out of the SQL text altogether. Identifiers that must appear in SQL (columns, the table) come from the
discovered catalog and are quoted with `quote_ident`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import pyarrow as pa

from adu_assets.secrets import scrub_exception
from adu_assets.sources.catalog import ColumnInfo, TableInfo, quote_ident
from adu_assets.sources.connection import ConnectionConfig

__all__ = [
    "DBAPIConnection",
    "DBAPICursor",
    "arrow_schema_for",
    "build_select",
    "connect_vertica",
    "discover_tables",
    "stream_query",
    "type_notes",
]

DEFAULT_BATCH_SIZE = 100_000

# vertica-python applies this to the socket for the whole session, not only to the connect: it is also the
# longest wait for the next result message. An export's first row can take minutes on a big filtered scan,
# so the default is generous; `connection.options.connection_timeout` overrides it.
DEFAULT_CONNECTION_TIMEOUT_S = 300.0


class DBAPICursor(Protocol):
    """The part of a vertica-python cursor this module uses (a test fake implements the same)."""

    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...

    def execute(
        self, operation: str, parameters: Sequence[Any], *, use_prepared_statements: bool
    ) -> object: ...

    def fetchmany(self, size: int) -> Sequence[Sequence[Any]]: ...

    def close(self) -> None: ...


class DBAPIConnection(Protocol):
    def cursor(self) -> DBAPICursor: ...

    def close(self) -> None: ...


# --- connection ---------------------------------------------------------------------------------


def connect_vertica(cfg: ConnectionConfig) -> Any:
    """Open a vertica-python connection. The password is resolved here, at run time, and never stored.

    Speed (PERFORMANCE.md): vertica-python decodes every value in Python, which makes it the slow part of a
    Vertica export (vertica-python issues 146 and 470). `binary_transfer` makes the server send results in
    binary, which spares the text parsing of numbers, dates and timestamps; it only applies to prepared
    statements, which is why every query here uses them. Where the servers share storage, a server-side
    `EXPORT TO PARQUET` is faster still, and runs in parallel on the nodes.
    """
    import vertica_python  # lazy: importing the package must not load database drivers

    if cfg.kind != "vertica":
        raise ValueError(f"connect_vertica needs a connection of kind vertica, not {cfg.kind}")
    forbidden = {"password", "dsn"} & set(cfg.options)
    if forbidden:
        raise ValueError(
            f"connection.options may not contain {', '.join(sorted(forbidden))}: use password_env or "
            "password_encrypted for the password, and host/port/database/user for the address"
        )
    options: dict[str, Any] = {
        "connection_timeout": DEFAULT_CONNECTION_TIMEOUT_S,
        # A read-only export holds no transaction open between statements.
        "autocommit": True,
        "binary_transfer": True,
        "use_prepared_statements": True,
        "session_label": "adu_assets",
    }
    if cfg.options:
        # The YAML gives strings; the driver's own DSN parser knows which options are bools or floats.
        options.update(vertica_python.parse_dsn("vertica://?" + urlencode(cfg.options)))
    try:
        return vertica_python.connect(
            host=cfg.host,
            port=cfg.resolved_port,
            database=cfg.database,
            user=cfg.user,
            password=cfg.resolve_password() or "",
            **options,
        )
    except Exception as exc:
        raise scrub_exception(exc, f"connecting to {cfg.describe()}") from None


# --- discovery ----------------------------------------------------------------------------------

# v_catalog.tables lists tables only (views live in v_catalog.views), so joining columns on table_id keeps
# views out. Vertica identifiers are case-insensitive, quoted or not, hence the LOWER() comparisons; the names
# are lowered in Python because a bare `LOWER(?)` leaves the server no type to choose an overload by.
_CATALOG_BATCH = 10_000
_DISCOVERY_SQL = (
    "SELECT t.table_schema, t.table_name, c.column_name, c.data_type, c.is_nullable\n"
    "FROM v_catalog.tables t\n"
    "JOIN v_catalog.columns c ON c.table_id = t.table_id\n"
    "WHERE LOWER(t.table_schema) = ?\n"
    "  AND NOT t.is_temp_table\n"
    "  AND NOT t.is_system_table{table_filter}\n"
    "ORDER BY t.table_name, c.ordinal_position"
)


def discover_tables(conn: DBAPIConnection, schema: str, tables: list[str] | None = None) -> list[TableInfo]:
    """The base tables of `schema` (or only those named in `tables`), ordered by name, with their columns in
    table order and Vertica's own type names (e.g. ``numeric(15,2)``)."""
    if tables is not None and not tables:
        return []
    params: list[Any] = [schema.lower()]
    table_filter = ""
    if tables:
        table_filter = "\n  AND LOWER(t.table_name) IN (" + ", ".join("?" for _ in tables) + ")"
        params.extend(t.lower() for t in tables)
    sql = _DISCOVERY_SQL.format(table_filter=table_filter)

    found: dict[tuple[str, str], list[ColumnInfo]] = {}
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params, use_prepared_statements=True)
        while True:
            rows = cursor.fetchmany(_CATALOG_BATCH)
            for table_schema, table_name, column_name, data_type, is_nullable in rows:
                found.setdefault((table_schema, table_name), []).append(
                    ColumnInfo(name=column_name, type=str(data_type).lower(), nullable=bool(is_nullable))
                )
            if len(rows) < _CATALOG_BATCH:
                break
    except Exception as exc:
        raise scrub_exception(exc, f"discovering tables of Vertica schema {schema!r}") from None
    finally:
        cursor.close()
    return [TableInfo(schema=s, name=n, columns=tuple(cols)) for (s, n), cols in found.items()]


# --- types --------------------------------------------------------------------------------------

# VARCHAR's largest length in Vertica. A cast to a plain VARCHAR would mean VARCHAR(80) and truncate silently.
_TEXT_CAST = "VARCHAR(65000)"


@dataclass(frozen=True)
class _ColumnPlan:
    """How one column is read: its Arrow type, an optional server-side cast, and whether to report it."""

    arrow_type: pa.DataType
    cast_to: str | None = None  # a SQL type to CAST to in the SELECT, so the driver hands back str
    reported: bool = False  # True: the value is text only because Arrow has no faithful type for it


_TYPE_RE = re.compile(r"^\s*([a-z][a-z ]*?)\s*(?:\(([^)]*)\))?\s*$")


def _cast_plan(word: str) -> _ColumnPlan:
    """A YAML `cast:` for one column: the server casts, Arrow gets the matching type (noted)."""
    from adu_assets.sources.type_map import cast_target

    target = cast_target(word)
    if target == "DOUBLE":
        return _ColumnPlan(pa.float64(), cast_to="FLOAT", reported=True)
    if target == "VARCHAR":
        return _ColumnPlan(pa.string(), cast_to=_TEXT_CAST, reported=True)
    if target in ("BIGINT", "INTEGER"):
        return _ColumnPlan(pa.int64(), cast_to="INTEGER", reported=True)
    precision, scale = (int(x) for x in target[len("DECIMAL(") : -1].split(","))
    return _ColumnPlan(
        pa.decimal128(precision, scale), cast_to=f"NUMERIC({precision},{scale})", reported=True
    )


def _plan(column: ColumnInfo, cast: str | None = None) -> _ColumnPlan:
    if cast is not None:
        return _cast_plan(cast)
    m = _TYPE_RE.match(column.type.lower())
    base, args = (m.group(1), m.group(2)) if m else (column.type.lower(), None)
    if base in ("int", "integer", "bigint", "smallint", "tinyint", "int8"):
        return _ColumnPlan(pa.int64())
    if base in ("float", "float8", "real", "double precision"):
        return _ColumnPlan(pa.float64())
    if base == "money":
        return _ColumnPlan(pa.decimal128(18, 4))
    if base in ("numeric", "decimal", "number"):
        precision, scale = 37, 15  # Vertica's default for a bare NUMERIC
        if args:
            parts = [p.strip() for p in args.split(",")]
            precision = int(parts[0])
            scale = int(parts[1]) if len(parts) > 1 else 0
        if precision <= 38:
            return _ColumnPlan(pa.decimal128(precision, scale))
        # Vertica allows NUMERIC up to 1024 digits. DuckDB's DECIMAL (and so the landing) holds 38: an Arrow
        # decimal256 would reach Parquet as DOUBLE. The server's text is exact.
        return _ColumnPlan(pa.string(), cast_to=_TEXT_CAST, reported=True)
    if base in ("varchar", "char", "character", "character varying", "long varchar"):
        return _ColumnPlan(pa.string())
    if base in ("boolean", "bool"):
        return _ColumnPlan(pa.bool_())
    if base == "date":
        return _ColumnPlan(pa.date32())
    if base == "time":
        return _ColumnPlan(pa.time64("us"))
    if base in ("timestamp", "datetime", "smalldatetime"):
        return _ColumnPlan(pa.timestamp("us"))
    if base in ("timestamptz", "timestamp with time zone"):
        # The driver returns aware datetimes in the session zone; Arrow stores the UTC instant.
        return _ColumnPlan(pa.timestamp("us", tz="UTC"))
    if base in ("varbinary", "binary", "long varbinary", "bytea", "raw"):
        return _ColumnPlan(pa.binary())
    if base == "uuid":
        # The driver returns uuid.UUID objects, which Arrow cannot take as strings; the server's text form is
        # the canonical 36-character one, so this is a representation, not a loss.
        return _ColumnPlan(pa.string(), cast_to="VARCHAR(36)")
    # Everything else is read as the server's text form: intervals (the driver returns dateutil relativedelta,
    # which has no Arrow type, and year-month intervals have no fixed duration), TIMETZ (Arrow times carry no
    # offset), arrays, rows, sets, geometry and any type added later.
    return _ColumnPlan(pa.string(), cast_to=_TEXT_CAST, reported=True)


def arrow_schema_for(table: TableInfo, casts: dict[str, str] | None = None) -> tuple[pa.Schema, list[str]]:
    """The Arrow schema that `stream_query` produces for `build_select(table, ...)`, and the names of the
    columns read as text because Arrow has no faithful type for them (for the materialization metadata)."""
    casts = casts or {}
    fields = []
    cast_to_text = []
    for column in table.columns:
        cast = _cast_for(casts, column.name)
        plan = _plan(column, cast)
        fields.append(pa.field(column.name, plan.arrow_type, nullable=column.nullable))
        if plan.reported and cast is None:
            cast_to_text.append(column.name)
    return pa.schema(fields), cast_to_text


def type_notes(table: TableInfo, casts: dict[str, str] | None = None) -> list[str]:
    """One `type_notes` line for each column landed in another form than its Vertica type."""
    casts = casts or {}
    notes = []
    for column in table.columns:
        cast = _cast_for(casts, column.name)
        if cast is not None:
            notes.append(f"{column.name}: {column.type} cast to {cast} as the YAML asks (cast:)")
        elif _plan(column).reported:
            notes.append(f"{column.name}: {column.type} read as text")
    return notes


def _cast_for(casts: dict[str, str], name: str) -> str | None:
    # Vertica names are case-insensitive, so a `cast:` key matches in any case.
    for key, word in casts.items():
        if key.casefold() == name.casefold():
            return word
    return None


# --- SELECT -------------------------------------------------------------------------------------


def _find_column(table: TableInfo, name: str) -> ColumnInfo:
    for column in table.columns:
        if column.name == name:
            return column
    # Vertica matches identifiers case-insensitively, so the YAML may spell a column in another case.
    matches = [c for c in table.columns if c.name.casefold() == name.casefold()]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(c.name for c in table.columns) or "none discovered"
    raise ValueError(
        f"column {name!r} is not in Vertica table {table.schema}.{table.name} (columns: {known}); "
        "check incremental_column in the YAML"
    )


def _window_param(column: ColumnInfo, bound: datetime) -> date | datetime | None:
    """A window bound typed like the column, so the server compares without an implicit text cast.
    None when the column's type cannot hold a point in time."""
    m = _TYPE_RE.match(column.type.lower())
    base = m.group(1) if m else column.type.lower()
    if base == "date":
        return bound.date()
    if base in ("timestamp", "datetime", "smalldatetime"):
        # A TIMESTAMP holds wall-clock time: compare with the partition's wall-clock bounds.
        return bound.replace(tzinfo=None)
    if base in ("timestamptz", "timestamp with time zone"):
        return bound
    return None


def build_select(
    table: TableInfo,
    *,
    incremental_column: str | None,
    window: tuple[datetime, datetime] | None,
    casts: dict[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """A SELECT of every discovered column of `table`, limited to ``[start, end)`` of `window` on
    `incremental_column` when both are given. Returns the SQL (``?`` placeholders) and its parameters."""
    if not table.columns:
        raise ValueError(
            f"Vertica table {table.schema}.{table.name} has no discovered columns; run discovery first"
        )
    select_list = []
    for column in table.columns:
        plan = _plan(column, _cast_for(casts or {}, column.name))
        ident = quote_ident(column.name)
        select_list.append(f"CAST({ident} AS {plan.cast_to}) AS {ident}" if plan.cast_to else ident)
    sql = f"SELECT {', '.join(select_list)}\nFROM {quote_ident(table.schema)}.{quote_ident(table.name)}"
    params: list[Any] = []
    if incremental_column is not None:
        column = _find_column(table, incremental_column)
        if window is not None:
            bounds = [_window_param(column, bound) for bound in window]
            if None in bounds:
                raise ValueError(
                    f"incremental_column {column.name!r} of Vertica table {table.schema}.{table.name} is of "
                    f"type {column.type}; daily partitions need a date, timestamp or timestamptz column"
                )
            params = bounds
            ident = quote_ident(column.name)
            sql += f"\nWHERE {ident} >= ? AND {ident} < ?"
    elif window is not None:
        raise ValueError(
            f"a time window was given for Vertica table {table.schema}.{table.name} without an incremental_column"
        )
    return sql, params


# --- streaming ----------------------------------------------------------------------------------


def stream_query(
    connect: Callable[[], DBAPIConnection],
    sql: str,
    params: list[Any],
    schema: pa.Schema,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    label: str = "Vertica query",
) -> pa.RecordBatchReader:
    """Run `sql` on a fresh connection and return its rows as Arrow record batches of at most `batch_size` rows.

    Nothing happens until the first batch is read: the connection is opened then, and closed after the last
    batch, on error, or when the reader is discarded. Driver errors come out as RuntimeError with every known
    secret removed, prefixed by `label`.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return pa.RecordBatchReader.from_batches(
        schema, _batches(connect, sql, params, schema, batch_size, label)
    )


def _batches(
    connect: Callable[[], DBAPIConnection],
    sql: str,
    params: list[Any],
    schema: pa.Schema,
    batch_size: int,
    label: str,
) -> Iterator[pa.RecordBatch]:
    conn: DBAPIConnection | None = None
    cursor: DBAPICursor | None = None
    exhausted = False
    try:
        conn = connect()
        cursor = conn.cursor()
        cursor.execute(sql, params, use_prepared_statements=True)
        description = cursor.description or ()
        if len(description) != len(schema):
            raise ValueError(
                f"the query returns {len(description)} columns but the schema has {len(schema)} "
                f"({', '.join(schema.names)}): the table changed since discovery; refresh the catalog"
            )
        types = [field.type for field in schema]
        while True:
            rows = cursor.fetchmany(batch_size)
            if not rows:
                exhausted = True
                break
            arrays = []
            # One transpose per batch; each column goes to Arrow as it came from the driver.
            for name, arrow_type, values in zip(schema.names, types, zip(*rows, strict=True), strict=True):
                column: Sequence[Any] = values
                if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
                    column = _as_utc(values)
                try:
                    arrays.append(pa.array(column, type=arrow_type))
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    raise ValueError(f"column {name!r} does not fit Arrow type {arrow_type}: {exc}") from None
            # The DB-API contract: fewer rows than asked for means the result set is exhausted.
            exhausted = len(rows) < batch_size
            del rows  # let the driver's row objects go before the batch is handed on
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
            if exhausted:
                break
    except GeneratorExit:
        raise
    except Exception as exc:
        raise scrub_exception(exc, label) from None
    finally:
        # vertica-python's cursor.close() reads the rest of an unfinished result off the wire, which for an
        # abandoned export is the rest of the table. Unless the result was read to the end, only the
        # connection is closed: the server then cancels the query.
        if cursor is not None and exhausted:
            try:
                cursor.close()
            except Exception:
                pass  # the connection is closed next, which ends the cursor server-side anyway
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass  # nothing more to release; a close error must not hide the real outcome


def _as_utc(values: Sequence[Any]) -> list[Any]:
    """Aware datetimes moved to UTC before Arrow sees them.

    pyarrow normally converts an aware datetime to UTC itself, but once `pandera` has been imported in
    the process (the checks import it) it takes the wall-clock time and drops the offset: 12:00+01:00
    becomes 12:00Z. Measured with pyarrow 26 and pandera 0.35; converting first is right either way.
    """
    return [
        v.astimezone(UTC) if v is not None and getattr(v, "tzinfo", None) is not None else v for v in values
    ]
