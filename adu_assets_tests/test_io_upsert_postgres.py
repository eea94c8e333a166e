"""The upsert landing layer against a real PostgreSQL server."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adu_assets.io_managers.upsert import (
    DestinationConfig,
    DestinationError,
    UpsertIOManager,
    check_destination_columns,
    upsert,
)
from adu_assets_tests.pg_server import PgServer

CANARY = "canary-pg-7Qx91"


@pytest.fixture
def orders(pg: PgServer, pg_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, Any]:
    monkeypatch.setenv("ADU_DATA_DIR", str(tmp_path / "data"))
    with pg.connect(pg_db) as c:
        c.execute(f"CREATE ROLE writer_{pg_db} LOGIN PASSWORD '{CANARY}'")
        c.execute(f"GRANT ALL ON SCHEMA public TO writer_{pg_db}")
        c.execute(f"SET ROLE writer_{pg_db}")
        c.execute(
            """
            CREATE TABLE customers (id int PRIMARY KEY);
            INSERT INTO customers VALUES (1), (2);
            CREATE TABLE orders (
                order_id   int PRIMARY KEY,
                customer   int REFERENCES customers (id),
                item       varchar(8) NOT NULL,
                qty        int CHECK (qty > 0),
                price      numeric(10, 2),
                ordered_at timestamptz,
                processed  char(1) NOT NULL DEFAULT 'N'
            );
            INSERT INTO orders VALUES
                (1, 1, 'apple', 1, 1.00, '2026-01-01T00:00:00Z', 'N'),
                (2, 1, 'pear',  2, 2.00, '2026-01-01T00:00:00Z', 'Y'),
                (3, 2, 'plum',  3, 3.00, '2026-01-01T00:00:00Z', 'N');
            """
        )
    monkeypatch.setenv("ADU_TEST_PG_PASSWORD", CANARY)
    dest = {
        "connection": {
            "kind": "postgres",
            "host": pg.host,
            "port": pg.port,
            "database": pg_db,
            "user": f"writer_{pg_db}",
            "password_env": "ADU_TEST_PG_PASSWORD",
        },
        "table": "orders",
        "mode": "upsert",
        "keys": ["order_id"],
        "skip_when": {"column": "processed", "equals": "Y"},
    }
    return dest


def rows(pg: PgServer, db: str, sql: str = "SELECT * FROM orders ORDER BY order_id") -> list[tuple[Any, ...]]:
    with pg.connect(db) as c:
        return c.execute(sql).fetchall()


def n_tup_upd(pg: PgServer, db: str) -> int:
    with pg.connect(db) as c:
        c.execute("SELECT pg_stat_force_next_flush()")
    with pg.connect(db) as c:
        return int(
            c.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone()[0]
        )


def incoming(**overrides: Any) -> pa.Table:
    data: dict[str, Any] = {
        "order_id": [1, 2, 3, 4],
        "item": ["apple", "PEAR", "plum2", "kiwi"],  # 1 unchanged, 2 changed but processed, 3 changed, 4 new
        "qty": [1, 9, 3, 4],
    }
    data.update(overrides)
    return pa.table(data)


def test_insert_update_skip_unchanged_exact_counts(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(orders)
    before = n_tup_upd(pg, pg_db)
    result = upsert(dest, incoming(), run_id="run-1")
    assert (result.inserted, result.updated, result.unchanged, result.skipped, result.errors) == (
        1,
        1,
        1,
        1,
        0,
    )
    assert result.rows_in == 4 and result.table == "public.orders"
    got = {r[0]: (r[2], r[3], r[6]) for r in rows(pg, pg_db)}
    assert got == {1: ("apple", 1, "N"), 2: ("pear", 2, "Y"), 3: ("plum2", 3, "N"), 4: ("kiwi", 4, "N")}
    # Unchanged (1) and skipped (2) rows are not rewritten: exactly one tuple update.
    assert n_tup_upd(pg, pg_db) - before == 1


def test_rerun_is_idempotent(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(orders)
    upsert(dest, incoming(), run_id="run-1")
    snapshot = rows(pg, pg_db)
    before = n_tup_upd(pg, pg_db)
    again = upsert(dest, incoming(), run_id="run-2")
    assert (again.inserted, again.updated, again.unchanged, again.skipped, again.errors) == (0, 0, 3, 1, 0)
    assert rows(pg, pg_db) == snapshot
    assert n_tup_upd(pg, pg_db) == before


def test_bad_rows_are_isolated_with_key_and_reason(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate({**orders, "batch_size": 3})
    data = pa.table(
        {
            "order_id": [10, 11, 12, 13, 14, 15, 16],
            "customer": [1, 1, 99, 2, 1, 1, 2],  # 12: foreign key, found only by bisection
            "item": ["ok", "too-long-item", "ok", None, "ok", "ok", "ok"],  # 11: varchar(8), 13: NOT NULL
            "qty": [1, 1, 1, 1, -5, 1, 1],  # 14: CHECK
            "price": pa.array([1, 2, 3, 4, 5, 123456789012, 7], pa.int64()),  # 15: numeric(10,2) overflow
        }
    )
    result = upsert(dest, data, run_id="run-err")
    assert (result.inserted, result.errors) == (2, 5)
    assert [r[0] for r in rows(pg, pg_db)] == [1, 2, 3, 10, 16]
    assert result.error_rows_path is not None
    errs = {r["ADU_KEY"]: r["ADU_REASON"] for r in pq.read_table(result.error_rows_path).to_pylist()}
    assert set(errs) == {"order_id=11", "order_id=12", "order_id=13", "order_id=14", "order_id=15"}
    assert "too long" in errs["order_id=11"] and "item" in errs["order_id=11"]
    assert "foreign key" in errs["order_id=12"]
    assert "NOT NULL" in errs["order_id=13"]
    assert "CHECK" in errs["order_id=14"] and "qty" in errs["order_id=14"]
    assert "numeric field overflow" in errs["order_id=15"]


def test_type_error_from_text_is_isolated_and_error_table(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    dest = DestinationConfig.model_validate({**orders, "error_table": "orders_ADU_ERRORS"})
    data = pa.table(
        {
            "order_id": [20, 21, 22],
            "item": ["a", "b", "c"],
            "ordered_at": ["2026-02-01T10:00:00+01:00", "not a time", None],
        }
    )
    result = upsert(dest, data, run_id="run-types")
    assert (result.inserted, result.errors, result.error_table) == (2, 1, "public.orders_ADU_ERRORS")
    assert rows(
        pg, pg_db, "SELECT order_id, ordered_at::text FROM orders WHERE order_id >= 20 ORDER BY 1"
    ) == [(20, "2026-02-01 09:00:00+00"), (22, None)]
    kept = rows(pg, pg_db, 'SELECT "ADU_RUN_ID", "ADU_KEY", "ADU_REASON" FROM "orders_ADU_ERRORS"')
    assert len(kept) == 1 and kept[0][:2] == ("run-types", "order_id=21")
    assert "invalid input syntax for type timestamp" in kept[0][2]


def test_duplicate_keys_in_one_batch_last_wins(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate(orders)
    result = upsert(dest, pa.table({"order_id": [30, 30, 30], "item": ["x", "y", "z"]}), run_id="dup")
    assert (result.inserted, result.duplicates, result.errors) == (1, 2, 0)
    assert rows(pg, pg_db, "SELECT item FROM orders WHERE order_id = 30") == [("z",)]


def test_insert_mode_appends_and_rejects_existing_keys(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    dest = DestinationConfig.model_validate({**orders, "mode": "insert", "skip_when": None, "keys": []})
    result = upsert(dest, pa.table({"order_id": [3, 40, 41], "item": ["dup", "new", "new"]}), run_id="ins")
    assert (result.inserted, result.errors) == (2, 1)
    errs = pq.read_table(result.error_rows_path).to_pylist()
    assert errs[0]["ADU_KEY"] == "order_id=3" and "duplicate key" in errs[0]["ADU_REASON"]


def test_reader_is_consumed_in_batches(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    dest = DestinationConfig.model_validate({**orders, "batch_size": 1000})
    n = 5000
    table = pa.table(
        {
            "order_id": pa.array(range(100, 100 + n), pa.int32()),
            "item": pa.array([f"i{i % 97}" for i in range(n)]),
        }
    )
    result = upsert(dest, table.to_reader(max_chunksize=700), run_id="big")
    assert (result.inserted, result.rows_in) == (n, n)
    assert rows(pg, pg_db, "SELECT count(*) FROM orders") == [(n + 3,)]


def test_missing_column_is_one_clear_error_before_any_write(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    dest = DestinationConfig.model_validate(orders)
    assert check_destination_columns(dest, ["order_id", "item", "price"]) == {
        "order_id": "integer",
        "item": "character varying",
        "price": "numeric",
    }
    with pytest.raises(DestinationError, match=r"public\.orders has no column 'colour'"):
        check_destination_columns(dest, ["order_id", "colour"])
    with pytest.raises(DestinationError, match=r"public\.orders has no column 'colour'"):
        upsert(dest, pa.table({"order_id": [99], "item": ["x"], "colour": ["red"]}), run_id="x")
    assert rows(pg, pg_db, "SELECT count(*) FROM orders") == [(3,)]
    with pytest.raises(DestinationError, match="destination table nope does not exist"):
        upsert(DestinationConfig.model_validate({**orders, "table": "nope"}), incoming(), run_id="x")


def test_keys_without_unique_constraint_is_a_clear_error(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    dest = DestinationConfig.model_validate({**orders, "keys": ["item"]})
    with pytest.raises(DestinationError, match=r"primary key or unique constraint on \(item\)"):
        upsert(dest, incoming(), run_id="x")


def test_io_manager_materialize_reports_and_hides_password(
    pg: PgServer, pg_db: str, orders: dict[str, Any], dagster_home: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @dg.asset(metadata={"adu/destination": orders}, io_manager_key="upsert")
    def hr_orders() -> pa.Table:
        return incoming()

    caplog.set_level(logging.DEBUG)
    instance = dg.DagsterInstance.get()
    res = dg.materialize([hr_orders], resources={"upsert": UpsertIOManager()}, instance=instance)
    assert res.success
    mats = res.asset_materializations_for_node("hr_orders")
    md = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}
    assert (md["inserted"], md["updated"], md["unchanged"], md["skipped"], md["errors"]) == (1, 1, 1, 1, 0)
    assert md["dagster/row_count"] == 4 and md["dagster/table_name"] == "public.orders"
    assert md["rows_per_s"] > 0 and "duration_s" in md
    messages = "\n".join(e.user_message for e in instance.all_logs(res.run_id))
    assert "upsert into public.orders: 4 in, 1 inserted, 1 updated" in messages
    assert CANARY not in repr(mats[0].metadata) and CANARY not in caplog.text and CANARY not in messages
    res2 = dg.materialize([hr_orders], resources={"upsert": UpsertIOManager()}, instance=instance)
    md2 = res2.asset_materializations_for_node("hr_orders")[0].metadata
    assert md2["inserted"].value == 0 and md2["updated"].value == 0 and md2["unchanged"].value == 3

    @dg.asset(metadata={"adu/destination": orders}, io_manager_key="upsert", name="bad_orders")
    def bad() -> pl.DataFrame:
        return pl.DataFrame({"order_id": [50, 51], "item": ["fine", "much-too-long"]})

    res3 = dg.materialize([bad], resources={"upsert": UpsertIOManager()}, instance=instance)
    md3 = res3.asset_materializations_for_node("bad_orders")[0].metadata
    assert md3["inserted"].value == 1 and md3["errors"].value == 1
    errs = pq.read_table(md3["error_rows_path"].value).to_pylist()
    assert errs[0]["ADU_KEY"] == "order_id=51"
    for path in dagster_home.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_skips_counted_exactly_through_bisection(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    # One batch holds an unchanged row (1), a skipped one (2), a changed one (3), a new one (50) and a
    # foreign-key failure (51) that only bisection finds: the failed attempts must not count row 2 twice.
    dest = DestinationConfig.model_validate({**orders, "batch_size": 10})
    data = pa.table(
        {
            "order_id": [1, 2, 3, 50, 51],
            "customer": [1, 2, 2, 1, 99],
            "item": ["apple", "PEAR", "plum2", "new", "bad-fk"],
        }
    )
    result = upsert(dest, data, run_id="bisect")
    assert (result.inserted, result.updated, result.unchanged, result.skipped, result.errors) == (
        1,
        1,
        1,
        1,
        1,
    )
    assert rows(
        pg, pg_db, "SELECT order_id, item FROM orders WHERE order_id IN (2, 3, 50, 51) ORDER BY 1"
    ) == [
        (2, "pear"),
        (3, "plum2"),
        (50, "new"),
    ]


def test_skip_without_value_columns_counts_by_probe(pg: PgServer, pg_db: str, orders: dict[str, Any]) -> None:
    # Only key columns: ON CONFLICT DO NOTHING has no WHERE to count skips in, so the key index is probed.
    with pg.connect(pg_db) as c:
        c.execute(f"SET ROLE writer_{pg_db}")
        c.execute("CREATE TABLE seen (order_id int PRIMARY KEY, processed char(1) NOT NULL DEFAULT 'N')")
        c.execute("INSERT INTO seen VALUES (1, 'N'), (2, 'Y'), (3, 'N')")
    dest = DestinationConfig.model_validate({**orders, "table": "seen"})
    result = upsert(dest, pa.table({"order_id": [1, 2, 3, 60]}), run_id="keys-only")
    assert (result.inserted, result.updated, result.unchanged, result.skipped, result.errors) == (
        1,
        0,
        2,
        1,
        0,
    )


def test_many_batches_read_ahead_with_errors_and_skips(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    # Batches of 4 over 40 rows: the next batch is prepared while one is written; counts add up across batches.
    dest = DestinationConfig.model_validate({**orders, "batch_size": 4})
    ids = [1, 2, 3, *range(100, 137)]
    data = pa.table(
        {
            "order_id": pa.array(ids, pa.int32()),
            "customer": [99 if i in (105, 121) else 1 for i in ids],  # two foreign-key failures
            "item": ["apple", "PEAR", "plum", *(f"i{i}" for i in range(100, 137))],
        }
    )
    result = upsert(dest, data.to_reader(max_chunksize=3), run_id="many")
    assert (result.inserted, result.updated, result.skipped, result.errors, result.rows_in) == (
        35,
        1,
        1,
        2,
        40,
    )
    assert result.unchanged == 1
    assert rows(pg, pg_db, "SELECT count(*) FROM orders") == [(38,)]


def test_source_failure_midway_rolls_back_everything(
    pg: PgServer, pg_db: str, orders: dict[str, Any]
) -> None:
    dest = DestinationConfig.model_validate({**orders, "batch_size": 2})
    schema = pa.schema([("order_id", pa.int32()), ("item", pa.string())])

    def batches() -> Any:
        yield pa.record_batch([pa.array([70, 71], pa.int32()), pa.array(["a", "b"])], schema=schema)
        yield pa.record_batch([pa.array([72, 73], pa.int32()), pa.array(["c", "d"])], schema=schema)
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        upsert(dest, pa.RecordBatchReader.from_batches(schema, batches()), run_id="broken")
    assert rows(pg, pg_db, "SELECT count(*) FROM orders") == [(3,)]


def test_batch_size_defaults_per_dialect(orders: dict[str, Any]) -> None:
    from adu_assets.io_managers.upsert.duckdb import DuckDBUpsert
    from adu_assets.io_managers.upsert.postgres import PostgresUpsert

    assert DestinationConfig.model_validate(orders).batch_size is None
    assert PostgresUpsert.default_batch_size == 250_000 and DuckDBUpsert.default_batch_size == 50_000
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        DestinationConfig.model_validate({**orders, "batch_size": 0})
