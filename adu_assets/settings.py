"""Global settings, read from the environment at call time (never at import time)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The landing store's data folder: ADU_DATA_DIR, else $DAGSTER_HOME/adu_data, else ./.adu_data.

    Kept for callers without the `adu_store` resource at hand; `adu_assets.warehouse.LandingStore` owns it.
    """
    from adu_assets.warehouse import LandingStore

    return LandingStore().root()


def expand_path(value: str) -> Path:
    """Expand ~ and ${VARS} in a path from YAML; ${ADU_DATA_DIR} falls back to data_root()."""
    env = dict(os.environ)
    env.setdefault("ADU_DATA_DIR", str(data_root()))
    for name, val in env.items():
        value = value.replace("${" + name + "}", val)
    return Path(os.path.expanduser(os.path.expandvars(value)))
