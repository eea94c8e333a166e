"""DuckDB: the Arrow batch is registered (zero copy) and copied into a TEMP staging table, then one MERGE INTO.

MERGE (DuckDB >= 1.4) needs no unique index on the keys, unlike ON CONFLICT, and takes the same guard as PostgreSQL:
skip rows whose existing target row matches skip_when, and leave identical rows alone.

DuckDB has TRY_CAST, so type errors are found set-based before the write; CHECK constraints are evaluated from
duckdb_constraints() the same way. DuckDB has no savepoints: each batch is its own transaction, and when a batch
still fails, its bisected pieces are too (an upsert re-run converges, so this keeps idempotence).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from adu_assets.io_managers.upsert.base import (
    ERROR_COLUMNS,
    RN,
    Counts,
    DestinationConfig,
    DestinationError,
    Dialect,
    Plan,
    Rejects,
    TargetColumn,
    split_table,
)
from adu_assets.secrets import scrub_exception
from adu_assets.sources.catalog import quote_ident as q

STAGE = "adu_upsert_stage"


def connect(dest: DestinationConfig) -> Any:
    import duckdb

    path = dest.connection.resolved_path
    if not path.exists():
        raise DestinationError(f"DuckDB destination file {path} does not exist (connection.path)")
    try:
        return duckdb.connect(str(path))
    except Exception as e:
        raise scrub_exception(e, f"cannot open {dest.connection.describe()}") from None


class DuckDBUpsert(Dialect):
    def __init__(self, dest: DestinationConfig, log: logging.Logger, conn: Any | None = None) -> None:
        super().__init__(dest, log)
        self._own = conn is None
        self.conn = conn if conn is not None else connect(dest)
        self.conn.execute("SET TimeZone = 'UTC'")
        self.plan: Plan | None = None
        self.sql_count = ""
        self.sql_write = ""
        self.params: dict[str, Any] = {}
        self.checks: list[tuple[str, str]] = []
        self.casts: list[tuple[str, str]] = []
        self._view = f"adu_arrow_{uuid.uuid4().hex[:8]}"

    def catalog(self) -> tuple[str | None, str, list[TargetColumn]]:
        schema, name = split_table(self.dest.table)
        rows = self.conn.execute(
            """
            SELECT table_schema, table_name, column_name, data_type, is_nullable, character_maximum_length
            FROM information_schema.columns
            WHERE table_catalog = current_database() AND table_schema = COALESCE(?, current_schema())
              AND lower(table_name) = lower(?)
            ORDER BY table_name = ? DESC, ordinal_position
            """,
            [schema, name, name],
        ).fetchall()
        if not rows:
            raise DestinationError(
                f"destination table {self.dest.table} does not exist in {self.dest.connection.describe()}"
            )
        found_schema, found_table = rows[0][0], rows[0][1]
        cols = [
            TargetColumn(name=r[2], type=r[3], nullable=r[4] == "YES", cast_type=r[3])
            for r in rows
            if r[1] == found_table
        ]
        # DuckDB accepts VARCHAR(n) but does not enforce n, so no length pre-check is made for it.
        return found_schema, found_table, cols

    def target_sql(self, plan: Plan) -> str:
        return f"{q(plan.schema)}.{q(plan.table)}" if plan.schema else q(plan.table)

    def prepare(self, plan: Plan, schema: pa.Schema) -> None:
        self.plan = plan
        target = self.target_sql(plan)
        empty = pa.schema([schema.field(c) for c in plan.columns] + [pa.field(RN, pa.int64())]).empty_table()
        self.conn.register(self._view, empty)
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM {self._view} LIMIT 0")  # noqa: S608
        staged_types = {r[0]: r[1] for r in self.conn.execute(f"DESCRIBE {STAGE}").fetchall()}

        def expr(c: str) -> str:
            tc = plan.targets[c]
            if staged_types.get(c) != tc.type:
                self.casts.append((c, tc.type))
                return f"CAST(s.{q(c)} AS {tc.type})"
            return f"s.{q(c)}"

        src = (
            f"SELECT {', '.join(f'{expr(c)} AS {q(plan.target_name(c))}' for c in plan.columns)} "  # noqa: S608
            f"FROM {STAGE} s WHERE s.{q(RN)} BETWEEN $lo AND $hi"
        )
        tcols = [q(plan.target_name(c)) for c in plan.columns]
        if self.dest.mode == "insert":
            self.sql_count = ""
            self.sql_write = (
                f"INSERT INTO {target} ({', '.join(tcols)}) SELECT {', '.join(tcols)} FROM ({src})"  # noqa: S608
            )
        else:
            keys = [q(plan.target_name(k)) for k in plan.keys]
            vals = [q(plan.target_name(v)) for v in plan.values]
            on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
            skip_col = plan.skip_target_column()
            is_skip = "FALSE"
            if skip_col is not None and self.dest.skip_when is not None:
                self.params["skip"] = self.dest.skip_when.equals
                is_skip = f"(t.{q(skip_col)} = $skip) IS TRUE"
            changed = (
                f"({', '.join(f't.{v}' for v in vals)}) IS DISTINCT FROM ({', '.join(f's.{v}' for v in vals)})"
                if vals
                else "FALSE"
            )
            # Counted before the write, in the same transaction, with the same predicates as the MERGE: DuckDB has
            # one writer per file, so these are the exact numbers of what the MERGE does.
            self.sql_count = (
                f"SELECT count(*) FILTER (WHERE t.adu_m IS NULL), "  # noqa: S608
                f"count(*) FILTER (WHERE t.adu_m AND {is_skip}), "
                f"count(*) FILTER (WHERE t.adu_m AND NOT ({is_skip}) AND {changed}) "
                f"FROM ({src}) s LEFT JOIN (SELECT *, TRUE AS adu_m FROM {target}) t ON {on}"
            )
            matched = ""
            if vals:
                matched = (
                    f"WHEN MATCHED AND NOT ({is_skip}) AND {changed} THEN UPDATE SET "
                    f"{', '.join(f'{v} = s.{v}' for v in vals)} "
                )
            self.sql_write = (
                f"MERGE INTO {target} t USING ({src}) s ON ({on}) {matched}"  # noqa: S608
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(tcols)}) VALUES ({', '.join(f's.{c}' for c in tcols)})"
            )
        try:
            self.conn.execute(f"EXPLAIN {self.sql_write}", {"lo": 0, "hi": 0, **self.params})
            if self.sql_count:
                self.conn.execute(f"EXPLAIN {self.sql_count}", {"lo": 0, "hi": 0, **self.params})
        except Exception as e:
            raise DestinationError(
                f"destination table {plan.qualified_label()} cannot take the input columns: {self.error_message(e)}"
            ) from None
        self.checks = [
            (str(r[0]), str(r[1]))
            for r in self.conn.execute(
                "SELECT constraint_name, expression FROM duckdb_constraints() WHERE constraint_type = 'CHECK' "
                "AND database_name = current_database() AND schema_name = ? AND table_name = ?",
                [plan.schema or "main", plan.table],
            ).fetchall()
            if r[1]
        ]

    def stage(self, batch: pa.Table, encoded: Any = None) -> Rejects:
        plan = self.plan
        assert plan is not None
        self.conn.register(self._view, batch)
        self.conn.execute(f"INSERT INTO {STAGE} SELECT * FROM {self._view}")  # noqa: S608
        self.conn.unregister(self._view)
        rejects = Rejects()
        for c, typ in self.casts:
            rows = self.conn.execute(
                f"DELETE FROM {STAGE} WHERE {q(c)} IS NOT NULL AND TRY_CAST({q(c)} AS {typ}) IS NULL "  # noqa: S608
                f"RETURNING {q(RN)}"
            ).fetchall()
            if rows:
                rejects.add(
                    np.array([r[0] for r in rows]),
                    f"type: {plan.qualified_label()}.{plan.target_name(c)} is {typ}; the value does not convert",
                )
        for name, expr in self.checks:
            try:
                rows = self.conn.execute(
                    f"DELETE FROM {STAGE} WHERE NOT ({expr}) RETURNING {q(RN)}"  # noqa: S608
                ).fetchall()
            except Exception:
                continue  # a CHECK over columns that are not in the input: left to bisection
            if rows:
                rejects.add(
                    np.array([r[0] for r in rows]),
                    f"CHECK constraint {name} of {plan.qualified_label()} violated: {expr}",
                )
        return rejects

    @contextmanager
    def piece(self) -> Iterator[None]:
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def apply(self, lo: int, hi: int) -> Counts:
        params = {"lo": lo, "hi": hi, **self.params}
        if self.dest.mode == "insert":
            return Counts(inserted=int(self.conn.execute(self.sql_write, params).fetchone()[0]))
        ins, skipped, upd = self.conn.execute(self.sql_count, params).fetchone()
        self.conn.execute(self.sql_write, params)
        return Counts(inserted=int(ins), updated=int(upd), skipped=int(skipped))

    def end_batch(self) -> None:
        self.conn.execute(f"DELETE FROM {STAGE}")

    def write_error_table(self, name: str, rows: pa.Table) -> str:
        schema, table = split_table(name)
        if schema is None and self.plan is not None:
            schema = self.plan.schema
        target = f"{q(schema)}.{q(table)}" if schema else q(table)
        ddl = ", ".join(
            f"{q(c)} {'TIMESTAMP' if c == 'ADU_REJECTED_AT' else 'VARCHAR'}" for c in ERROR_COLUMNS
        )
        view = f"adu_err_{uuid.uuid4().hex[:8]}"
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {target} ({ddl})")
        self.conn.register(view, rows)
        cols = ", ".join(q(c) for c in ERROR_COLUMNS)
        self.conn.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {view}")  # noqa: S608
        self.conn.unregister(view)
        return f"{schema}.{table}" if schema else table

    def commit(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {STAGE}")

    def rollback(self) -> None:
        try:
            self.conn.execute(f"DROP TABLE IF EXISTS {STAGE}")
        except Exception:
            self.log.debug("staging cleanup failed")

    def close(self) -> None:
        if self._own:
            self.conn.close()
