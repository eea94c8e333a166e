"""Issue 11 points 3 and 4 for HTTP: one retry layer (a 500 costs `max_attempts` requests, not that times
the step retries), pagination guards fail once, and a request has a total deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adu_assets.sources.http import ApiError, RequestConfig, fetch_to_parquet
from adu_assets_tests.conftest import pg_connection_yaml
from adu_assets_tests.defs_helpers import load, run_partition, write_component
from adu_assets_tests.http_fixture_server import Reply, Seen, running_fixture_server
from adu_assets_tests.pg_server import PgServer

KEY = dg.AssetKey(["hr_people"])


@pytest.fixture(autouse=True)
def fast_step_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Were the step to retry, it would do so at once: the tests count attempts, not seconds.
    monkeypatch.setattr("adu_assets.automation.retries.NETWORK_RETRY_DELAY_S", 0)


@pytest.fixture
def people_db(pg: PgServer, pg_db: str) -> str:
    with pg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE people (person_id int PRIMARY KEY, name text)")
    return pg_db


def task(url: str, pg: PgServer, db: str, pagination: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "hr_people",
        "request": {
            "url": url,
            "pagination": pagination or {"type": "none"},
            "records_path": "items",
            "retry": {"max_attempts": 4, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02},
        },
        "start_date": "2026-01-01",
        "mappings": [
            {"source": "id", "target": "person_id", "transforms": ["to_int"]},
            {"source": "name", "target": "name"},
        ],
        "destination": {
            "connection": pg_connection_yaml(pg, db),
            "table": "people",
            "mode": "upsert",
            "keys": ["person_id"],
        },
    }


def step_attempts(result: dg.ExecuteInProcessResult) -> int:
    return 1 + sum(1 for e in result.all_events if e.event_type_value == "STEP_RESTARTED")


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.to_string()  # type: ignore[union-attr]


def run_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    write_component(tmp_path / "defs", "hr", "adu_assets.ApiIngest", cfg)
    return run_partition(load(tmp_path / "defs", monkeypatch), [KEY], "2026-01-02")


def test_http_500_costs_client_attempts_only(
    pg: PgServer,
    people_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_fixture_server() as api:
        api.route("/people", lambda s: Reply(500, {"error": "boom"}))
        result = run_task(tmp_path, monkeypatch, task(api.url("/people"), pg, people_db))
        assert not result.success
        # retry.max_attempts = 4 in the client, and no step retry on top (was 4 x 4 = 16).
        assert len(api.requests("/people")) == 4
    assert step_attempts(result) == 1
    assert "HTTP 500" in failure_text(result) and "gave up after 4 attempts" in failure_text(result)


def test_http_500_then_ok_succeeds_in_the_client(
    pg: PgServer,
    people_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def flaky(seen: Seen) -> Reply:
        calls.append(1)
        if len(calls) < 3:
            return Reply(503, {"error": "restarting"})
        return Reply(200, {"items": [{"id": "1", "name": "Ada"}]})

    with running_fixture_server() as api:
        api.route("/people", flaky)
        result = run_task(tmp_path, monkeypatch, task(api.url("/people"), pg, people_db))
        assert result.success
        assert len(api.requests("/people")) == 3
    assert step_attempts(result) == 1
    with pg.connect(people_db) as conn:
        assert conn.execute("SELECT person_id, name FROM people").fetchall() == [(1, "Ada")]


def test_repeating_cursor_fails_once(
    pg: PgServer,
    people_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_fixture_server() as api:
        api.route("/people", lambda s: Reply(200, {"items": [{"id": "1", "name": "x"}], "next": "same"}))
        cfg = task(
            api.url("/people"),
            pg,
            people_db,
            {"type": "cursor", "cursor_path": "next", "cursor_param": "cursor"},
        )
        result = run_task(tmp_path, monkeypatch, cfg)
        assert not result.success
        # page 0 (cursor "same"), page 1 (cursor "same" again): stop. Was 8 with 4 step attempts.
        assert len(api.requests("/people")) == 2
    assert step_attempts(result) == 1
    assert "same cursor twice" in failure_text(result)


def test_max_pages_exceeded_fails_once(
    pg: PgServer,
    people_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_fixture_server() as api:
        api.route("/people", lambda s: Reply(200, {"items": [{"id": s.query.get("page", "0"), "name": "x"}]}))
        cfg = task(api.url("/people"), pg, people_db, {"type": "page", "page_param": "page", "max_pages": 30})
        result = run_task(tmp_path, monkeypatch, cfg)
        assert not result.success
        assert len(api.requests("/people")) == 30  # was 120: four full re-paginations
    assert step_attempts(result) == 1
    assert "max_pages = 30" in failure_text(result)


# --- the request deadline ------------------------------------------------------------------------


@contextmanager
def trickling_server(*, in_headers: bool, total: int = 60, every_s: float = 2.0) -> Iterator[dict[str, Any]]:
    """A loopback server that answers one byte every `every_s` seconds, in the body (after complete
    headers announcing `total` bytes) or inside the status line itself. Counts what it sent."""
    srv = socket.create_server(("127.0.0.1", 0))
    state: dict[str, Any] = {"port": srv.getsockname()[1], "sent": 0, "stop": threading.Event()}

    def serve() -> None:
        srv.settimeout(0.2)
        while not state["stop"].is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n".encode()
                body = b"[" + b" " * (total - 2) + b"]"
                data = body if not in_headers else head + body
                if not in_headers:
                    conn.sendall(head)
                for i in range(len(data)):
                    if state["stop"].wait(every_s if i else 0):
                        break
                    try:
                        conn.sendall(data[i : i + 1])
                    except OSError:
                        break
                    state["sent"] += 1

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield state
    finally:
        state["stop"].set()
        t.join(5)
        srv.close()


@pytest.mark.parametrize("in_headers", [False, True], ids=["trickled-body", "trickled-headers"])
def test_request_deadline_cuts_a_trickling_server(tmp_path: Path, in_headers: bool) -> None:
    total = 60  # 60 bytes at one per 2 s would hold the request for about 2 minutes
    with trickling_server(in_headers=in_headers, total=total) as server:
        request = RequestConfig.model_validate(
            {
                "url": f"http://127.0.0.1:{server['port']}/slow",
                "retry": {"timeout_seconds": 5, "max_attempts": 1},
            }
        )
        started = time.monotonic()
        with pytest.raises(ApiError) as err:
            fetch_to_parquet(request, {}, tmp_path / "out")
        elapsed = time.monotonic() - started
        sent = server["sent"]
    assert "timeout_seconds = 5" in str(err.value)
    # Cut at the deadline: a handful of bytes (one per 2 s), far from the whole response.
    assert 0 < sent < total // 2, (sent, elapsed)
    assert not (tmp_path / "out").exists()


def test_unreachable_destination_is_transient_and_retried_by_the_step(
    pg: PgServer,
    people_db: str,
    pg_password_env: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    with running_fixture_server() as api:
        api.route("/people", lambda s: Reply(200, {"items": [{"id": "1", "name": "Ada"}]}))
        cfg = task(api.url("/people"), pg, people_db)
        cfg["destination"]["connection"]["port"] = closed_port  # nothing listens: connection refused
        result = run_task(tmp_path, monkeypatch, cfg)
        assert not result.success
        # A refused connection can go away: the step policy retries it (3 retries), one request per attempt.
        assert step_attempts(result) == 4
        assert len(api.requests("/people")) == 4
    assert (
        "Connection refused" in failure_text(result) or "connection refused" in failure_text(result).lower()
    )
