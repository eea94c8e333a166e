"""The embedded demo sources, generated here so the demo needs no server, no network and no download.

`shop.duckdb` holds a year of a web shop (customers, products, orders, order_items) and `inventory.sqlite`
holds warehouse stock. Values come from hashes of row numbers, so every machine generates the same data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from adu_assets.settings import data_root
from adu_assets.sources.catalog import quote_literal
from adu_assets.sources.databases import load_extension, new_duckdb

DEMO_YEAR_START = "2026-01-01"
DEMO_DAYS = 365

_SHOP_SQL = f"""
CREATE TABLE customers AS
SELECT i AS customer_id,
       (['Ana','Ben','Chen','Dana','Eli','Fatima','Goran','Hana','Ivan','Júlia','Kofi','Lena'])[1 + CAST(hash(i, 'f') % 12 AS BIGINT)]
         || ' ' || (['Smith','García','Müller','Nakamura','Okafor','Rossi','Silva','Kowalski','Dubois','Haddad'])[1 + CAST(hash(i, 'l') % 10 AS BIGINT)]
         AS full_name,
       'customer' || i || '@example.org' AS email,
       (['USA','Canada','France','Germany','Brazil','Japan','Nigeria','India'])[1 + CAST(hash(i, 'c') % 8 AS BIGINT)] AS country,
       TIMESTAMPTZ '{DEMO_YEAR_START} 00:00:00+00' - to_days(CAST(CAST(hash(i, 'd') % 900 AS BIGINT) AS INTEGER)) AS created_at
FROM range(1, 2001) t(i);

CREATE TABLE products AS
SELECT i AS product_id,
       (['Trail','City','Ultra','Classic','Pro'])[1 + CAST(hash(i, 'a') % 5 AS BIGINT)] || ' '
         || (['Backpack','Lamp','Kettle','Jacket','Bottle','Tent','Stove','Map'])[1 + CAST(hash(i, 'b') % 8 AS BIGINT)] || ' ' || i
         AS product_name,
       (['outdoor','kitchen','clothing','travel'])[1 + CAST(hash(i, 'g') % 4 AS BIGINT)] AS category,
       CAST(5 + (CAST(hash(i, 'p') % 29500 AS BIGINT)) / 100.0 AS DECIMAL(10, 2)) AS unit_price
FROM range(1, 201) t(i);

CREATE TABLE orders AS
SELECT i AS order_id,
       1 + CAST(hash(i, 'cu') % 2000 AS BIGINT) AS customer_id,
       TIMESTAMPTZ '{DEMO_YEAR_START} 00:00:00+00'
         + to_microseconds(CAST(CAST(hash(i, 't') % ({DEMO_DAYS} * 86400000000) AS BIGINT) AS BIGINT)) AS ordered_at,
       (['new','paid','shipped','delivered','returned'])[1 + CAST(hash(i, 's') % 5 AS BIGINT)] AS status,
       CAST(NULL AS DECIMAL(12, 2)) AS total
FROM range(1, 100001) t(i);

CREATE TABLE order_items AS
SELECT o.order_id, k AS line_no,
       1 + CAST(hash(o.order_id, k, 'pr') % 200 AS BIGINT) AS product_id,
       CAST(1 + CAST(hash(o.order_id, k, 'q') % 4 AS BIGINT) AS INTEGER) AS quantity
FROM orders o, range(1, 4) r(k)
WHERE k <= 1 + CAST(hash(o.order_id, 'n') % 3 AS BIGINT);

UPDATE orders SET total = s.total
FROM (SELECT oi.order_id, CAST(sum(oi.quantity * p.unit_price) AS DECIMAL(12, 2)) AS total
      FROM order_items oi JOIN products p USING (product_id) GROUP BY oi.order_id) s
WHERE orders.order_id = s.order_id;
"""

_INVENTORY_SQL = """
CREATE TABLE inv.warehouses AS
SELECT i AS warehouse_id, (['Oslo','Lyon','Austin','Osaka'])[i] AS city FROM range(1, 5) t(i);
CREATE TABLE inv.stock_levels AS
SELECT w AS warehouse_id, p AS product_id, CAST(CAST(hash(w, p) % 500 AS BIGINT) AS INTEGER) AS on_hand
FROM range(1, 5) a(w), range(1, 201) b(p);
"""


def demo_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "demo"


def ensure_demo_sources(root: Path | None = None) -> Path:
    """Create the demo databases once; later calls are no-ops. Written to a temp name, then renamed."""
    folder = demo_dir(root)
    shop = folder / "shop.duckdb"
    inventory = folder / "inventory.sqlite"
    if shop.exists() and inventory.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp_shop = folder / f".shop-{tag}.duckdb"
    tmp_inv = folder / f".inventory-{tag}.sqlite"
    con = new_duckdb(str(tmp_shop))
    try:
        con.execute(_SHOP_SQL)
        con.execute("CHECKPOINT")
        load_extension(con, "sqlite")
        con.execute(f"ATTACH {quote_literal(str(tmp_inv))} AS inv (TYPE sqlite)")
        con.execute(_INVENTORY_SQL)
        con.execute("DETACH inv")
    finally:
        con.close()
    os.replace(tmp_shop, shop)
    os.replace(tmp_inv, inventory)
    return folder


def demo_summary(root: Path, partition: str) -> str:
    """What the demo left behind, in a few lines: each table landed for `partition` with its rows, where
    the files and the warehouse are, and how to look at it all in the UI."""
    parquet = root / "parquet"
    found: list[tuple[str, int]] = []
    con = new_duckdb()
    try:
        for folder in sorted(parquet.glob(f"**/adu_partition={partition}")):
            files = sorted(folder.glob("*.parquet"))
            if not files:
                continue
            listed = ", ".join(quote_literal(str(f)) for f in files)
            row = con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchone()
            found.append((folder.parent.relative_to(parquet).as_posix(), int(row[0]) if row else 0))
    finally:
        con.close()
    from adu_assets.warehouse import LandingStore

    width = max((len(name) for name, _ in found), default=0)
    lines = [f"Demo for {partition}: {len(found)} tables, {sum(n for _, n in found):,} rows"]
    lines += [f"  {name:<{width}}  {rows:>9,} rows" for name, rows in found]
    lines.append(f"Parquet files:  {parquet}/<source>/<schema>/<table>/adu_partition={partition}/")
    store = LandingStore(data_dir=str(root))
    lines.append(
        f'Warehouse:      DuckLake, catalog {store.catalog_label()} (tables "<source>_<schema>"."<table>"; '
        f"query it with: adu sql \"SELECT ...\")"
    )
    # The UI shows these runs only with the same DAGSTER_HOME (scripts/demo sets one).
    home = os.environ.get("DAGSTER_HOME")
    prefix = f"DAGSTER_HOME={home} " if home else ""
    lines.append(
        f"Open the UI:    {prefix}dagster dev -m adu_assets.definitions   then http://127.0.0.1:3000"
    )
    return "\n".join(lines)
