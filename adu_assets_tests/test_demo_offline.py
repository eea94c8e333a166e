"""The README's quickstart demo, run inside a network namespace with only loopback."""

import os
import sys
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adu_assets.warehouse import LandingStore
from adu_assets_tests.netns import run_offline


@pytest.mark.slow
def test_demo_runs_without_network(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_"))}
    env.update(DAGSTER_HOME=str(home), ADU_STATE_DIR=str(tmp_path / "state"))
    # Any attempt to reach the network fails fast in the namespace, and would show up as a failed run.
    proc = run_offline([sys.executable, "-m", "adu_assets.cli", "demo", "--partition", "2026-03-01"], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "RUN_SUCCESS" in log
    data = home / "adu_data"
    [orders_file] = (data / "parquet/shop/main/orders/adu_partition=2026-03-01").glob("*.parquet")
    orders = pq.read_table(orders_file)
    assert orders.num_rows > 100
    assert {t.as_py().date().isoformat() for t in orders.column("ordered_at")} == {"2026-03-01"}
    for table in ("customers", "products"):
        assert list((data / f"parquet/shop/main/{table}/adu_partition=2026-03-01").glob("*.parquet"))
    for table in ("warehouses", "stock_levels"):
        assert list((data / f"parquet/inventory/main/{table}/adu_partition=2026-03-01").glob("*.parquet"))
    with closing(LandingStore(data_dir=str(data)).connect()) as con:
        assert con.execute("SELECT count(*) FROM shop_main.orders").fetchone() == (orders.num_rows,)
