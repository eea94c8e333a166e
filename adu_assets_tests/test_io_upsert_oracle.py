"""Oracle upsert: the SQL and driver calls on a recording fake connection, and the same scenarios as PostgreSQL
against a real server when ADU_TEST_ORACLE_DSN (user/password@host:port/service) is set."""

from __future__ import annotations

import datetime as dt
import os
import re
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.upsert import DestinationConfig, DestinationError, upsert
from adu_assets.io_managers.upsert import oracle as ora

CATALOG = [  # OWNER, TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHAR_LENGTH, CHAR_USED, NULLABLE
    ("HR", "EMPLOYEES", "EMPLOYEE_ID", "NUMBER", 0, None, "N"),
    ("HR", "EMPLOYEES", "CITY", "VARCHAR2", 10, "B", "Y"),
    ("HR", "EMPLOYEES", "SALARY", "NUMBER", 0, None, "Y"),
    ("HR", "EMPLOYEES", "HIRED", "DATE", 0, None, "Y"),
    ("HR", "EMPLOYEES", "PROCESSED", "CHAR", 1, "B", "Y"),
]


class BatchError:
    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        self.message = message


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rowcount = 0
        self._rows: list[Any] = []
        self._batcherrors: list[BatchError] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.calls.append(("execute", sql, params))
        self._rows = []
        if sql == ora.CATALOG_SQL:
            self._rows = list(self.conn.catalog)
        elif sql == ora.TABLE_EXISTS_SQL:
            self._rows = [(0,)]
        elif sql.startswith("SELECT COUNT(CASE"):
            self._rows = [self.conn.counts.pop(0)]
        elif sql.startswith("MERGE INTO"):
            lo, hi = params["lo"], params["hi"]
            for bad, message in self.conn.merge_failures.items():
                if lo <= bad <= hi:
                    raise RuntimeError(message)
            self.rowcount = self.conn.merge_rowcount

    def executemany(self, sql: str, rows: list[Any], batcherrors: bool = False) -> None:
        self.conn.calls.append(("executemany", sql, list(rows), batcherrors))
        self._batcherrors = self.conn.batch_errors.pop(0) if self.conn.batch_errors else []

    def getbatcherrors(self) -> list[BatchError]:
        return self._batcherrors

    def setinputsizes(self, *sizes: Any) -> None:
        self.conn.calls.append(("setinputsizes", sizes))

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


class FakeConnection:
    """Records every call; answers the catalog, the counts and scripted batch errors / MERGE failures."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.catalog = CATALOG
        self.counts: list[tuple[int, int, int]] = []
        self.batch_errors: list[list[BatchError]] = []
        self.merge_failures: dict[int, str] = {}
        self.merge_rowcount = 0
        self.committed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.calls.append(("commit",))
        self.committed = True

    def rollback(self) -> None:
        self.calls.append(("rollback",))

    def close(self) -> None:
        raise AssertionError("a connection passed in must not be closed by upsert()")

    def sql(self, kind: str = "execute") -> list[str]:
        return [c[1] for c in self.calls if c[0] == kind]


DEST = {
    "connection": {
        "kind": "oracle",
        "host": "db",
        "service": "ORCL",
        "user": "adu",
        "password_env": "ORA_PW",
    },
    "table": "HR.EMPLOYEES",
    "mode": "upsert",
    "keys": ["EMPLOYEE_ID"],
    "skip_when": {"column": "PROCESSED", "equals": "Y"},
}


def data() -> pa.Table:
    return pa.table(
        {
            "EMPLOYEE_ID": pa.array([1, 2, 3], pa.int64()),
            "CITY": ["Oslo", "Bergen", None],
            "SALARY": pa.array([Decimal("100.50"), Decimal("200.00"), None], pa.decimal128(10, 2)),
            "HIRED": pa.array(
                [dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.UTC), None, dt.datetime(2026, 3, 4, tzinfo=dt.UTC)],
                pa.timestamp("us", "UTC"),
            ),
        }
    )


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path))


def test_merge_sql_executemany_and_counts() -> None:
    conn = FakeConnection()
    conn.counts = [(1, 1, 1)]
    conn.merge_rowcount = 2
    result = upsert(DestinationConfig.model_validate(DEST), data(), run_id="r1", connection=conn)
    assert (result.inserted, result.updated, result.skipped, result.unchanged, result.errors) == (
        1,
        1,
        1,
        0,
        0,
    )
    assert result.table == "HR.EMPLOYEES"

    [create] = [s for s in conn.sql() if s.startswith("CREATE GLOBAL TEMPORARY TABLE")]
    stage = re.match(
        r'CREATE GLOBAL TEMPORARY TABLE "(ADU_STG_[0-9A-F]{12})" ON COMMIT DELETE ROWS AS ', create
    )
    assert stage, create
    stg = stage.group(1)
    assert create.endswith(
        'SELECT CAST(NULL AS NUMBER(19)) AS "ADU_RN", t."EMPLOYEE_ID", t."CITY", t."SALARY", t."HIRED" '
        'FROM "HR"."EMPLOYEES" t WHERE 1 = 0'
    )
    [merge] = [s for s in conn.sql() if s.startswith("MERGE")]
    assert merge == (
        'MERGE INTO "HR"."EMPLOYEES" t\n'
        f'USING (SELECT "EMPLOYEE_ID", "CITY", "SALARY", "HIRED" FROM "{stg}" WHERE "ADU_RN" BETWEEN :lo AND :hi) s\n'
        'ON (t."EMPLOYEE_ID" = s."EMPLOYEE_ID")\n'
        'WHEN MATCHED THEN UPDATE SET t."CITY" = s."CITY", t."SALARY" = s."SALARY", t."HIRED" = s."HIRED"\n'
        '  WHERE DECODE(t."PROCESSED", :skip, 1, 0) = 0 AND (DECODE(t."CITY", s."CITY", 0, 1) = 1 OR '
        'DECODE(t."SALARY", s."SALARY", 0, 1) = 1 OR DECODE(t."HIRED", s."HIRED", 0, 1) = 1)\n'
        'WHEN NOT MATCHED THEN INSERT ("EMPLOYEE_ID", "CITY", "SALARY", "HIRED") '
        'VALUES (s."EMPLOYEE_ID", s."CITY", s."SALARY", s."HIRED")'
    )
    merge_call = next(c for c in conn.calls if c[0] == "execute" and c[1].startswith("MERGE"))
    assert merge_call[2] == {"lo": 0, "hi": 2, "skip": "Y"}
    # The counts run before the MERGE, with the same binds.
    kinds = [c[1][:12] for c in conn.calls if c[0] == "execute"]
    assert kinds.index("SELECT COUNT") < kinds.index('MERGE INTO "')

    [(_, sql, rows, batcherrors)] = [c for c in conn.calls if c[0] == "executemany"]
    assert (
        sql
        == f'INSERT INTO "{stg}" ("ADU_RN", "EMPLOYEE_ID", "CITY", "SALARY", "HIRED") VALUES (:1, :2, :3, :4, :5)'
    )
    assert batcherrors is True
    # Proper Python types: Decimal for NUMBER, naive UTC datetime for DATE (no TO_DATE needed), None for NULL.
    assert rows == [
        (0, 1, "Oslo", Decimal("100.50"), dt.datetime(2026, 1, 2, 10, 0)),
        (1, 2, "Bergen", Decimal("200.00"), None),
        (2, 3, None, None, dt.datetime(2026, 3, 4)),
    ]
    import oracledb

    sizes = next(c[1] for c in conn.calls if c[0] == "setinputsizes")
    assert sizes == (
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_NUMBER,
        6,
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_TIMESTAMP,
    )
    assert conn.calls[-1] == ("commit",)
    assert f'DELETE FROM "{stg}"' in conn.sql()
    assert not any("TRUNCATE" in s for s in conn.sql())


def test_batch_errors_become_error_rows_with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ora, "MAX_ROWS_PER_CALL", 2)  # force two executemany calls: offsets are per call
    conn = FakeConnection()
    conn.batch_errors = [
        [],
        [BatchError(0, 'ORA-12899: value too large for column "CITY" (actual: 20, maximum: 10)')],
    ]
    conn.counts = [(2, 0, 0)]
    conn.merge_rowcount = 2
    result = upsert(DestinationConfig.model_validate(DEST), data(), run_id="r2", connection=conn)
    calls = [c for c in conn.calls if c[0] == "executemany"]
    assert [len(c[2]) for c in calls] == [2, 1] and all(c[3] is True for c in calls)
    assert (result.inserted, result.errors) == (2, 1)
    [err] = pq.read_table(result.error_rows_path).to_pylist()
    assert err["ADU_KEY"] == "EMPLOYEE_ID=3" and err["ADU_REASON"].startswith("ORA-12899")


def test_prechecks_keep_bad_values_out_of_the_bind() -> None:
    conn = FakeConnection()
    conn.counts = [(1, 0, 0)]
    conn.merge_rowcount = 1
    bad = pa.table({"EMPLOYEE_ID": pa.array([1, None, 3], pa.int64()), "CITY": ["Oslo", "x", "Ålesund-øst"]})
    result = upsert(DestinationConfig.model_validate(DEST), bad, run_id="r3", connection=conn)
    [(_, _, rows, _)] = [c for c in conn.calls if c[0] == "executemany"]
    assert rows == [(0, 1, "Oslo")]
    reasons = {r["ADU_KEY"]: r["ADU_REASON"] for r in pq.read_table(result.error_rows_path).to_pylist()}
    assert reasons == {
        "EMPLOYEE_ID=None": "key column EMPLOYEE_ID is null",
        # VARCHAR2(10 BYTE): "Ålesund-øst" is 11 characters but 13 bytes.
        "EMPLOYEE_ID=3": "value too long: HR.EMPLOYEES.CITY allows 10 bytes",
    }


def test_merge_failure_is_bisected_under_savepoints() -> None:
    conn = FakeConnection()
    conn.merge_failures = {1: "ORA-02291: integrity constraint (HR.FK_CITY) violated - parent key not found"}
    conn.counts = [(1, 0, 0)] * 10
    conn.merge_rowcount = 1
    result = upsert(DestinationConfig.model_validate(DEST), data(), run_id="r4", connection=conn)
    assert (result.inserted, result.errors) == (2, 1)
    [err] = pq.read_table(result.error_rows_path).to_pylist()
    assert err["ADU_KEY"] == "EMPLOYEE_ID=2" and "ORA-02291" in err["ADU_REASON"]
    merges = [c[2] for c in conn.calls if c[0] == "execute" and c[1].startswith("MERGE")]
    assert [(m["lo"], m["hi"]) for m in merges] == [(0, 2), (0, 0), (1, 2), (1, 1), (2, 2)]
    assert conn.sql().count("ROLLBACK TO SAVEPOINT ADU_PIECE") == 3
    assert conn.sql().count("SAVEPOINT ADU_PIECE") == 5


def test_missing_column_fails_before_any_write() -> None:
    conn = FakeConnection()
    extra = data().append_column("COLOUR", pa.array(["r", "g", "b"]))
    with pytest.raises(DestinationError, match=r"HR\.EMPLOYEES has no column 'COLOUR'"):
        upsert(DestinationConfig.model_validate(DEST), extra, run_id="r5", connection=conn)
    assert [c[1] for c in conn.calls if c[0] == "execute"] == [ora.CATALOG_SQL]
    conn.catalog = []
    with pytest.raises(DestinationError, match="HR.EMPLOYEES does not exist"):
        upsert(DestinationConfig.model_validate(DEST), data(), run_id="r6", connection=conn)


def test_insert_mode_uses_insert_select() -> None:
    conn = FakeConnection()
    dest = DestinationConfig.model_validate({**DEST, "mode": "insert", "skip_when": None})
    upsert(dest, data(), run_id="r7", connection=conn)
    [ins] = [s for s in conn.sql() if s.startswith('INSERT INTO "HR"')]
    assert re.fullmatch(
        r'INSERT INTO "HR"\."EMPLOYEES" \("EMPLOYEE_ID", "CITY", "SALARY", "HIRED"\) SELECT "EMPLOYEE_ID", "CITY", '
        r'"SALARY", "HIRED" FROM "ADU_STG_[0-9A-F]{12}" WHERE "ADU_RN" BETWEEN :lo AND :hi',
        ins,
    )
    assert not any(s.startswith("MERGE") for s in conn.sql())


# --- a real Oracle server -------------------------------------------------------------------------

ORACLE_DSN = os.environ.get("ADU_TEST_ORACLE_DSN")
real = pytest.mark.skipif(not ORACLE_DSN, reason="set ADU_TEST_ORACLE_DSN=user/password@host:port/service")


@pytest.fixture
def oracle_dest(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    assert ORACLE_DSN
    creds, _, address = ORACLE_DSN.partition("@")
    user, _, password = creds.partition("/")
    hostport, _, service = address.partition("/")
    host, _, port = hostport.partition(":")
    monkeypatch.setenv("ADU_TEST_ORACLE_PASSWORD", password)
    import oracledb

    with oracledb.connect(user=user, password=password, dsn=address) as c, c.cursor() as cur:
        for stmt in ("DROP TABLE ADU_T_ORDERS PURGE", "DROP TABLE ADU_T_ORDERS_ERR PURGE"):
            try:
                cur.execute(stmt)
            except oracledb.DatabaseError:
                pass
        cur.execute(
            "CREATE TABLE ADU_T_ORDERS (ORDER_ID NUMBER PRIMARY KEY, ITEM VARCHAR2(8) NOT NULL, "
            "QTY NUMBER CHECK (QTY > 0), PROCESSED CHAR(1) DEFAULT 'N')"
        )
        cur.executemany(
            "INSERT INTO ADU_T_ORDERS VALUES (:1, :2, :3, :4)",
            [(1, "apple", 1, "N"), (2, "pear", 2, "Y"), (3, "plum", 3, "N")],
        )
        c.commit()
    return {
        "connection": {
            "kind": "oracle",
            "host": host,
            "port": int(port or 1521),
            "service": service,
            "user": user,
            "password_env": "ADU_TEST_ORACLE_PASSWORD",
        },
        "table": "ADU_T_ORDERS",
        "mode": "upsert",
        "keys": ["ORDER_ID"],
        "skip_when": {"column": "PROCESSED", "equals": "Y"},
    }


@pytest.mark.oracle
@real
def test_real_oracle_upsert_skip_unchanged_idempotent(oracle_dest: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(oracle_dest)
    t = pa.table({"ORDER_ID": [1, 2, 3, 4], "ITEM": ["apple", "PEAR", "plum2", "kiwi"], "QTY": [1, 9, 3, 4]})
    first = upsert(dest, t, run_id="o1")
    assert (first.inserted, first.updated, first.unchanged, first.skipped, first.errors) == (1, 1, 1, 1, 0)
    second = upsert(dest, t, run_id="o2")
    assert (second.inserted, second.updated, second.unchanged, second.skipped) == (0, 0, 3, 1)


@pytest.mark.oracle
@real
def test_real_oracle_bad_rows_isolated(oracle_dest: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate({**oracle_dest, "error_table": "ADU_T_ORDERS_ERR"})
    t = pa.table(
        {"ORDER_ID": [10, 11, 12, 13], "ITEM": ["ok", "much-too-long", None, "ok"], "QTY": [1, 1, 1, -1]}
    )
    result = upsert(dest, t, run_id="o3")
    assert (result.inserted, result.errors) == (1, 3)
    import oracledb

    c = dest.connection
    with (
        oracledb.connect(
            user=c.user, password=c.resolve_password(), dsn=f"{c.host}:{c.resolved_port}/{c.service}"
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute('SELECT "ADU_KEY" FROM ADU_T_ORDERS_ERR ORDER BY 1')
        assert [r[0] for r in cur.fetchall()] == ["ORDER_ID=11", "ORDER_ID=12", "ORDER_ID=13"]


@pytest.mark.oracle
@real
def test_real_oracle_missing_column(oracle_dest: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(oracle_dest)
    with pytest.raises(DestinationError, match="has no column 'COLOUR'"):
        upsert(dest, pa.table({"ORDER_ID": [9], "COLOUR": ["red"]}), run_id="o4")
