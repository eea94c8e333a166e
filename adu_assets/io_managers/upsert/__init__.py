"""Upsert landing: Arrow batches into Oracle, PostgreSQL or DuckDB, with per-row error isolation.

`upsert()` is the whole API for code; `UpsertIOManager` is the Dagster face of it. See base.py for the approach.
"""

from adu_assets.io_managers.upsert.base import (
    DestinationConfig,
    DestinationError,
    SkipWhen,
    TooManyRejectedRows,
    UpsertResult,
    check_destination_columns,
    upsert,
)
from adu_assets.io_managers.upsert.io_manager import UpsertIOManager

__all__ = [
    "DestinationConfig",
    "DestinationError",
    "SkipWhen",
    "TooManyRejectedRows",
    "UpsertIOManager",
    "UpsertResult",
    "check_destination_columns",
    "upsert",
]
