"""No secret reference travels as asset metadata (issue 12, point 3).

ApiIngest hands its destination to an IO manager built in code (`destination_io_manager`), so definition
metadata, resource config and run config hold no Fernet token. The older metadata road
(`UpsertIOManager` reading "adu/destination") refuses a destination that carries one.
"""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from cryptography.fernet import Fernet

from adu_assets import secrets
from adu_assets.io_managers.upsert.base import DestinationConfig
from adu_assets.io_managers.upsert.io_manager import UpsertIOManager, destination_io_manager


def pg_destination(token: str) -> DestinationConfig:
    return DestinationConfig.model_validate(
        {
            "connection": {
                "kind": "postgres",
                "host": "127.0.0.1",
                "port": 9,
                "database": "hr",
                "user": "loader",
                "password_encrypted": token,
            },
            "table": "employees",
            "keys": ["id"],
        }
    )


def test_metadata_destination_with_a_fernet_token_is_refused(dagster_home: Path) -> None:
    token = secrets.encrypt("Meta-Secret-31415", keys=Fernet.generate_key().decode())

    @dg.asset(
        metadata={"adu/destination": pg_destination(token).model_dump(mode="json")}, io_manager_key="upsert"
    )
    def hr_rows() -> pa.Table:
        return pa.table({"id": [1]})

    result = dg.materialize([hr_rows], resources={"upsert": UpsertIOManager()}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "holds password_encrypted" in text and "destination_io_manager" in text
    assert token not in text


def test_destination_io_manager_has_no_config_and_no_token_in_its_description() -> None:
    token = secrets.encrypt("Meta-Secret-27182", keys=Fernet.generate_key().decode())
    io = destination_io_manager(pg_destination(token))
    assert token not in (io.description or "")
    assert io.description == "Upserts into employees on postgres://loader@127.0.0.1:9/hr"


def test_destination_io_manager_lands_rows(dagster_home: Path, tmp_path: Path) -> None:
    """The code road works end to end (DuckDB file destination, no server needed)."""
    import duckdb

    db = tmp_path / "dest.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE employees (id INTEGER PRIMARY KEY, city VARCHAR)")
    dest = DestinationConfig.model_validate(
        {"connection": {"kind": "duckdb", "path": str(db)}, "table": "employees", "keys": ["id"]}
    )

    @dg.asset(io_manager_key="dest")
    def employees() -> pa.Table:
        return pa.table({"id": [1, 2], "city": ["oslo", "lyon"]})

    result = dg.materialize([employees], resources={"dest": destination_io_manager(dest)})
    assert result.success
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT id, city FROM employees ORDER BY id").fetchall() == [
            (1, "oslo"),
            (2, "lyon"),
        ]
    [mat] = result.asset_materializations_for_node("employees")
    assert mat.metadata["inserted"].value == 2


@pytest.mark.parametrize("kind", ["api"])
def test_api_task_metadata_has_no_destination_block(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: Path
) -> None:
    from adu_assets_tests.defs_helpers import load, write_component

    token = secrets.encrypt("Meta-Secret-16180", keys=Fernet.generate_key().decode())
    write_component(
        tmp_path / "defs",
        "t",
        "adu_assets.ApiIngest",
        {
            "name": "hr",
            "start_date": "2026-01-01",
            "request": {"url": "http://127.0.0.1:9/x?api_key=Url-Key-Secret-4242&day={partition_key}"},
            "mappings": [{"source": "id", "target": "id"}],
            "destination": pg_destination(token).model_dump(mode="json", exclude_none=True),
        },
    )
    defs = load(tmp_path / "defs", monkeypatch)
    spec = defs.get_assets_def(dg.AssetKey(["hr"])).specs_by_key[dg.AssetKey(["hr"])]
    assert "adu/destination" not in spec.metadata
    assert {k: v for k, v in spec.metadata.items() if k.startswith("adu/")} == {
        "adu/destination_table": "employees",
        "adu/destination_kind": "postgres",
    }
    # A key typed into the url does not reach the description either.
    assert "Url-Key-Secret-4242" not in (spec.description or "")
    assert "GET http://127.0.0.1:9/x?day={partition_key} -> postgres table employees" in (
        spec.description or ""
    )
    # Its own IO manager, bound in code to the destination.
    assert "adu_upsert_io_hr" in (defs.resources or {})
