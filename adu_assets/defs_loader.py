"""Load component YAML from the package's demo folder or from any folder named by ADU_DEFS_DIR.

A user's folder is not a Python package, so it is given a module identity here, and a small project
marker (dg.toml) under the state directory tells Dagster where its defs live. Cached discovery state is
kept beside the YAML (`<folder>/.local_defs_state/`), so a container only needs that folder mounted.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile
import types
from pathlib import Path

import dagster as dg
from dagster.components.core.component_tree import ComponentTree

DEFS_DIR_ENV = "ADU_DEFS_DIR"
DEMO_MODULE = "adu_assets.defs"


def defs_module_for(folder: Path | None) -> types.ModuleType:
    if folder is None:
        return importlib.import_module(DEMO_MODULE)
    folder = folder.resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{DEFS_DIR_ENV}={folder} is not a folder")
    name = "adu_user_defs_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        module.__file__ = None
        sys.modules[name] = module
    return module


def project_root_for(module: types.ModuleType) -> Path:
    """A directory whose dg.toml names `module` as the defs module (Dagster resolves state paths by it)."""
    base = Path(os.environ.get("ADU_STATE_DIR") or Path(tempfile.gettempdir()) / "adu_projects")
    root = base / module.__name__.replace(".", "_")
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "dg.toml"
    top = module.__name__.split(".")[0]
    text = f'[project]\nroot_module = "{top}"\ndefs_module = "{module.__name__}"\n'
    if not marker.exists() or marker.read_text() != text:
        marker.write_text(text)
    return root


def component_tree(folder: Path | None = None) -> ComponentTree:
    if folder is None and os.environ.get(DEFS_DIR_ENV):
        folder = Path(os.environ[DEFS_DIR_ENV])
    module = defs_module_for(folder)
    return ComponentTree.from_module(defs_module=module, project_root=project_root_for(module))


def load_location(folder: Path | None = None) -> tuple[dg.Definitions, list[tuple[str, int]]]:
    """The components' definitions, and each source connection's (pool, max_parallel)."""
    tree = component_tree(folder)
    defs = tree.build_defs()
    pools = []
    for component in tree.get_all_components(of_type=dg.Component):  # type: ignore[type-abstract]
        connection = getattr(component, "connection", None)
        if connection is not None and hasattr(connection, "pool_name"):
            pools.append((connection.pool_name(), connection.max_parallel))
    return defs, pools
