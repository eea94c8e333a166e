"""Issue 11 point 7 (demo): `adu demo` ends with a short summary (tables, rows, where the data is, how to
open the UI), not on Dagster's DEBUG events; the full log is kept in a file the output names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.mark.slow
def test_demo_ends_with_a_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_"))}
    env.update(
        DAGSTER_HOME=str(home), ADU_STATE_DIR=str(tmp_path / "state"), ADU_DATA_DIR=str(tmp_path / "data")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from adu_assets.cli import main; sys.exit(main())",
            "demo",
            "--partition",
            "2026-03-01",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout.strip().splitlines()
    assert len(out) < 30, out
    assert not [line for line in out if "DEBUG" in line]
    data = tmp_path / "data"
    orders = sum(
        pq.read_metadata(f).num_rows
        for f in (data / "parquet/shop/main/orders/adu_partition=2026-03-01").glob("*.parquet")
    )
    assert orders > 100
    text = "\n".join(out)
    assert "Demo for 2026-03-01: 5 tables" in text
    assert re.search(rf"shop/main/orders\s+{orders:,} rows", text), text
    assert re.search(r"inventory/main/stock_levels\s+800 rows", text), text
    assert f"Parquet files:  {data / 'parquet'}" in text
    assert f"Warehouse:      DuckLake, catalog {data / 'warehouse.sqlite'}" in text
    assert out[-1].startswith("Open the UI:") and "dagster dev -m adu_assets.definitions" in out[-1]
    # Every step reported in one line each; the full Dagster log is in the file the output names.
    ok = [line.split()[-1] for line in out if line.strip().startswith("ok")]
    for table in (
        "shop/main/orders",
        "shop/main/customers",
        "shop/main/products",
        "inventory/main/warehouses",
        "inventory/main/stock_levels",
    ):
        assert table in ok, ok
    log = data / "logs" / "demo-2026-03-01.log"
    assert str(log) in text and "RUN_SUCCESS" in log.read_text()
