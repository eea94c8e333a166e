"""The landing store: the one owner of the data folder and the warehouse catalog.

IO managers, checks, sensors, FileDrop and the CLI get paths and warehouse connections from a
`LandingStore` (Dagster resource key `adu_store`), never from the environment on their own.

Public read paths: `adu_assets.warehouse.connect()` (a DuckDB connection with the warehouse attached
and selected) and `adu sql "SELECT ..."`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import polars as pl

STORE_RESOURCE_KEY = "adu_store"
DATA_DIR_ENV = "ADU_DATA_DIR"
CATALOG_ENV = "ADU_WAREHOUSE_CATALOG"


def default_data_dir() -> Path:
    """ADU_DATA_DIR, else a folder under DAGSTER_HOME, else ./.adu_data."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]) / "adu_data"
    return Path.cwd() / ".adu_data"


class LandingStore(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Owns ADU_DATA_DIR (Parquet tree, check baselines, reports) and the warehouse catalog."""

    data_dir: str | None = Field(
        default=None, description="Root of landed data; default ADU_DATA_DIR, else $DAGSTER_HOME/adu_data"
    )
    catalog: str | None = Field(
        default=None,
        description="Warehouse catalog: default an embedded SQLite catalog under the data folder; "
        "postgresql://user@host:port/database for several hosts (password from PGPASSWORD)",
    )

    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    def checks_dir(self) -> Path:
        """Where schema baselines of the inferred schema check live."""
        return self.root() / "checks" / "schemas"

    def reports_dir(self) -> Path:
        """Where drift and profile HTML reports are written."""
        return self.root() / "reports"

    def landed_frame(
        self, key: dg.AssetKey, destinations: Sequence[str], partitions: list[str]
    ) -> pl.LazyFrame:
        """The landed rows of `partitions` (all when empty) as a polars LazyFrame."""
        from adu_assets.io_managers.tables import landed_frame

        frame: pl.LazyFrame = landed_frame(self.root(), key, destinations, partitions)
        return frame

    def previous_landed_frame(
        self,
        key: dg.AssetKey,
        destinations: Sequence[str],
        partitions_def: dg.PartitionsDefinition,
        partition: str,
    ) -> Any:
        """The latest landed partition before `partition` (drift's reference), or None."""
        from adu_assets.io_managers.tables import previous_landed_frame

        return previous_landed_frame(self.root(), key, destinations, partitions_def, partition)


def connect(store: LandingStore | None = None) -> Any:
    """A DuckDB connection with the warehouse attached and selected (tables `"<name>_<schema>"."<table>"`)."""
    import duckdb

    from adu_assets.io_managers.landing import warehouse_path

    store = store or LandingStore()
    return duckdb.connect(str(warehouse_path(store.root())), read_only=True)
