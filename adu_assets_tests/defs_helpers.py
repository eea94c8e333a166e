"""Write component YAML into an ADU_DEFS_DIR and load the code location from it, as a user would."""

import sys
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from adu_assets.definitions import defs as location_defs


def write_component(defs_dir: Path, folder: str, type_name: str, attributes: dict[str, Any]) -> Path:
    target = defs_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    path = target / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": type_name, "attributes": attributes}, sort_keys=False))
    return path


def load(defs_dir: Path, monkeypatch: Any) -> dg.Definitions:
    monkeypatch.setenv("ADU_DEFS_DIR", str(defs_dir))
    monkeypatch.setenv("ADU_STATE_DIR", str(defs_dir.parent / "state"))
    return location_defs()


def run_partition(
    d: dg.Definitions, keys: list[dg.AssetKey], partition: str | tuple[str, str]
) -> dg.ExecuteInProcessResult:
    job = d.resolve_implicit_global_asset_job_def()
    tags = {}
    partition_key = None
    if isinstance(partition, tuple):
        tags = {"dagster/asset_partition_range_start": partition[0], "dagster/asset_partition_range_end": partition[1]}
    else:
        partition_key = partition
    return job.execute_in_process(
        instance=dg.DagsterInstance.get(), asset_selection=keys, partition_key=partition_key, tags=tags,
        raise_on_error=False,
    )


def load_problems(defs_dir: Path, monkeypatch: Any) -> str:
    """Load a folder whose component files are all broken: the code location still loads (no assets),
    shows each broken file as a sensor, and the problems read `file:line: field: message`, one a line."""
    from adu_assets.defs_loader import load_location

    d = load(defs_dir, monkeypatch)
    assert d.resolve_all_asset_keys() == []
    assert [s.name for s in d.sensors or [] if s.name.startswith("adu_broken_yaml")]
    return "\n".join(str(p) for p in load_location(defs_dir).problems)


def materialize_cmd(select: str, partition: str) -> list[str]:
    """`dagster asset materialize` of the code location, as the tests run it in a fresh process."""
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "adu_assets.definitions",
            "--select", select, "--partition", partition]
