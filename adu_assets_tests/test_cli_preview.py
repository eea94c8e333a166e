"""`adu preview` and `adu test-connection` against a loopback API and a real PostgreSQL.

The suggested `mappings:` block is not only printed: it is pasted into the task and run through the real
mapping code over the same page, which must map every record with no error.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adu_assets.cli.preview import preview, records_frame
from adu_assets.cli.test_connection import test_connection as run_test_connection
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.http_fixture_server import FixtureServer, Reply, Seen, running_fixture_server
from adu_assets_tests.pg_server import PgServer

TOKEN = "tok-" + "9f8e7d6c5b4a"
PAGE_SIZE = 3


def employee(i: int) -> dict[str, Any]:
    return {
        "id": 100 + i,
        "employee number": f" {2000 + i} ",  # a number sent as padded text, under an odd key
        "hired": f"2024-0{1 + i % 9}-1{i % 10}",
        "updated_at": f"2026-03-01T1{i % 10}:00:00Z",
        "salary": 1000.5 + i,
        "active": i % 2 == 0,
        "profile": {"address": {"city": f"City {i}"}, "tags": ["a", "b"]},
        "note": None,
    }


RECORDS = [employee(i) for i in range(7)]


@pytest.fixture
def api() -> Iterator[FixtureServer]:
    with running_fixture_server() as server:

        def employees(seen: Seen) -> Reply:
            if seen.headers.get("authorization") != f"Bearer {TOKEN}":
                return Reply(401, {"error": "bad token"})
            page = int(seen.query.get("page", "1"))
            size = int(seen.query.get("page_size", "100"))
            chunk = RECORDS[(page - 1) * size : page * size]
            return Reply(200, {"data": {"items": chunk}, "meta": {"page": page}})

        server.route("/api/employees", employees)
        yield server


def api_task(
    server: FixtureServer, pg: PgServer, database: str, table: str = "public.employees"
) -> dict[str, Any]:
    return {
        "type": "adu_assets.ApiIngest",
        "attributes": {
            "name": "hr_employees",
            "request": {
                "url": server.url("/api/employees"),
                "params": {"updated_since": "{partition_start}"},
                "auth": {"type": "bearer", "token_env": "ADU_TEST_HR_TOKEN"},
                "pagination": {"type": "page", "page_size": PAGE_SIZE},
                "records_path": "data.items",
            },
            "start_date": "2026-01-01",
            "mappings": [{"source": "id", "target": "EMPLOYEE_ID", "transforms": ["to_int"]}],
            "destination": {
                "connection": pg_connection_yaml(pg, database),
                "table": table,
                "mode": "upsert",
                "keys": ["EMPLOYEE_ID"],
            },
        },
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path / "defs.yaml"


def test_preview_prints_fields_and_a_mappings_block_that_maps_the_page(
    api: FixtureServer, pg: PgServer, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from adu_assets.sources.mapping import MappingConfig, apply_mappings

    monkeypatch.setenv("ADU_TEST_HR_TOKEN", TOKEN)
    defs = write_yaml(tmp_path / "hr", api_task(api, pg, pg_db))
    out = io.StringIO()
    assert preview(defs, dt.date(2026, 3, 1), out) == 0
    text = out.getvalue()

    # Exactly one request, the first page, with the task's auth, pagination and partition parameters.
    seen = api.requests("/api/employees")
    assert len(seen) == 1
    assert seen[0].query == {
        "updated_since": "2026-03-01T00:00:00+00:00",
        "page": "1",
        "page_size": str(PAGE_SIZE),
    }
    assert TOKEN not in text

    table = {line.split()[1]: line for line in text.splitlines() if line.startswith("# ") and "  " in line}
    assert "integer" in table["id"] and "100" in table["id"]
    assert "date (text)" in table["hired"]
    assert "timestamp (text)" in table["updated_at"]
    assert "number" in table["salary"] and "boolean" in table["active"]
    assert '"City 0"' in table["profile.address.city"]
    assert "list" in table["profile.tags"]
    assert "null" in table["note"]
    assert f"{PAGE_SIZE} records" in text

    block = yaml.safe_load(text[text.index("mappings:") :])["mappings"]
    by_source = {m["source"]: m for m in block}
    assert by_source["id"] == {"source": "id", "target": "ID", "transforms": ["to_int"]}
    assert by_source["employee number"]["transforms"] == ["trim", "to_int"]
    assert by_source["employee number"]["target"] == "EMPLOYEE_NUMBER"
    assert by_source["hired"]["transforms"] == ["to_date"]
    assert by_source["updated_at"]["transforms"] == ["to_timestamp"]
    assert by_source["profile.address.city"]["target"] == "PROFILE_ADDRESS_CITY"

    # The block is usable as is: the real mapping code maps the same page with no error.
    page = [json.dumps(r).encode() for r in RECORDS[:PAGE_SIZE]]
    result = apply_mappings(records_frame(page), [MappingConfig(**m) for m in block])
    assert result.errors.height == 0, result.errors
    assert result.rows.height == PAGE_SIZE
    assert result.rows["EMPLOYEE_NUMBER"].to_list() == [2000, 2001, 2002]
    assert result.rows["HIRED"].to_list()[0] == dt.date(2024, 1, 10)


def test_preview_names_a_refused_token_without_printing_it(
    api: FixtureServer, pg: PgServer, pg_db: str, tmp_path: Path
) -> None:
    defs = write_yaml(tmp_path / "hr", api_task(api, pg, pg_db))
    env = clean_env(ADU_TEST_HR_TOKEN="wrong-" + TOKEN)
    proc = run_adu(["preview", str(defs), "--partition", "2026-03-01"], env)
    assert proc.returncode == 1
    assert "401" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(extra)
    return env


def run_adu(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from adu_assets.cli import main; sys.exit(main())", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_test_connection_ok_for_api_and_postgres_destination_and_source(
    api: FixtureServer, pg: PgServer, chinook: str, pg_db: str, tmp_path: Path
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute('CREATE TABLE public.employees ("EMPLOYEE_ID" bigint PRIMARY KEY, "CITY" text)')
    api_file = write_yaml(tmp_path / "hr", api_task(api, pg, pg_db))
    export = {
        "type": "adu_assets.DatabaseExport",
        "attributes": {
            "name": "chinook",
            "connection": pg_connection_yaml(pg, chinook),
            "schema": "public",
            "start_date": "2026-01-01",
            "tables": [{"name": "invoice"}, {"name": "track"}],
        },
    }
    export_file = write_yaml(tmp_path / "chinook", export)
    env = clean_env(ADU_TEST_HR_TOKEN=TOKEN, ADU_TEST_PG_PASSWORD=pg.password)

    proc = run_adu(["test-connection", str(api_file)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("hr_employees: api http://127.0.0.1:") and ": ok (GET " in lines[0]
    assert "records on the first page" in lines[0]
    assert (
        lines[1].startswith("hr_employees: destination postgres://")
        and "ok (table public.employees has 2 columns)" in lines[1]
    )

    proc = run_adu(["test-connection", str(export_file)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        proc.stdout.startswith("chinook: source postgres://")
        and "ok (11 base tables in schema public)" in proc.stdout
    )
    for out in (proc.stdout, proc.stderr):
        assert pg.password not in out and TOKEN not in out


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("wrong_password", "password authentication failed"),
        ("missing_env", "ADU_TEST_PG_PASSWORD, which is not set"),
        ("no_table", "employees_missing"),
        ("bad_token", "401"),
    ],
)
def test_test_connection_gives_one_clear_reason(
    breakage: str, expected: str, api: FixtureServer, pg: PgServer, pg_db: str, tmp_path: Path
) -> None:
    with pg.connect(pg_db) as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS public.employees ("EMPLOYEE_ID" bigint PRIMARY KEY)')
    table = "public.employees_missing" if breakage == "no_table" else "public.employees"
    defs = write_yaml(tmp_path / "hr", api_task(api, pg, pg_db, table))
    wrong = "not-" + pg.password
    env = clean_env(ADU_TEST_HR_TOKEN=TOKEN, ADU_TEST_PG_PASSWORD=pg.password)
    if breakage == "wrong_password":
        env["ADU_TEST_PG_PASSWORD"] = wrong
    if breakage == "missing_env":
        del env["ADU_TEST_PG_PASSWORD"]
    if breakage == "bad_token":
        env["ADU_TEST_HR_TOKEN"] = "stale-" + TOKEN

    proc = run_adu(["test-connection", str(defs)], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1, proc.stdout
    assert expected in failed[0], failed[0]
    assert len(failed[0]) < 600
    everything = proc.stdout + proc.stderr
    for secret in (pg.password, wrong, TOKEN):
        assert secret not in everything
    assert "Traceback" not in everything


def test_test_connection_folder_and_bad_files(tmp_path: Path) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "a.csv").write_text("x\n1\n")
    (drop / "b.json").write_text("{}")
    doc = {
        "type": "adu_assets.FileDrop",
        "attributes": {"name": "drops", "folder": str(drop), "glob": "*.csv"},
    }
    out = io.StringIO()
    assert run_test_connection(write_yaml(tmp_path / "fd", doc), out) == 0
    assert out.getvalue().strip() == f"drops: folder: ok (folder {drop}: 1 files match '*.csv')"

    doc["attributes"]["folder"] = str(tmp_path / "nowhere")
    out = io.StringIO()
    assert run_test_connection(write_yaml(tmp_path / "fd", doc), out) == 1
    assert "FAILED: folder" in out.getvalue() and "does not exist" in out.getvalue()

    # A plain password in the YAML is refused, naming the field, before anything is opened.
    bad = {
        "type": "adu_assets.DatabaseExport",
        "attributes": {
            "name": "x",
            "connection": {
                "kind": "postgres",
                "host": "h",
                "database": "d",
                "user": "u",
                "password": "hunter2",
            },
            "start_date": "2026-01-01",
        },
    }
    proc = run_adu(["test-connection", str(write_yaml(tmp_path / "bad", bad))], clean_env())
    assert proc.returncode == 1
    assert "password_env" in proc.stderr and "hunter2" not in proc.stderr + proc.stdout
    proc = run_adu(["preview", str(tmp_path / "missing" / "defs.yaml")], clean_env())
    assert proc.returncode == 1 and "no such file" in proc.stderr
