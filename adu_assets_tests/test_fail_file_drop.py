"""Issue 11 point 6: a CSV that does not parse cleanly under the declared or detected dialect is
quarantined whole, with the reason and line; nothing of it lands and the shared warehouse table gets no
junk columns. Files that are fine, or whose dialect is declared, still land."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from adu_assets.warehouse import LandingStore
from adu_assets_tests.defs_helpers import load, write_component
from adu_assets_tests.test_components_file_drop import FILE_DROP_TYPE, run, settled, tick

GOOD = '"id","name","city","note"\n"1","Ann","Oslo","first"\n"2","Bob","Lyon","second"\n'
# The shape from the issue: an unterminated quote on the first data row. DuckDB's sniffer used to give up
# on quoting and land every value (and the header names) with their quote characters.
UNTERMINATED = (
    '"id","name","city","note"\n"3","Cy","Rome","open quote\n"4","Di","Oslo","y"\n"5","Ed","Lyon","z"\n'
)
# A quoted field that never closes, without quotes elsewhere: it used to land as one column of whole lines.
STRAY_QUOTE = 'id,name,city,note\n6,Fay,"Oslo, Norway,x\n7,Gus,Lyon,y\n'
RAGGED = "id,name,city,note\n8,Hal,Oslo,x\n9,Ida,Lyon,y,extra,more\n10,Jo,Rome\n"
HEADERLESS = "11,12,13,14\n15,16,17,18\n"


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> tuple[Path, dg.Definitions]:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    write_component(
        tmp_path / "user_defs",
        "drops",
        FILE_DROP_TYPE,
        {"name": "drops", "folder": str(inbox), "glob": "*.csv", "min_age_seconds": 600, **extra},
    )
    return inbox, load(tmp_path / "user_defs", monkeypatch)


def land_files(d: dg.Definitions, inbox: Path, files: dict[str, str]) -> dict[str, dg.ExecuteInProcessResult]:
    for name, text in files.items():
        settled_path = inbox / name
        settled_path.write_text(text)
        settled(settled_path)
    # A fresh cursor each time: files already landed run again, which only replaces their partition.
    result = tick(d, None)
    return {
        r.partition_key: run(d, r.partition_key)  # type: ignore[misc]
        for r in result.run_requests or []
        if r.partition_key in files
    }


def warehouse(tmp_path: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    with LandingStore(data_dir=str(tmp_path / "data")).connect() as con:
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_name = 'drops' ORDER BY ordinal_position"
            ).fetchall()
        ]
        rows = con.execute('SELECT id, name, adu_partition FROM "drops"."drops" ORDER BY id').fetchall()
    return cols, rows


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.to_string()  # type: ignore[union-attr]


def test_malformed_csvs_are_quarantined_whole(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, d = setup(tmp_path, monkeypatch)
    results = land_files(d, inbox, {"a_good.csv": GOOD})
    assert results["a_good.csv"].success
    cols_before, rows_before = warehouse(tmp_path)
    assert cols_before == ["id", "name", "city", "note", "adu_partition"]
    assert rows_before == [(1, "Ann", "a_good.csv"), (2, "Bob", "a_good.csv")]

    bad = {
        "b_unterminated.csv": UNTERMINATED,
        "c_stray.csv": STRAY_QUOTE,
        "d_ragged.csv": RAGGED,
        "e_headerless.csv": HEADERLESS,
    }
    results = land_files(d, inbox, bad)
    assert sorted(results) == sorted(bad)
    expected = {
        "b_unterminated.csv": "line 2: Value with unterminated quote found",
        "c_stray.csv": "line 2: Value with unterminated quote found",
        "d_ragged.csv": "line 3: Expected Number of Columns: 4 Found: 6",
        "e_headerless.csv": "no header line was detected",
    }
    for name, reason in expected.items():
        result = results[name]
        assert not result.success, name
        assert reason in failure_text(result), (name, failure_text(result))
        # Quarantined with a note, gone from the inbox, retried never (a re-read cannot fix the bytes).
        assert not (inbox / name).exists()
        assert (inbox / "quarantine" / name).read_text() == bad[name]
        assert reason in (inbox / "quarantine" / f"{name}.reason.txt").read_text()
        assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
        assert not list((tmp_path / "data" / "parquet" / "drops").glob(f"adu_partition={name}*/*.parquet"))
    assert "2 bad line(s)" in failure_text(results["d_ragged.csv"])
    assert "line 4: Expected Number of Columns: 4 Found: 3" in failure_text(results["d_ragged.csv"])
    # Nothing of them landed, and the shared table has no junk columns.
    assert warehouse(tmp_path) == (cols_before, rows_before)


def test_declared_dialect_is_used_and_still_checked(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, d = setup(tmp_path, monkeypatch, csv={"delimiter": ";", "header": False})
    results = land_files(
        d,
        inbox,
        {
            "a_semicolon.csv": "21;Kim;Oslo\n22;Lou;Lyon\n",
            "b_wrong.csv": "23;Max;Oslo\n24;Ned\n",
        },
    )
    assert results["a_semicolon.csv"].success
    files = list((tmp_path / "data" / "parquet" / "drops").glob("adu_partition=a_semicolon.csv/*.parquet"))
    table = pq.read_table(files[0])
    # DuckLake files carry the partition value as a column of their own.
    assert table.column_names == ["column0", "column1", "column2", "adu_partition"]
    assert table.column("column1").to_pylist() == ["Kim", "Lou"]
    assert not results["b_wrong.csv"].success
    text = failure_text(results["b_wrong.csv"])
    assert "delimiter ';'" in text and "line 2: Expected Number of Columns: 3 Found: 2" in text


def test_file_name_with_glob_characters_reads_only_itself(
    tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB takes `x[1].csv` for a pattern matching x1.csv: the file must be read under a plain alias.
    inbox, d = setup(tmp_path, monkeypatch)
    results = land_files(
        d,
        inbox,
        {"x1.csv": "id,name\n1,plain\n", "x[1].csv": "id,name\n2,bracket\n3,bracket\n"},
    )
    assert results["x[1].csv"].success and results["x1.csv"].success
    with LandingStore(data_dir=str(tmp_path / "data")).connect() as con:
        rows = con.execute('SELECT adu_partition, id, name FROM "drops"."drops" ORDER BY id').fetchall()
    assert rows == [("x1.csv", 1, "plain"), ("x[1].csv", 2, "bracket"), ("x[1].csv", 3, "bracket")]
    assert not list(Path(tempfile.gettempdir()).glob("adu-drop-*"))
