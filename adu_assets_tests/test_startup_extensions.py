"""DuckDB extensions are signature-checked once per process, not on every load (issue 14), and never skipped.

Each new in-memory DuckDB loads its extensions afresh and DuckDB hashes the whole file (35-42 MB) on each
LOAD; our own connections load a file only after DuckDB itself has checked it in this process. These tests
use a copy of the real extension file, so they can tamper with it.
"""

import gc
import os
import shutil
from pathlib import Path

import pytest

from adu_assets.sources import databases
from adu_assets.sources.databases import load_extension, new_duckdb
from adu_assets.warehouse import LandingStore


@pytest.fixture
def sqlite_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the sqlite scanner, standing in for the installed one."""
    copy = tmp_path / "sqlite_scanner.duckdb_extension"
    shutil.copyfile(databases.extension_path("sqlite"), copy)
    real = databases.extension_path

    def fake(kind: str) -> Path:
        return copy if kind == "sqlite" else real(kind)

    monkeypatch.setattr(databases, "extension_path", fake)
    monkeypatch.setattr(databases, "_VERIFIED", {})
    return copy


def tamper(path: Path) -> None:
    """Replace the file by one with a byte flipped in the middle (the signature no longer matches), as an
    upgrade replaces files: a new file renamed over the old (the old one may be mapped in this process)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    new = path.with_name(path.name + ".new")
    new.write_bytes(bytes(data))
    os.replace(new, path)


def test_checked_once_then_loaded_without_rehashing(sqlite_copy: Path) -> None:
    for _ in range(3):
        con = new_duckdb()
        load_extension(con, "sqlite")
        assert con.execute("SELECT count(*) FROM duckdb_extensions() WHERE loaded AND "
                           "extension_name = 'sqlite_scanner'").fetchone() == (1,)
        con.close()
    assert list(databases._VERIFIED) == [sqlite_copy]


def test_a_file_changed_after_its_check_is_checked_again_and_refused(sqlite_copy: Path) -> None:
    con = new_duckdb()
    load_extension(con, "sqlite")
    con.close()
    tamper(sqlite_copy)
    con = new_duckdb()
    with pytest.raises(Exception, match="(?i)signature|invalid|extension"):
        load_extension(con, "sqlite")
    con.close()
    assert sqlite_copy not in databases._VERIFIED or databases._VERIFIED[sqlite_copy] != (
        sqlite_copy.stat().st_ino,
        sqlite_copy.stat().st_size,
        sqlite_copy.stat().st_mtime_ns,
    )


def test_a_tampered_file_is_never_loaded_into_a_trusting_connection(sqlite_copy: Path) -> None:
    tamper(sqlite_copy)
    con = new_duckdb()
    with pytest.raises(Exception, match="(?i)signature|invalid|extension"):
        load_extension(con, "sqlite")
    loaded = con.execute(
        "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'sqlite_scanner'"
    ).fetchone()
    assert loaded == (0,)
    con.close()


def test_connections_for_users_check_every_load(tmp_path: Path) -> None:
    user = new_duckdb(for_user=True)
    assert user.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
    user.close()
    store = LandingStore(data_dir=str(tmp_path / "data"))
    con = store.connect(for_user=True)
    try:
        assert con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
        # An unsigned file typed by the user is refused as DuckDB always refuses it.
        bogus = tmp_path / "bogus.duckdb_extension"
        bogus.write_bytes(b"\0" * 1024)
        with pytest.raises(Exception, match="(?i)signature|invalid|extension"):
            con.execute(f"LOAD '{bogus}'")
    finally:
        con.close()


def test_adu_sql_runs_on_a_checked_connection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adu_assets.cli import main

    rc = main(["sql", "--data-dir", str(tmp_path / "data"), "--format", "csv",
               "SELECT current_setting('allow_unsigned_extensions') AS unsigned"])
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[-1].strip().lower() == "false"


def test_definitions_build_leaves_the_collector_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from adu_assets import definitions

    assert gc.isenabled()
    definitions.defs()
    assert gc.isenabled()

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(definitions, "build_defs", broken)
    with pytest.raises(RuntimeError, match="boom"):
        definitions.defs()
    assert gc.isenabled()


NO_PANDAS = """
import sys
from pathlib import Path
import dagster as dg
import duckdb
from adu_assets.io_managers.landing import land
from adu_assets.io_managers.tables import read_landed
from adu_assets.sources.connection import ConnectionConfig
from adu_assets.sources.databases import open_table_stream
from adu_assets.warehouse import LandingStore

root = Path(sys.argv[1])
with duckdb.connect(str(root / "src.duckdb")) as con:
    con.execute("CREATE TABLE t AS SELECT i AS id, i * 1.5 AS amount FROM range(10) r(i)")
sqlite = root / "src.sqlite"
import sqlite3
with sqlite3.connect(sqlite) as db:
    db.execute("CREATE TABLE u (id INTEGER, name TEXT)")
    db.executemany("INSERT INTO u VALUES (?, ?)", [(i, f"x{i}") for i in range(5)])
store = LandingStore(data_dir=str(root / "data"))
for kind, path, table in (("duckdb", root / "src.duckdb", "t"), ("sqlite", sqlite, "u")):
    cfg = ConnectionConfig(kind=kind, path=str(path))
    schema = "main"
    for day in ("2024-01-01", "2024-01-01", "2024-01-02"):  # a re-land too
        stream = open_table_stream(cfg, schema=schema, table=table, label="p", incremental_column=None,
                                   window=None, partition_keys=[day])
        try:
            land(stream, ["parquet", "warehouse"], store, dg.AssetKey(["p", schema, table]))
        finally:
            stream.close()
    assert read_landed(store, dg.AssetKey(["p", schema, table]), ["2024-01-01"]).collect().height > 0
print("pandas" in sys.modules)
"""


def test_the_export_path_does_not_import_pandas(tmp_path: Path) -> None:
    """Binding query parameters makes DuckDB's Python client import pandas (0.5-0.7 s per process): export,
    land, re-land and read back without it, so a run worker without pandera checks never pays for it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", NO_PANDAS, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"

