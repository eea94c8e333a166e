"""Oracle (python-oracledb, thin mode): array-bind into a global temporary staging table, then one MERGE per batch.

- The staging table is created once per (target, column list) as `CREATE GLOBAL TEMPORARY TABLE ... AS SELECT ...
  WHERE 1 = 0`, so it has the target's types, lengths and NOT NULL constraints. Array-binding into it with
  `executemany(..., batcherrors=True)` makes the server reject exactly the rows that do not fit (ORA-12899 value too
  large, ORA-01400 NULL, ORA-01438 precision), each reported by offset, while the rest load.
- batcherrors reports at most 65,535 errors per call, so a call never carries more rows than that.
- A bad *Python* value fails the whole call rather than one row (PERFORMANCE.md), so values are bound as the types
  Oracle expects: datetime/date/Decimal straight from Arrow, time zones normalized to UTC, and setinputsizes() set
  from the Arrow schema so a leading NULL does not fix a column's bind type.
- Counts come from one query against staging and target before the MERGE, using the same predicates.
  Oracle has no IS DISTINCT FROM; DECODE treats two NULLs as equal, which is the comparison needed.
- CHECK, foreign-key and other unique-constraint violations appear only in the MERGE; they are isolated by bisection
  under savepoints (base.py). The load is one transaction: DDL (staging, error table) runs before any data is written,
  because Oracle commits implicitly around DDL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adu_assets.io_managers.upsert.base import (
    ERROR_COLUMNS,
    RN,
    Counts,
    DbApiTransactions,
    DestinationConfig,
    DestinationError,
    Dialect,
    Plan,
    Rejects,
    TargetColumn,
    split_table,
)
from adu_assets.secrets import redact, scrub_exception
from adu_assets.sources.catalog import quote_ident as q

MAX_ROWS_PER_CALL = 65_535  # batcherrors keeps at most this many errors per executemany call
STAGE_RN = "ADU_RN"

CATALOG_SQL = (
    "SELECT OWNER, TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHAR_LENGTH, CHAR_USED, NULLABLE "
    "FROM ALL_TAB_COLUMNS "
    "WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA')) AND TABLE_NAME IN (:name, UPPER(:name)) "
    "ORDER BY CASE WHEN TABLE_NAME = :name THEN 0 ELSE 1 END, COLUMN_ID"
)
TABLE_EXISTS_SQL = (
    "SELECT COUNT(*) FROM ALL_TABLES WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA')) "
    "AND TABLE_NAME = :name"
)
CHAR_TYPES = {"VARCHAR2", "NVARCHAR2", "CHAR", "NCHAR", "VARCHAR"}


def connect(dest: DestinationConfig) -> Any:
    import oracledb

    c = dest.connection
    try:
        return oracledb.connect(
            **c.driver_options(),  # checked at load: none of them can re-point the connection
            user=c.user,
            password=c.resolve_password(),
            dsn=f"{c.host}:{c.resolved_port}/{c.service}",
        )
    except Exception as e:
        raise scrub_exception(e, f"cannot connect to {c.describe()}") from None


def merge_sql(plan: Plan, target: str, stage: str, skip_col: str | None) -> str:
    keys = [q(plan.target_name(k)) for k in plan.keys]
    vals = [q(plan.target_name(v)) for v in plan.values]
    cols = [q(plan.target_name(c)) for c in plan.columns]
    lines = [
        f"MERGE INTO {target} t",
        f"USING (SELECT {', '.join(cols)} FROM {stage} WHERE {q(STAGE_RN)} BETWEEN :lo AND :hi) s",
        f"ON ({' AND '.join(f't.{k} = s.{k}' for k in keys)})",
    ]
    if vals:
        guard = [f"DECODE(t.{q(skip_col)}, :skip, 1, 0) = 0"] if skip_col else []
        guard.append("(" + " OR ".join(f"DECODE(t.{v}, s.{v}, 0, 1) = 1" for v in vals) + ")")
        lines.append(f"WHEN MATCHED THEN UPDATE SET {', '.join(f't.{v} = s.{v}' for v in vals)}")
        lines.append(f"  WHERE {' AND '.join(guard)}")
    lines.append(
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join(f's.{c}' for c in cols)})"
    )
    return "\n".join(lines)


def count_sql(plan: Plan, target: str, stage: str, skip_col: str | None) -> str:
    keys = [q(plan.target_name(k)) for k in plan.keys]
    vals = [q(plan.target_name(v)) for v in plan.values]
    cols = [q(plan.target_name(c)) for c in plan.columns]
    is_skip = f"DECODE(t.{q(skip_col)}, :skip, 1, 0) = 1" if skip_col else "1 = 0"
    not_skip = f"DECODE(t.{q(skip_col)}, :skip, 1, 0) = 0" if skip_col else "1 = 1"
    changed = "(" + " OR ".join(f"DECODE(t.{v}, s.{v}, 0, 1) = 1" for v in vals) + ")" if vals else "1 = 0"
    return "\n".join(
        [
            "SELECT COUNT(CASE WHEN t.ADU_M IS NULL THEN 1 END),",
            f"  COUNT(CASE WHEN t.ADU_M = 1 AND {is_skip} THEN 1 END),",
            f"  COUNT(CASE WHEN t.ADU_M = 1 AND {not_skip} AND {changed} THEN 1 END)",
            f"FROM (SELECT {', '.join(cols)} FROM {stage} WHERE {q(STAGE_RN)} BETWEEN :lo AND :hi) s",
            f"LEFT JOIN (SELECT x.*, 1 AS ADU_M FROM {target} x) t ON ({' AND '.join(f't.{k} = s.{k}' for k in keys)})",
        ]
    )


class OracleUpsert(DbApiTransactions, Dialect):
    def __init__(self, dest: DestinationConfig, log: logging.Logger, conn: Any | None = None) -> None:
        super().__init__(dest, log)
        self._own = conn is None
        self.conn = conn if conn is not None else connect(dest)
        self.plan: Plan | None = None
        self.stage_table = ""
        self.sql_stage = ""
        self.sql_count = ""
        self.sql_write = ""
        self.skip_bind: dict[str, Any] = {}
        self.error_target: str | None = None

    def catalog(self) -> tuple[str | None, str, list[TargetColumn]]:
        owner, name = split_table(self.dest.table)
        with self.conn.cursor() as cur:
            cur.execute(CATALOG_SQL, {"owner": owner.upper() if owner else None, "name": name})
            rows = cur.fetchall()
        if not rows:
            raise DestinationError(
                f"destination table {self.dest.table} does not exist (or is not visible in ALL_TAB_COLUMNS) in "
                f"{self.dest.connection.describe()}"
            )
        found_owner, found_table = rows[0][0], rows[0][1]
        cols = []
        for r in rows:
            if r[1] != found_table:
                continue
            dtype = str(r[3])
            is_char = dtype in CHAR_TYPES
            cols.append(
                TargetColumn(
                    name=r[2],
                    type=dtype,
                    nullable=r[6] == "Y",
                    max_length=int(r[4]) if is_char and r[4] else None,
                    length_in_bytes=is_char and r[5] == "B",
                )
            )
        # Keep the owner only when the YAML named one: unqualified SQL then resolves like the user's own session.
        return (found_owner if owner else None), found_table, cols

    def _exists(self, owner: str | None, name: str) -> bool:
        with self.conn.cursor() as cur:
            cur.execute(TABLE_EXISTS_SQL, {"owner": owner, "name": name})
            row = cur.fetchone()
        return bool(row and row[0])

    def prepare(self, plan: Plan, schema: pa.Schema) -> None:
        self.plan = plan
        target = f"{q(plan.schema)}.{q(plan.table)}" if plan.schema else q(plan.table)
        tcols = [q(plan.target_name(c)) for c in plan.columns]
        # One staging table per target and column list; the name stays within Oracle's 30-character limit of
        # older releases.
        digest = hashlib.sha1(f"{plan.qualified_label()}|{'|'.join(tcols)}".encode()).hexdigest()[:12].upper()
        self.stage_table = f"ADU_STG_{digest}"
        stage = q(self.stage_table)
        ddl = []
        if not self._exists(None, self.stage_table):
            ddl.append(
                f"CREATE GLOBAL TEMPORARY TABLE {stage} ON COMMIT DELETE ROWS AS "  # noqa: S608
                f"SELECT CAST(NULL AS NUMBER(19)) AS {q(STAGE_RN)}, {', '.join(f't.{c}' for c in tcols)} "
                f"FROM {target} t WHERE 1 = 0"
            )
        if self.dest.error_table:
            e_owner, e_name = split_table(self.dest.error_table)
            self.error_target = f"{q(e_owner)}.{q(e_name)}" if e_owner else q(e_name)
            if not self._exists(e_owner, e_name):
                types = {
                    "ADU_RUN_ID": "VARCHAR2(128)",
                    "ADU_REJECTED_AT": "TIMESTAMP",
                    "ADU_TABLE": "VARCHAR2(261)",
                    "ADU_KEY": "VARCHAR2(4000)",
                    "ADU_REASON": "VARCHAR2(4000)",
                    "ADU_ROW": "CLOB",
                }
                ddl.append(
                    f"CREATE TABLE {self.error_target} "
                    f"({', '.join(f'{q(c)} {types[c]}' for c in ERROR_COLUMNS)})"
                )
        with self.conn.cursor() as cur:
            for stmt in ddl:
                cur.execute(stmt)
        self.sql_stage = (
            f"INSERT INTO {stage} ({q(STAGE_RN)}, {', '.join(tcols)}) "  # noqa: S608
            f"VALUES ({', '.join(f':{i + 1}' for i in range(len(tcols) + 1))})"
        )
        skip_col = plan.skip_target_column() if self.dest.mode == "upsert" else None
        if skip_col is not None and self.dest.skip_when is not None:
            self.skip_bind = {"skip": self.dest.skip_when.equals}
        if self.dest.mode == "insert":
            self.sql_count = ""
            self.sql_write = (
                f"INSERT INTO {target} ({', '.join(tcols)}) SELECT {', '.join(tcols)} "  # noqa: S608
                f"FROM {stage} WHERE {q(STAGE_RN)} BETWEEN :lo AND :hi"
            )
        else:
            self.sql_count = count_sql(plan, target, stage, skip_col)
            self.sql_write = merge_sql(plan, target, stage, skip_col)

    def _bind_columns(self, batch: pa.Table) -> tuple[list[pa.ChunkedArray], list[Any]]:
        import oracledb

        plan = self.plan
        assert plan is not None
        arrays: list[pa.ChunkedArray] = []
        sizes: list[Any] = []
        for name in [RN, *plan.columns]:
            col = batch.column(name)
            t = col.type
            target_type = plan.targets[name].type if name in plan.targets else "NUMBER"
            if pa.types.is_timestamp(t):
                if t.tz:
                    col = pc.cast(
                        col, pa.timestamp(t.unit)
                    )  # the UTC wall time; Oracle TIMESTAMP keeps no zone
                sizes.append(oracledb.DB_TYPE_TIMESTAMP)
            elif pa.types.is_date(t):
                sizes.append(oracledb.DB_TYPE_DATE)
            elif pa.types.is_boolean(t) and target_type == "NUMBER":
                col = pc.cast(col, pa.int8())  # before 23ai, Oracle has no BOOLEAN to bind to a NUMBER(1)
                sizes.append(oracledb.DB_TYPE_NUMBER)
            elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
                sizes.append(oracledb.DB_TYPE_NUMBER)
            elif pa.types.is_string(t):
                longest = pc.max(pc.binary_length(col)).as_py() if len(col) else None
                sizes.append(max(1, int(longest or 1)))
            else:
                sizes.append(None)
            arrays.append(col)
        return arrays, sizes

    def stage(self, batch: pa.Table, encoded: Any = None) -> Rejects:
        rejects = Rejects()
        arrays, sizes = self._bind_columns(batch)
        rns = batch.column(RN).to_numpy()
        with self.conn.cursor() as cur:
            for start in range(0, batch.num_rows, MAX_ROWS_PER_CALL):
                stop = min(start + MAX_ROWS_PER_CALL, batch.num_rows)
                # Column-wise to_pylist yields datetime/date/Decimal objects, the bind types oracledb wants.
                rows = list(zip(*[a.slice(start, stop - start).to_pylist() for a in arrays], strict=True))
                cur.setinputsizes(*sizes)
                cur.executemany(self.sql_stage, rows, batcherrors=True)
                for err in cur.getbatcherrors():
                    rejects.add(
                        np.array([rns[start + int(err.offset)]]), redact(str(getattr(err, "message", err)))
                    )
        return rejects

    @contextmanager
    def piece(self) -> Iterator[None]:
        with self.conn.cursor() as cur:
            cur.execute("SAVEPOINT ADU_PIECE")
        try:
            yield
        except BaseException:
            with self.conn.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT ADU_PIECE")
            raise

    def apply(self, lo: int, hi: int) -> Counts:
        binds = {"lo": lo, "hi": hi}
        with self.conn.cursor() as cur:
            if self.dest.mode == "insert":
                cur.execute(self.sql_write, binds)
                return Counts(inserted=int(cur.rowcount))
            cur.execute(self.sql_count, {**binds, **self.skip_bind})
            ins, skipped, upd = cur.fetchone()
            cur.execute(self.sql_write, {**binds, **self.skip_bind})
            if int(cur.rowcount) != int(ins) + int(upd):
                self.log.warning(
                    "MERGE into %s touched %s rows, expected %s (concurrent writer?)",
                    self.dest.table,
                    cur.rowcount,
                    int(ins) + int(upd),
                )
        return Counts(inserted=int(ins), updated=int(upd), skipped=int(skipped))

    def end_batch(self) -> None:
        # DELETE, not TRUNCATE: TRUNCATE is DDL and would commit the load's transaction.
        with self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {q(self.stage_table)}")  # noqa: S608

    def write_error_table(self, name: str, rows: pa.Table) -> str:
        assert self.error_target is not None
        cols = ", ".join(q(c) for c in ERROR_COLUMNS)
        marks = ", ".join(f":{i + 1}" for i in range(len(ERROR_COLUMNS)))
        data = list(zip(*[rows.column(c).to_pylist() for c in ERROR_COLUMNS], strict=True))
        with self.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.error_target} ({cols}) VALUES ({marks})", data)  # noqa: S608
        return name
