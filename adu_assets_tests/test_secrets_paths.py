"""Paths built from names stay inside their folder (issue 12, point 4).

A FileDrop partition key is a file's path relative to the watched folder, and anyone allowed to launch a
run can choose one: `../secret.csv` or `/etc/...` must neither be read, landed nor moved to quarantine.
"""

import os
from pathlib import Path

import dagster as dg
import pytest

from adu_assets.settings import OutsideFolderError, inside_data_dir, inside_folder
from adu_assets_tests.defs_helpers import load, write_component

FILE_DROP_TYPE = "adu_assets.components.file_drop.FileDrop"


@pytest.mark.parametrize("name", ["a.csv", "sub/a.csv", "sub/../a.csv", "./a.csv", "a..b.csv"])
def test_names_inside_are_accepted(tmp_path: Path, name: str) -> None:
    assert inside_folder(tmp_path, tmp_path / name, what="t") == tmp_path / name


@pytest.mark.parametrize("name", ["../a.csv", "sub/../../a.csv", "/etc/passwd", "..", "../" + "x" * 3])
def test_names_outside_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "inbox"
    with pytest.raises(OutsideFolderError, match="drops: file") as err:
        inside_folder(root, root / name, what="drops: file")
    assert "would leave" in str(err.value)


def test_a_sibling_with_the_same_prefix_is_outside(tmp_path: Path) -> None:
    with pytest.raises(OutsideFolderError):
        inside_folder(tmp_path / "data", tmp_path / "data2" / "x", what="t")


def test_a_folder_symlinked_on_purpose_stays_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bigdisk").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(tmp_path / "bigdisk", data / "raw")
    monkeypatch.setenv("ADU_DATA_DIR", str(data))
    assert (
        inside_data_dir(data / "raw" / "task" / "2026-01-02", what="t")
        == data / "raw" / "task" / "2026-01-02"
    )
    with pytest.raises(OutsideFolderError):
        inside_data_dir(data / ".." / "elsewhere", what="t")


@pytest.mark.parametrize("escape", ["../outside.csv", "ABSOLUTE"])
def test_file_drop_refuses_a_partition_key_outside_its_folder(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch, escape: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("id,secret\n1,do-not-read\n")
    key = str(outside) if escape == "ABSOLUTE" else escape
    defs_dir = tmp_path / "user_defs"
    write_component(defs_dir, "drops", FILE_DROP_TYPE, {"name": "drops", "folder": str(inbox), "glob": "*"})
    d = load(defs_dir, monkeypatch)
    instance = dg.DagsterInstance.get()
    # What a user allowed to launch runs can do from the UI: add a partition by hand and run it.
    instance.add_dynamic_partitions("drops_files", [key])
    result = d.resolve_job_def("drops_job").execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "would leave" in text
    # Not read, not moved, not landed; and Dagster did not retry it.
    assert outside.read_text() == "id,secret\n1,do-not-read\n"
    assert not (inbox / "quarantine").exists()
    assert not list((tmp_path / "data").rglob("*.parquet")) if (tmp_path / "data").exists() else True
    assert [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"] == []
