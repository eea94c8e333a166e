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


class OutsideFolderError(ValueError):
    """A path built from a name would leave the folder it belongs in."""


def inside_folder(root: Path, path: Path, *, what: str) -> Path:
    """`path` unchanged if it stays inside `root`; an OutsideFolderError naming `what` if it does not.

    For paths built from names that come from YAML, a source, a server or a partition key (a table
    `a/b`, a file `../../etc/x`, an absolute `/etc/x`, which pathlib's `/` would take as the whole path).
    The check is on the normalized text, not the resolved one: a folder the operator symlinked elsewhere
    on purpose (raw data on a bigger disk) stays allowed.
    """
    base = os.path.abspath(root)
    full = os.path.abspath(path)
    if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
        raise OutsideFolderError(
            f"{what}: the path {full} would leave {base}; names must not hold '..' or start with '/'"
        )
    return path


def inside_data_dir(path: Path, *, what: str, root: Path | None = None) -> Path:
    """`inside_folder` for ADU_DATA_DIR (or `root`, the store's root, when given)."""
    return inside_folder(root if root is not None else data_root(), path, what=what)
