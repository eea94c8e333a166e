"""Global settings, read from the environment at call time (never at import time)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """ADU_DATA_DIR, else a folder under DAGSTER_HOME, else ./.adu_data (see `adu_assets.warehouse`)."""
    from adu_assets.warehouse import default_data_dir

    return default_data_dir()


def expand_path(value: str) -> Path:
    """Expand ~ and ${VARS} in a path from YAML; ${ADU_DATA_DIR} falls back to data_root()."""
    env = dict(os.environ)
    env.setdefault("ADU_DATA_DIR", str(data_root()))
    for name, val in env.items():
        value = value.replace("${" + name + "}", val)
    return Path(os.path.expanduser(os.path.expandvars(value)))
