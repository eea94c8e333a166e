"""The Vertica reader.

No Vertica server runs here, so most tests drive the reader through a fake DB-API connection that records
every statement and serves scripted rows through `fetchmany`. The tests marked `vertica` run the same code
against a real server when ADU_TEST_VERTICA_DSN (vertica://user:password@host:port/database) is set.
"""

from __future__ import annotations

import gc
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from adu_assets.secrets import register_secret
from adu_assets.sources import vertica
from adu_assets.sources.catalog import ColumnInfo, TableInfo
from adu_assets.sources.connection import ConnectionConfig

CANARY = "canary-Vt9#pw-7731"

# --- a fake DB-API driver -----------------------------------------------------------------------


class FakeDB:
    """What the fake server answers, and what it saw."""

    def __init__(
        self,
        rows: Sequence[Sequence[Any]] = (),
        columns: Sequence[str] = (),
        *,
        execute_error: Exception | None = None,
        fetch_error_after: int | None = None,
        fetch_error: Exception | None = None,
    ) -> None:
        self.rows = list(rows)
        self.columns = list(columns)
        self.execute_error = execute_error
        self.fetch_error_after = fetch_error_after
        self.fetch_error = fetch_error
        self.executed: list[tuple[str, list[Any], dict[str, Any]]] = []
        self.fetchmany_sizes: list[int] = []
        self.connections: list[FakeConnection] = []
        self.cursors: list[FakeCursor] = []

    def connect(self) -> FakeConnection:
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn


class FakeCursor:
    def __init__(self, db: FakeDB) -> None:
        self.db = db
        self.closed = False
        self.description: list[tuple[Any, ...]] | None = None
        self._pos = 0

    def execute(self, operation: str, parameters: Sequence[Any], **kwargs: Any) -> FakeCursor:
        assert not self.closed
        self.db.executed.append((operation, list(parameters), kwargs))
        if self.db.execute_error is not None:
            raise self.db.execute_error
        self.description = [(name, 9, None, None, None, None, True) for name in self.db.columns]
        return self

    def fetchmany(self, size: int) -> list[Sequence[Any]]:
        assert not self.closed
        self.db.fetchmany_sizes.append(size)
        if self.db.fetch_error_after is not None and len(self.db.fetchmany_sizes) > self.db.fetch_error_after:
            assert self.db.fetch_error is not None
            raise self.db.fetch_error
        chunk = self.db.rows[self._pos : self._pos + size]
        self._pos += len(chunk)
        return [list(r) for r in chunk]  # vertica-python returns lists

    def fetchall(self) -> list[Sequence[Any]]:
        raise AssertionError("fetchall() must never be called: it loads the whole table into memory")

    def fetchone(self) -> Sequence[Any] | None:
        raise AssertionError("the reader should fetch in batches")

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self, db: FakeDB) -> None:
        self.db = db
        self.closed = False

    def cursor(self) -> FakeCursor:
        assert not self.closed
        cur = FakeCursor(self.db)
        self.db.cursors.append(cur)
        return cur

    def close(self) -> None:
        self.closed = True


# --- discovery ----------------------------------------------------------------------------------

DISCOVERY_SQL = (
    "SELECT t.table_schema, t.table_name, c.column_name, c.data_type, c.is_nullable\n"
    "FROM v_catalog.tables t\n"
    "JOIN v_catalog.columns c ON c.table_id = t.table_id\n"
    "WHERE LOWER(t.table_schema) = ?\n"
    "  AND NOT t.is_temp_table\n"
    "  AND NOT t.is_system_table\n"
    "ORDER BY t.table_name, c.ordinal_position"
)

CATALOG_ROWS = [
    ("store", "invoice", "invoice_id", "int", False),
    ("store", "invoice", "total", "numeric(15,2)", True),
    ("store", "invoice", "billed_at", "timestamptz", True),
    ("store", "rental", "rental_id", "int", False),
    ("store", "rental", "last_update", "timestamp", False),
]


def test_discover_tables_sql_and_result() -> None:
    db = FakeDB(rows=CATALOG_ROWS)
    tables = vertica.discover_tables(db.connect(), "Store")

    assert db.executed == [(DISCOVERY_SQL, ["store"], {"use_prepared_statements": True})]
    assert tables == [
        TableInfo(
            "store",
            "invoice",
            (
                ColumnInfo("invoice_id", "int", nullable=False),
                ColumnInfo("total", "numeric(15,2)", nullable=True),
                ColumnInfo("billed_at", "timestamptz", nullable=True),
            ),
        ),
        TableInfo(
            "store",
            "rental",
            (
                ColumnInfo("rental_id", "int", nullable=False),
                ColumnInfo("last_update", "timestamp", nullable=False),
            ),
        ),
    ]
    assert db.cursors[0].closed


def test_discover_named_tables_binds_every_name() -> None:
    db = FakeDB(rows=CATALOG_ROWS[3:])
    evil_schema = "store'; drop schema store cascade; --"
    tables = vertica.discover_tables(db.connect(), evil_schema, ["rental", "Invoice"])

    sql, params, kwargs = db.executed[0]
    assert sql == DISCOVERY_SQL.replace(
        "  AND NOT t.is_system_table\n",
        "  AND NOT t.is_system_table\n  AND LOWER(t.table_name) IN (?, ?)\n",
    )
    # The schema and table names travel as bound parameters, never inside the SQL text.
    assert params == [evil_schema, "rental", "invoice"]
    assert "drop" not in sql and "rental" not in sql
    assert kwargs == {"use_prepared_statements": True}
    assert [t.name for t in tables] == ["rental"]


def test_discover_no_tables_asked_runs_no_query() -> None:
    db = FakeDB()
    assert vertica.discover_tables(db.connect(), "store", []) == []
    assert db.executed == []


def test_discover_reads_large_catalogs_in_chunks() -> None:
    rows = [("s", f"t{i:05d}", "id", "int", False) for i in range(25_000)]
    db = FakeDB(rows=rows)
    tables = vertica.discover_tables(db.connect(), "s")
    assert len(tables) == 25_000
    assert db.fetchmany_sizes == [10_000, 10_000, 10_000]


def test_discover_error_is_scrubbed() -> None:
    register_secret(CANARY)
    db = FakeDB(execute_error=RuntimeError(f"authentication failed for password {CANARY}"))
    with pytest.raises(RuntimeError) as info:
        vertica.discover_tables(db.connect(), "store")
    message = str(info.value)
    assert CANARY not in message
    assert "discovering tables of Vertica schema 'store'" in message
    assert "authentication failed" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert db.cursors[0].closed


# --- types --------------------------------------------------------------------------------------

EVERY_TYPE = TableInfo(
    "s",
    "every_type",
    (
        ColumnInfo("i", "int", nullable=False),
        ColumnInfo("f", "float"),
        ColumnInfo("amount", "numeric(15,2)"),
        ColumnInfo("wide", "numeric(60,10)"),
        ColumnInfo("huge", "numeric(100,0)"),
        ColumnInfo("bare_numeric", "numeric"),
        ColumnInfo("v", "varchar(80)"),
        ColumnInfo("c", "char(3)"),
        ColumnInfo("lv", "long varchar(1048576)"),
        ColumnInfo("b", "boolean"),
        ColumnInfo("d", "date"),
        ColumnInfo("t", "time"),
        ColumnInfo("ttz", "timetz"),
        ColumnInfo("ts", "timestamp"),
        ColumnInfo("tstz", "timestamptz"),
        ColumnInfo("vb", "varbinary(80)"),
        ColumnInfo("bin", "binary(16)"),
        ColumnInfo("lvb", "long varbinary(1048576)"),
        ColumnInfo("u", "uuid"),
        ColumnInfo("iv", "interval day to second"),
        ColumnInfo("ym", "interval year to month"),
        ColumnInfo("arr", "array[int]"),
        ColumnInfo("geo", "geometry(1048576)"),
    ),
)


def test_arrow_schema_maps_every_type_and_reports_text_casts() -> None:
    schema, cast_to_text = vertica.arrow_schema_for(EVERY_TYPE)
    assert schema == pa.schema(
        [
            pa.field("i", pa.int64(), nullable=False),
            pa.field("f", pa.float64()),
            pa.field("amount", pa.decimal128(15, 2)),
            pa.field("wide", pa.string()),
            pa.field("huge", pa.string()),
            pa.field("bare_numeric", pa.decimal128(37, 15)),
            pa.field("v", pa.string()),
            pa.field("c", pa.string()),
            pa.field("lv", pa.string()),
            pa.field("b", pa.bool_()),
            pa.field("d", pa.date32()),
            pa.field("t", pa.time64("us")),
            pa.field("ttz", pa.string()),
            pa.field("ts", pa.timestamp("us")),
            pa.field("tstz", pa.timestamp("us", tz="UTC")),
            pa.field("vb", pa.binary()),
            pa.field("bin", pa.binary()),
            pa.field("lvb", pa.binary()),
            pa.field("u", pa.string()),
            pa.field("iv", pa.string()),
            pa.field("ym", pa.string()),
            pa.field("arr", pa.string()),
            pa.field("geo", pa.string()),
        ]
    )
    # uuid is a faithful string; these are not, and the caller must say so in the metadata.
    assert cast_to_text == ["wide", "huge", "ttz", "iv", "ym", "arr", "geo"]


def test_select_casts_exactly_the_columns_read_as_text() -> None:
    sql, params = vertica.build_select(EVERY_TYPE, incremental_column=None, window=None)
    assert params == []
    assert sql == (
        'SELECT "i", "f", "amount", CAST("wide" AS VARCHAR(65000)) AS "wide", CAST("huge" AS VARCHAR(65000)) AS "huge", "bare_numeric", '
        '"v", "c", "lv", "b", "d", "t", CAST("ttz" AS VARCHAR(65000)) AS "ttz", "ts", "tstz", "vb", "bin", '
        '"lvb", CAST("u" AS VARCHAR(36)) AS "u", CAST("iv" AS VARCHAR(65000)) AS "iv", '
        'CAST("ym" AS VARCHAR(65000)) AS "ym", CAST("arr" AS VARCHAR(65000)) AS "arr", '
        'CAST("geo" AS VARCHAR(65000)) AS "geo"\n'
        'FROM "s"."every_type"'
    )


# --- SELECT -------------------------------------------------------------------------------------

RENTAL = TableInfo(
    "public",
    "rental",
    (
        ColumnInfo("rental_id", "int", nullable=False),
        ColumnInfo("amount", "numeric(5,2)"),
        ColumnInfo("last_update", "timestamptz"),
        ColumnInfo("local_ts", "timestamp"),
        ColumnInfo("day", "date"),
        ColumnInfo("note", "varchar(200)"),
    ),
)
DAY = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))


def test_select_snapshot_has_no_where() -> None:
    sql, params = vertica.build_select(RENTAL, incremental_column=None, window=None)
    assert (
        sql
        == 'SELECT "rental_id", "amount", "last_update", "local_ts", "day", "note"\nFROM "public"."rental"'
    )
    assert params == []


def test_select_window_binds_bounds_on_timestamptz() -> None:
    sql, params = vertica.build_select(RENTAL, incremental_column="last_update", window=DAY)
    assert sql == (
        'SELECT "rental_id", "amount", "last_update", "local_ts", "day", "note"\n'
        'FROM "public"."rental"\n'
        'WHERE "last_update" >= ? AND "last_update" < ?'
    )
    assert params == [datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)]
    assert "2024" not in sql


def test_select_window_bounds_follow_the_column_type() -> None:
    _, params = vertica.build_select(RENTAL, incremental_column="local_ts", window=DAY)
    assert params == [datetime(2024, 3, 1), datetime(2024, 3, 2)]
    assert all(p.tzinfo is None for p in params)

    sql, params = vertica.build_select(RENTAL, incremental_column="day", window=DAY)
    assert sql.endswith('WHERE "day" >= ? AND "day" < ?')
    assert params == [date(2024, 3, 1), date(2024, 3, 2)]
    assert all(type(p) is date for p in params)


def test_select_incremental_column_matches_catalog_case() -> None:
    sql, _ = vertica.build_select(RENTAL, incremental_column="Last_Update", window=DAY)
    assert sql.endswith('WHERE "last_update" >= ? AND "last_update" < ?')


def test_select_unknown_column_names_table_and_column() -> None:
    with pytest.raises(ValueError) as info:
        vertica.build_select(RENTAL, incremental_column="updated_at", window=DAY)
    message = str(info.value)
    assert "'updated_at'" in message
    assert "public.rental" in message
    assert "rental_id, amount, last_update" in message


def test_select_rejects_non_time_incremental_column_and_stray_window() -> None:
    with pytest.raises(ValueError, match=r"'note' of Vertica table public\.rental is of type varchar\(200\)"):
        vertica.build_select(RENTAL, incremental_column="note", window=DAY)
    with pytest.raises(ValueError, match="without an incremental_column"):
        vertica.build_select(RENTAL, incremental_column=None, window=DAY)
    with pytest.raises(ValueError, match="no discovered columns"):
        vertica.build_select(TableInfo("public", "empty"), incremental_column=None, window=None)


EVIL_TABLE = 'users"; drop table x; --'
EVIL_COLUMN = 'id" from x; --'


def test_injection_name_is_one_quoted_identifier() -> None:
    table = TableInfo("main", EVIL_TABLE, (ColumnInfo(EVIL_COLUMN, "int"), ColumnInfo("name", "varchar(20)")))
    sql, params = vertica.build_select(table, incremental_column=None, window=None)
    assert sql == 'SELECT "id"" from x; --", "name"\nFROM "main"."users""; drop table x; --"'
    assert params == []

    # Vertica, PostgreSQL and DuckDB share the double-quote rule, so a real DuckDB proves the SQL harmless:
    # it reads the oddly named table and leaves x alone.
    con = duckdb.connect()
    con.execute("CREATE TABLE x (v INTEGER)")
    con.execute("INSERT INTO x VALUES (42)")
    con.execute('CREATE TABLE "users""; drop table x; --" ("id"" from x; --" INTEGER, name VARCHAR)')
    con.execute('INSERT INTO "users""; drop table x; --" VALUES (1, \'ann\')')
    assert con.execute(sql).fetchall() == [(1, "ann")]
    assert con.execute("SELECT v FROM x").fetchall() == [(42,)]


# --- streaming ----------------------------------------------------------------------------------


def _rental_rows(n: int) -> list[list[Any]]:
    # The driver returns timestamptz in the session zone; a fixed +01:00 (Paris in March) keeps the test
    # independent of the host's tz database, which dateutil.tz.gettz may fail to find.
    paris = timezone(timedelta(hours=1))
    base = datetime(2024, 3, 1, 12, 0, tzinfo=paris)
    return [
        [
            i,
            Decimal(i).scaleb(-2) if i % 7 else None,
            base + timedelta(minutes=i),
            datetime(2024, 3, 1, 8, 30) + timedelta(seconds=i),
            date(2024, 3, 1),
            f"note {i}" if i % 5 else None,
        ]
        for i in range(n)
    ]


def test_stream_batches_bounded_by_batch_size() -> None:
    db = FakeDB(rows=_rental_rows(250), columns=[c.name for c in RENTAL.columns])
    sql, params = vertica.build_select(RENTAL, incremental_column="last_update", window=DAY)
    schema, _ = vertica.arrow_schema_for(RENTAL)

    reader = vertica.stream_query(db.connect, sql, params, schema, batch_size=100)
    assert db.connections == []  # nothing runs until the first batch is read

    batches = list(reader)
    assert [b.num_rows for b in batches] == [100, 100, 50]
    assert len(db.fetchmany_sizes) == 3 and set(db.fetchmany_sizes) == {100}
    assert db.executed == [(sql, params, {"use_prepared_statements": True})]
    assert db.connections[0].closed and db.cursors[0].closed

    result = pa.Table.from_batches(batches)
    assert result.schema == schema
    assert result.column("rental_id").to_pylist() == list(range(250))
    assert result.column("amount").type == pa.decimal128(5, 2)
    assert result.column("amount").to_pylist()[:3] == [None, Decimal("0.01"), Decimal("0.02")]
    assert result.column("amount").null_count == len(range(0, 250, 7))
    # 12:00 in Paris on 1 March is 11:00 UTC: the instant is kept, stored as UTC.
    assert result.column("last_update")[0].as_py() == datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    assert result.column("local_ts")[249].as_py() == datetime(2024, 3, 1, 8, 34, 9)
    assert result.column("day").to_pylist() == [date(2024, 3, 1)] * 250
    assert result.column("note").to_pylist()[:6] == [None, "note 1", "note 2", "note 3", "note 4", None]


def test_stream_exact_multiple_stops_on_empty_fetch() -> None:
    db = FakeDB(rows=_rental_rows(200), columns=[c.name for c in RENTAL.columns])
    schema, _ = vertica.arrow_schema_for(RENTAL)
    batches = list(vertica.stream_query(db.connect, "SELECT 1", [], schema, batch_size=100))
    assert [b.num_rows for b in batches] == [100, 100]
    assert len(db.fetchmany_sizes) == 3


def test_stream_empty_result() -> None:
    db = FakeDB(rows=[], columns=[c.name for c in RENTAL.columns])
    schema, _ = vertica.arrow_schema_for(RENTAL)
    table = vertica.stream_query(db.connect, "SELECT 1", [], schema).read_all()
    assert table.num_rows == 0 and table.schema == schema
    assert db.connections[0].closed


def test_stream_feeds_duckdb_with_types_intact() -> None:
    table = TableInfo(
        "s",
        "t",
        (
            ColumnInfo("id", "int"),
            ColumnInfo("total", "numeric(15,2)"),
            ColumnInfo("at", "timestamptz"),
            ColumnInfo("t", "time"),
            ColumnInfo("payload", "varbinary(10)"),
            ColumnInfo("ok", "boolean"),
            ColumnInfo("ratio", "float"),
            ColumnInfo("u", "uuid"),
            ColumnInfo("iv", "interval day to second"),
        ),
    )
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    # uuid and interval are CAST in the SELECT, so the driver hands them over as text.
    rows: list[list[Any]] = [
        [
            1,
            Decimal("12.50"),
            datetime(2024, 1, 1, tzinfo=UTC),
            time(8, 30, 0, 5),
            b"\x00\xff",
            True,
            0.5,
            str(key),
            "1 02:03:04",
        ],
        [2, None, None, None, None, None, None, None, None],
    ]
    db = FakeDB(rows=rows, columns=[c.name for c in table.columns])
    schema, cast_to_text = vertica.arrow_schema_for(table)
    assert cast_to_text == ["iv"]
    reader = vertica.stream_query(db.connect, "SELECT ...", [], schema, batch_size=10)

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("vertica_stream", reader)
    described = {
        name: kind for name, kind, *_ in con.execute("DESCRIBE SELECT * FROM vertica_stream").fetchall()
    }
    assert described["total"] == "DECIMAL(15,2)"
    assert described["at"] == "TIMESTAMP WITH TIME ZONE"
    con.unregister("vertica_stream")

    reader = vertica.stream_query(db.connect, "SELECT ...", [], schema, batch_size=10)
    con.register("vertica_stream2", reader)
    got = con.execute(
        "SELECT id, total, t, payload, ok, ratio, u, iv FROM vertica_stream2 ORDER BY id"
    ).fetchall()
    assert got == [
        (1, Decimal("12.50"), time(8, 30, 0, 5), b"\x00\xff", True, 0.5, str(key), "1 02:03:04"),
        (2, None, None, None, None, None, None, None),
    ]


def test_stream_driver_error_is_scrubbed_and_connection_closed() -> None:
    register_secret(CANARY)
    db = FakeDB(
        rows=_rental_rows(250),
        columns=[c.name for c in RENTAL.columns],
        fetch_error_after=1,
        fetch_error=ConnectionError(f"lost connection to vertica://adu:{CANARY}@db:5433/dw"),
    )
    schema, _ = vertica.arrow_schema_for(RENTAL)
    reader = vertica.stream_query(
        db.connect, "SELECT 1", [], schema, batch_size=100, label="Vertica public.rental"
    )
    assert reader.read_next_batch().num_rows == 100
    with pytest.raises(Exception) as info:
        reader.read_next_batch()
    message = str(info.value)
    assert CANARY not in message
    assert (
        "Vertica public.rental: ConnectionError: lost connection to vertica://adu:***@db:5433/dw" in message
    )
    assert db.connections[0].closed
    # Closing an unfinished vertica-python cursor drains the rest of the result: only the connection closes.
    assert not db.cursors[0].closed


def test_stream_execute_error_is_scrubbed() -> None:
    register_secret(CANARY)
    db = FakeDB(columns=["a"], execute_error=RuntimeError(f"Permission denied (password={CANARY})"))
    with pytest.raises(Exception) as info:
        vertica.stream_query(db.connect, "SELECT 1", [], pa.schema([("a", pa.int64())])).read_all()
    assert CANARY not in str(info.value)
    assert "Permission denied" in str(info.value)
    assert db.connections[0].closed


def test_stream_abandoned_reader_closes_connection_without_draining() -> None:
    db = FakeDB(rows=_rental_rows(250), columns=[c.name for c in RENTAL.columns])
    schema, _ = vertica.arrow_schema_for(RENTAL)
    reader = vertica.stream_query(db.connect, "SELECT 1", [], schema, batch_size=100)
    reader.read_next_batch()
    reader.close()
    del reader
    gc.collect()
    assert db.connections[0].closed
    assert len(db.fetchmany_sizes) == 1
    assert not db.cursors[0].closed


def test_stream_value_that_does_not_fit_names_the_column() -> None:
    db = FakeDB(rows=[[Decimal("1.234")]], columns=["amount"])
    schema = pa.schema([("amount", pa.decimal128(5, 2))])
    with pytest.raises(Exception, match=r"column 'amount' does not fit Arrow type decimal128\(5, 2\)"):
        vertica.stream_query(db.connect, "SELECT 1", [], schema).read_all()
    assert db.connections[0].closed


def test_stream_detects_table_changed_since_discovery() -> None:
    db = FakeDB(rows=[[1, 2]], columns=["a", "b"])
    with pytest.raises(Exception, match="returns 2 columns but the schema has 1"):
        vertica.stream_query(db.connect, "SELECT 1", [], pa.schema([("a", pa.int64())])).read_all()


# --- connecting ---------------------------------------------------------------------------------


def _vertica_cfg(port: int = 5433, **options: str) -> ConnectionConfig:
    return ConnectionConfig(
        kind="vertica",
        host="127.0.0.1",
        port=port,
        database="dw",
        user="adu",
        password_env="ADU_TEST_VERTICA_PASSWORD",
        options=options,
    )


def test_connect_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import vertica_python

    seen: dict[str, Any] = {}
    monkeypatch.setattr(vertica_python, "connect", lambda **kw: seen.update(kw) or "conn")
    monkeypatch.setenv("ADU_TEST_VERTICA_PASSWORD", CANARY)

    assert vertica.connect_vertica(_vertica_cfg()) == "conn"
    assert seen == {
        "host": "127.0.0.1",
        "port": 5433,
        "database": "dw",
        "user": "adu",
        "password": CANARY,
        "connection_timeout": 300.0,
        "autocommit": True,
        "binary_transfer": True,
        "use_prepared_statements": True,
        "session_label": "adu_assets",
    }

    seen.clear()
    vertica.connect_vertica(_vertica_cfg(connection_timeout="15", binary_transfer="false", tlsmode="require"))
    assert seen["connection_timeout"] == 15.0
    assert seen["binary_transfer"] is False
    assert seen["tlsmode"] == "require"


def test_connect_refuses_a_password_in_options() -> None:
    with pytest.raises(ValueError, match="may not contain password"):
        vertica.connect_vertica(_vertica_cfg(password=CANARY))


def test_connect_failure_names_the_server_not_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADU_TEST_VERTICA_PASSWORD", CANARY)
    with socket.socket() as s:  # a port on loopback that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError) as info:
        vertica.connect_vertica(_vertica_cfg(port=port, connection_timeout="5"))
    message = str(info.value)
    assert message.startswith(f"connecting to vertica://adu@127.0.0.1:{port}/dw: ")
    assert CANARY not in message
    assert info.value.__cause__ is None


# --- a real Vertica server ----------------------------------------------------------------------

VERTICA_DSN = os.environ.get("ADU_TEST_VERTICA_DSN")
needs_vertica = pytest.mark.skipif(
    not VERTICA_DSN, reason="ADU_TEST_VERTICA_DSN is not set (vertica://user:password@host:port/database)"
)


@pytest.fixture
def vertica_cfg(monkeypatch: pytest.MonkeyPatch) -> ConnectionConfig:
    import vertica_python

    assert VERTICA_DSN
    parts = vertica_python.parse_dsn(VERTICA_DSN)
    monkeypatch.setenv("ADU_TEST_VERTICA_PASSWORD", str(parts.get("password", "")))
    return ConnectionConfig(
        kind="vertica",
        host=str(parts["host"]),
        port=int(parts.get("port", 5433)),
        database=str(parts["database"]),
        user=str(parts["user"]),
        password_env="ADU_TEST_VERTICA_PASSWORD",
    )


@pytest.fixture
def scratch_table(vertica_cfg: ConnectionConfig) -> Iterator[tuple[str, str]]:
    schema = f"adu_test_{uuid.uuid4().hex[:8]}"
    conn = vertica.connect_vertica(vertica_cfg)
    cur = conn.cursor()
    try:
        cur.execute(f"CREATE SCHEMA {schema}", use_prepared_statements=False)
        cur.execute(
            f"CREATE TABLE {schema}.sales (id INT NOT NULL, total NUMERIC(15,2), sold_at TIMESTAMPTZ, "
            "sold_on DATE, note VARCHAR(100), paid BOOLEAN, ref UUID, took INTERVAL DAY TO SECOND)",
            use_prepared_statements=False,
        )
        # COPY FROM STDIN: a fresh database has no handy 250-row table to generate rows from.
        data = "".join(
            f"{i}|1.25|2024-03-01 10:00:00+00|2024-03-01|n|t|12345678-1234-5678-1234-567812345678|1 02:03:04\n"
            for i in range(1, 251)
        )
        cur.copy(f"COPY {schema}.sales FROM STDIN DELIMITER '|' NULL ''", data)
        cur.execute(
            f"INSERT INTO {schema}.sales VALUES (1000, NULL, '2024-03-02 00:00:00+00', NULL, NULL, NULL, NULL, NULL)",
            use_prepared_statements=False,
        )
        cur.execute("COMMIT", use_prepared_statements=False)
        yield schema, "sales"
    finally:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE", use_prepared_statements=False)
        conn.close()


@pytest.mark.vertica
@needs_vertica
def test_real_vertica_discover_and_stream(
    vertica_cfg: ConnectionConfig, scratch_table: tuple[str, str]
) -> None:
    schema, name = scratch_table
    conn = vertica.connect_vertica(vertica_cfg)
    try:
        tables = vertica.discover_tables(conn, schema)
    finally:
        conn.close()
    assert [t.name for t in tables] == [name]
    table = tables[0]
    assert [(c.name, c.type) for c in table.columns][:5] == [
        ("id", "int"),
        ("total", "numeric(15,2)"),
        ("sold_at", "timestamptz"),
        ("sold_on", "date"),
        ("note", "varchar(100)"),
    ]
    assert table.columns[0].nullable is False

    window = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    sql, params = vertica.build_select(table, incremental_column="sold_at", window=window)
    schema_, cast_to_text = vertica.arrow_schema_for(table)
    assert cast_to_text == ["took"]
    reader = vertica.stream_query(
        lambda: vertica.connect_vertica(vertica_cfg), sql, params, schema_, batch_size=100
    )
    batches = list(reader)
    assert [b.num_rows for b in batches] == [100, 100, 50]  # the row at 2024-03-02 is outside the window
    result = pa.Table.from_batches(batches, schema=schema_)
    assert sorted(result.column("id").to_pylist()) == list(range(1, 251))
    assert set(result.column("total").to_pylist()) == {Decimal("1.25")}
    assert set(result.column("sold_at").to_pylist()) == {datetime(2024, 3, 1, 10, tzinfo=UTC)}
    assert set(result.column("sold_on").to_pylist()) == {date(2024, 3, 1)}
    assert set(result.column("paid").to_pylist()) == {True}
    assert set(result.column("ref").to_pylist()) == {"12345678-1234-5678-1234-567812345678"}
    assert len(set(result.column("took").to_pylist())) == 1

    snapshot_sql, snapshot_params = vertica.build_select(table, incremental_column=None, window=None)
    everything = vertica.stream_query(
        lambda: vertica.connect_vertica(vertica_cfg), snapshot_sql, snapshot_params, schema_
    ).read_all()
    assert everything.num_rows == 251
    last = everything.filter(pc.equal(everything.column("id"), 1000)).to_pylist()
    assert last == [
        {
            "id": 1000,
            "total": None,
            "sold_at": datetime(2024, 3, 2, tzinfo=UTC),
            "sold_on": None,
            "note": None,
            "paid": None,
            "ref": None,
            "took": None,
        }
    ]


@pytest.mark.vertica
@needs_vertica
def test_real_vertica_injection_name_finds_nothing(vertica_cfg: ConnectionConfig) -> None:
    conn = vertica.connect_vertica(vertica_cfg)
    try:
        assert vertica.discover_tables(conn, "public", [EVIL_TABLE]) == []
        assert vertica.discover_tables(conn, "x'; drop table x; --") == []
    finally:
        conn.close()


def test_timestamptz_survives_pandera_being_imported() -> None:
    # pandera's import makes pyarrow drop the offset of aware datetimes; the reader must not depend on it.
    import pandera.polars  # noqa: F401

    test_stream_batches_bounded_by_batch_size()
