"""PostgreSQL: COPY Arrow batches into a TEMP staging table, then one INSERT ... ON CONFLICT per batch.

Measured (PERFORMANCE.md): COPY + one guarded ON CONFLICT statement runs at 106-149k rows/s against 7.7k for
row-by-row and 37k for executemany; the `IS DISTINCT FROM` guard saves rewriting identical rows (n_tup_upd equals
the changed rows only), which is most of the win on re-runs.

Staging columns take their types from the Arrow schema, not from the target, so COPY itself never fails on a bad
value (a text "abc" for an integer column, an over-long string, an int64 too big for int4). Conversion to the target
type happens in the INSERT: explicit casts where the staged type is text and the target is not, assignment casts
otherwise (assignment casts raise on overflow and on over-long varchar, where an explicit cast would truncate).
CHECK constraints are evaluated set-based against the staging table before the upsert; anything still refused is
isolated by bisection (see base.py).

The whole load is one transaction (each statement under a savepoint), so a crash leaves the table as it was.
Durability is untouched: no synchronous_commit or UNLOGGED tricks on the target.

Speed (bench/bench_upsert.py, 1.5M rows, half updates, skip on; measured against a hand-written COPY + guarded
ON CONFLICT in the same run): ~1.05-1.15x its time. What it took, each measured on its own:
- The INSERT reads the staging table directly. A CTE over it is materialized (and spills past work_mem): +30-40%.
- Skipped rows are counted inside the ON CONFLICT WHERE (a transaction-local counter, see COUNT_SKIP), not by a
  second probe of the target's key index per staged row (+30-45% on the statement).
- The happy-path statement has no RN filter; bisection adds `RN BETWEEN lo AND hi`.
- 250k-row batches (fewer statements; 500k measured no better), and the next batch is pre-checked and CSV-encoded
  in a background thread while the server writes this one.
- Measured and not worth it: temp_buffers for the staging table, work_mem for the RETURNING CTE, a savepoint-free
  happy path (a savepoint costs nothing measurable), a sequence instead of RETURNING for the insert/update split.
  What remains over the reference is the RETURNING CTE that makes inserted/updated exact (~6% of the statement).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

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
from adu_assets.secrets import scrub_exception
from adu_assets.sources.catalog import quote_ident as q

STAGE = "adu_upsert_stage"
SKIP_COUNTER = "adu_upsert.skipped"  # a transaction-local setting: skipped rows since the last read
_COUNTER_VALUE = f"COALESCE(NULLIF(current_setting('{SKIP_COUNTER}', true), ''), '0')::bigint"
COUNT_SKIP = f"set_config('{SKIP_COUNTER}', ({_COUNTER_VALUE} + 1)::text, true)"
# MATERIALIZED: the value is read before the reset.
READ_AND_RESET_SKIPS = (
    f"WITH r AS MATERIALIZED (SELECT {_COUNTER_VALUE} AS n) "
    f"SELECT n, set_config('{SKIP_COUNTER}', '0', true) FROM r"
)
RANGE = "\x00range\x00"  # where the range filter goes in the statements (absent on the happy path)
TEXT_TYPES = {"text", "character varying", "character", "name", "citext"}


def connect(dest: DestinationConfig) -> Any:
    import psycopg

    c = dest.connection
    # Options first, so the address fields always win (the options were checked at load as well).
    kwargs: dict[str, Any] = {**c.driver_options(), "host": c.host, "port": c.resolved_port}
    kwargs["dbname"] = c.database
    if c.user:
        kwargs["user"] = c.user
    password = c.resolve_password()
    if password:
        kwargs["password"] = password
    try:
        # The password goes as a keyword, never inside a DSN string that could end up in an error message.
        return psycopg.connect(autocommit=False, **kwargs)
    except Exception as e:
        raise scrub_exception(e, f"cannot connect to {c.describe()}") from None


def arrow_to_pg(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "numeric" if t == pa.uint64() else "bigint"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_null(t):
        return "text"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    raise DestinationError(
        f"Arrow type {t} cannot be staged for PostgreSQL; map the column to text, number, boolean, date or timestamp"
    )


class PostgresUpsert(DbApiTransactions, Dialect):
    # 250k rows: per-statement costs are spread thin (measured 15-20% faster than 50k), and the staging table stays
    # around 25-100 MB for ordinary widths. Each batch is Arrow in memory; see DestinationConfig.batch_size.
    default_batch_size = 250_000
    # The source is read by this process only, never through this psycopg connection: safe to read it ahead.
    prefetch = True

    def __init__(self, dest: DestinationConfig, log: logging.Logger, conn: Any | None = None) -> None:
        super().__init__(dest, log)
        self._own = conn is None
        self.conn = conn if conn is not None else connect(dest)
        # Naive timestamps are UTC throughout the project; without this a timestamptz column would read them in the
        # server's zone.
        self.conn.execute("SET TIME ZONE 'UTC'")
        self.plan: Plan | None = None
        self.sql_apply = ""  # the staged rows whose RN is in [lo, hi]
        self.sql_apply_all = ""  # all the staged rows (no RN filter: the planner sees the batch's true size)
        self._staged: tuple[int, int] = (0, -1)  # lowest and highest RN in the staging table
        self._count_skips = False  # skipped rows are counted by COUNT_SKIP inside the upsert's WHERE
        self.params: dict[str, Any] = {}
        self.checks: list[tuple[str, str]] = []

    # -- catalog --
    def catalog(self) -> tuple[str | None, str, list[TargetColumn]]:
        schema, name = split_table(self.dest.table)
        rows = self.conn.execute(
            """
            SELECT table_schema, table_name, column_name, data_type, udt_schema, udt_name, is_nullable,
                   character_maximum_length
            FROM information_schema.columns
            WHERE table_schema = COALESCE(%(schema)s, current_schema())
              AND lower(table_name) = lower(%(name)s)
            ORDER BY table_name = %(name)s DESC, ordinal_position
            """,
            {"schema": schema, "name": name},
        ).fetchall()
        if not rows:
            where = schema or self.conn.execute("SELECT current_schema()").fetchone()[0]
            raise DestinationError(
                f"destination table {self.dest.table} does not exist in schema {where} of "
                f"{self.dest.connection.describe()}"
            )
        found_schema, found_table = rows[0][0], rows[0][1]
        cols = []
        for r in rows:
            if r[1] != found_table:
                continue
            data_type, udt_schema, udt = r[3], r[4], r[5]
            if data_type == "USER-DEFINED":
                cast = f"{q(udt_schema)}.{q(udt)}"
            elif data_type == "ARRAY":
                cast = f"{udt.lstrip('_')}[]"
            else:
                cast = data_type
            cols.append(
                TargetColumn(
                    name=r[2], type=data_type, nullable=r[6] == "YES", max_length=r[7], cast_type=cast
                )
            )
        return found_schema, found_table, cols

    def target_sql(self, plan: Plan) -> str:
        return f"{q(plan.schema)}.{q(plan.table)}" if plan.schema else q(plan.table)

    # -- statements --
    def prepare(self, plan: Plan, schema: pa.Schema) -> None:
        self.plan = plan
        target = self.target_sql(plan)
        staged_types = {c: arrow_to_pg(schema.field(c).type) for c in plan.columns}
        cols_ddl = ", ".join(f"{q(c)} {staged_types[c]}" for c in plan.columns)
        # TEMP: private to the session and not WAL-logged; ON COMMIT DROP cleans up even if we crash mid-load.
        self.conn.execute(f"CREATE TEMP TABLE {STAGE} ({cols_ddl}, {q(RN)} bigint) ON COMMIT DROP")

        def expr(c: str) -> str:
            tc = plan.targets[c]
            if staged_types[c] == "text" and tc.type not in TEXT_TYPES and tc.cast_type:
                return f"CAST(s.{q(c)} AS {tc.cast_type})"
            return f"s.{q(c)}"

        tcols = [q(plan.target_name(c)) for c in plan.columns]
        # The INSERT reads the staging table directly: a CTE over it would be materialized (a second copy of the
        # batch, spilled past work_mem), which measured 30-40% slower.
        select = f"SELECT {', '.join(expr(c) for c in plan.columns)} FROM {STAGE} s"
        insert = f"INSERT INTO {target} AS t ({', '.join(tcols)}) {select}{RANGE}"
        if self.dest.mode == "insert":
            statement = f"WITH w AS ({insert} RETURNING 1) SELECT 0, count(*), 0 FROM w"
        else:
            self._require_unique_key(plan)
            keys = [q(plan.target_name(k)) for k in plan.keys]
            vals = [q(plan.target_name(v)) for v in plan.values]
            skip_col = plan.skip_target_column()
            is_skipped = ""
            if skip_col is not None and self.dest.skip_when is not None:
                self.params["skip"] = self.dest.skip_when.equals
                is_skipped = f"(t.{q(skip_col)} = %(skip)s) IS TRUE"
            skipped = "0"
            if vals:
                # One row comparison, as PERFORMANCE.md measured it: identical rows are not rewritten.
                where = (
                    f"({', '.join(f't.{v}' for v in vals)}) IS DISTINCT FROM "
                    f"({', '.join(f'EXCLUDED.{v}' for v in vals)})"
                )
                if is_skipped:
                    # Skipped rows are counted where they are decided. PostgreSQL evaluates this WHERE exactly once
                    # per conflicting row, on the row version it has locked (a concurrent update makes it retry
                    # before evaluating), and the counter is a transaction-local setting, so a failed savepoint
                    # rolls it back with the rows. A separate probe of the target per staged row cost 30-45% more.
                    where = f"CASE WHEN {is_skipped} THEN {COUNT_SKIP} IS NULL ELSE {where} END"
                    self._count_skips = True
                action = f"DO UPDATE SET {', '.join(f'{v} = EXCLUDED.{v}' for v in vals)} WHERE {where}"
            else:
                action = "DO NOTHING"
                if is_skipped:
                    # Nothing to update, so no WHERE to count in: probe the key index for each staged row.
                    on = " AND ".join(f"t.{q(plan.target_name(k))} = {expr(k)}" for k in plan.keys)
                    skipped = (
                        f"(SELECT count(*) FROM {STAGE} s, LATERAL "  # noqa: S608
                        f"(SELECT 1 FROM {target} t WHERE {on} AND {is_skipped} LIMIT 1) hit{RANGE})"
                    )
            # xmax = 0 only on a freshly inserted tuple: the exact split of RETURNING rows into inserted/updated.
            # Rows held back by the WHERE (skipped or unchanged) return nothing and are not rewritten.
            statement = (
                f"WITH w AS ({insert} ON CONFLICT ({', '.join(keys)}) {action} "  # noqa: S608
                "RETURNING (xmax = 0) AS ins) "
                f"SELECT {skipped}, count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM w"
            )
        # The whole staging table on the happy path; a range of RNs while bisecting.
        self.sql_apply_all = statement.replace(RANGE, "")
        self.sql_apply = statement.replace(RANGE, f" WHERE s.{q(RN)} BETWEEN %(lo)s AND %(hi)s")
        # EXPLAIN plans without running: a type that cannot be assigned, or a missing unique index, is a clear
        # error now, before any row is written.
        try:
            with self.conn.transaction():
                for sql in (self.sql_apply, self.sql_apply_all):
                    self.conn.execute(f"EXPLAIN {sql}", {"lo": 0, "hi": 0, **self.params})
        except Exception as e:
            raise DestinationError(
                f"destination table {plan.qualified_label()} cannot take the input columns: {self.error_message(e)}"
            ) from None
        self.checks = self._check_constraints(plan)
        if self._count_skips:
            self.conn.execute(READ_AND_RESET_SKIPS)

    def _require_unique_key(self, plan: Plan) -> None:
        keys = sorted(plan.target_name(k) for k in plan.keys)
        rows = self.conn.execute(
            """
            SELECT array_agg(a.attname::text ORDER BY a.attname)
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL
            GROUP BY i.indexrelid
            """,
            (self.target_sql(plan),),
        ).fetchall()
        if not any(sorted(r[0]) == keys for r in rows):
            raise DestinationError(
                f"mode upsert needs a primary key or unique constraint on ({', '.join(keys)}) of "
                f"{plan.qualified_label()}; add one, or change destination.keys"
            )

    def _check_constraints(self, plan: Plan) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'c'",
            (self.target_sql(plan),),
        ).fetchall()
        out = []
        for name, definition in rows:
            body = definition.removesuffix(" NOT VALID")
            if body.startswith("CHECK "):
                out.append((name, body[len("CHECK ") :]))
        return out

    # -- per batch --
    def encode(self, batch: pa.Table) -> Any:
        buf = io.BytesIO()
        # pyarrow's CSV writer is vectorized C++; it writes NULL as an empty field and "" as a quoted empty string,
        # which is exactly how COPY's CSV format tells them apart. It runs in the prefetch thread, while the server
        # writes the previous batch.
        pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False, batch_size=8192))
        return buf

    def stage(self, batch: pa.Table, encoded: Any = None) -> Rejects:
        rns = batch.column(RN)
        self._staged = (int(rns[0].as_py()), int(rns[-1].as_py()))  # ascending: the batch keeps input order
        buf = encoded if isinstance(encoded, io.BytesIO) else self.encode(batch)
        cols = ", ".join(q(c) for c in batch.column_names)
        with self.conn.cursor() as cur, cur.copy(f"COPY {STAGE} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            view = buf.getbuffer()
            for i in range(0, len(view), 1 << 20):
                copy.write(view[i : i + (1 << 20)])
        rejects = Rejects()
        plan = self.plan
        assert plan is not None
        for name, expr in self.checks:
            try:
                with self.conn.transaction():
                    # The expression names columns unqualified, so it runs unchanged against the staging table.
                    # A CHECK on a column not in the input cannot be evaluated here: it falls to bisection.
                    rows = self.conn.execute(
                        f"DELETE FROM {STAGE} WHERE NOT ({expr}) RETURNING {q(RN)}"  # noqa: S608
                    ).fetchall()
            except Exception:
                continue
            if rows:
                rejects.add(
                    np.array([r[0] for r in rows]),
                    f"CHECK constraint {name} of {plan.qualified_label()} violated: {expr}",
                )
        return rejects

    @contextmanager
    def piece(self) -> Iterator[None]:
        with self.conn.transaction():  # a savepoint, since the load's transaction is open
            yield

    def apply(self, lo: int, hi: int) -> Counts:
        whole = lo <= self._staged[0] and hi >= self._staged[1]
        if whole:
            row = self.conn.execute(self.sql_apply_all, self.params).fetchone()
        else:
            row = self.conn.execute(self.sql_apply, {"lo": lo, "hi": hi, **self.params}).fetchone()
        skipped = int(row[0])
        if self._count_skips:
            skipped = int(self.conn.execute(READ_AND_RESET_SKIPS).fetchone()[0])
        return Counts(skipped=skipped, inserted=int(row[1]), updated=int(row[2]))

    def end_batch(self) -> None:
        self.conn.execute(f"TRUNCATE {STAGE}")

    def write_error_table(self, name: str, rows: pa.Table) -> str:
        schema, table = split_table(name)
        if schema is None and self.plan is not None:
            schema = self.plan.schema
        target = f"{q(schema)}.{q(table)}" if schema else q(table)
        types = {"ADU_REJECTED_AT": "timestamp"}
        ddl = ", ".join(f"{q(c)} {types.get(c, 'text')}" for c in ERROR_COLUMNS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {target} ({ddl})")
        cols = ", ".join(q(c) for c in ERROR_COLUMNS)
        marks = ", ".join(["%s"] * len(ERROR_COLUMNS))
        with self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {target} ({cols}) VALUES ({marks})",  # noqa: S608
                list(zip(*[rows.column(c).to_pylist() for c in ERROR_COLUMNS], strict=True)),
            )
        return f"{schema}.{table}" if schema else table
