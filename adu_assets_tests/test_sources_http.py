"""The API extract against a real HTTP server on 127.0.0.1: pagination, auth, retries, failures."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from adu_assets.secrets import encrypt, generate_key
from adu_assets.sources import http as api
from adu_assets.sources.http import (
    ApiHttpError,
    ApiResponseError,
    AuthConfig,
    PaginationConfig,
    PaginationError,
    RequestConfig,
    RetryConfig,
    fetch_to_parquet,
    render_template,
    retry_delay,
)
from adu_assets_tests.http_fixture_server import FixtureServer, Reply, Seen, running_fixture_server

CANARY = "canary-7f3a9c1e-do-not-leak"
FAST_RETRY = {"backoff_base_seconds": 0.001, "backoff_max_seconds": 0.005, "retry_after_max_seconds": 0.01}
TOTAL = 23  # not a multiple of any page size used below, so the last page is short


def record(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "profile": {"address": {"city": f"c{i % 3}"}}, "tags": ["x", str(i)]}


ALL = [record(i) for i in range(TOTAL)]


@pytest.fixture
def server() -> Any:
    with running_fixture_server() as s:
        yield s


def request(server: FixtureServer, path: str, **kw: Any) -> RequestConfig:
    kw.setdefault("retry", FAST_RETRY)
    return RequestConfig(url=server.url(path), **kw)


def raw_records(files: list[Path]) -> pl.DataFrame:
    return pl.read_parquet(files) if files else pl.DataFrame()


def ids(files: list[Path]) -> list[int]:
    return [json.loads(r)["id"] for r in raw_records(files)["_raw"]]


# --- pagination ------------------------------------------------------------------------------------


def test_no_pagination_body_is_the_list(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/all", lambda s: Reply(200, ALL[:5]))
    result = fetch_to_parquet(request(server, "/all"), {}, tmp_path / "out")
    df = raw_records(result.raw_files)
    assert (result.records, result.pages, result.requests, result.retries) == (5, 1, 1, 0)
    assert df.columns == ["_page", "_record_index", "_raw"]
    assert df["_record_index"].to_list() == [0, 1, 2, 3, 4]
    assert json.loads(df["_raw"][2]) == ALL[2]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["raw-00000.parquet"]


def page_handler(s: Seen) -> Reply:
    page, size = int(s.query["page"]), int(s.query["per_page"])
    items = ALL[(page - 1) * size : page * size]
    return Reply(200, {"data": {"items": items}, "meta": {"total": TOTAL}})


@pytest.mark.parametrize("total_path", [None, "meta.total"])
def test_page_pagination(server: FixtureServer, tmp_path: Path, total_path: str | None) -> None:
    server.route("/p", page_handler)
    cfg = request(
        server,
        "/p",
        records_path="data.items",
        pagination={"type": "page", "size_param": "per_page", "page_size": 5, "total_path": total_path},
    )
    result = fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert result.records == TOTAL
    pages = sorted(int(s.query["page"]) for s in server.requests("/p"))
    # Without a total the client learns the end from an empty 6th page; with it, 5 pages are enough.
    assert pages == ([1, 2, 3, 4, 5, 6] if total_path is None else [1, 2, 3, 4, 5])
    assert result.requests == len(pages)


def test_concurrent_pages_land_in_page_order(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/p", page_handler)
    cfg = request(
        server,
        "/p",
        records_path="data.items",
        concurrency=4,
        pagination={"type": "page", "size_param": "per_page", "page_size": 2, "total_path": "meta.total"},
    )
    result = fetch_to_parquet(cfg, {}, tmp_path / "out")
    df = raw_records(result.raw_files)
    assert ids(result.raw_files) == list(range(TOTAL))
    assert df["_record_index"].to_list() == list(range(TOTAL))
    assert df["_page"].to_list() == [i // 2 for i in range(TOTAL)]
    assert result.requests == 12


def test_offset_pagination(server: FixtureServer, tmp_path: Path) -> None:
    def handler(s: Seen) -> Reply:
        off, lim = int(s.query["offset"]), int(s.query["limit"])
        return Reply(200, {"results": ALL[off : off + lim], "count": TOTAL})

    server.route("/o", handler)
    cfg = request(server, "/o", records_path="results", pagination={"type": "offset", "limit": 10})
    result = fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert [s.query["offset"] for s in server.requests("/o")] == ["0", "10", "20", "30"]


def test_cursor_pagination_post_with_templated_body(server: FixtureServer, tmp_path: Path) -> None:
    def handler(s: Seen) -> Reply:
        body = s.json()
        start = int(body.get("cursor") or 0)
        nxt = start + 10 if start + 10 < TOTAL else None
        return Reply(200, {"data": ALL[start : start + 10], "meta": {"next": nxt and str(nxt)}})

    server.route("/c", handler)
    cfg = request(
        server,
        "/c",
        method="POST",
        body={"filter": {"since": "{partition_start}"}, "kind": "{partition_key}"},
        records_path="data",
        pagination={
            "type": "cursor",
            "cursor_path": "meta.next",
            "cursor_param": "cursor",
            "location": "body",
        },
    )
    result = fetch_to_parquet(cfg, {"partition_start": "2026-01-01", "partition_key": "k1"}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    seen = server.requests("/c")
    assert [s.json().get("cursor") for s in seen] == [None, "10", "20"]
    assert all(s.json()["filter"] == {"since": "2026-01-01"} and s.json()["kind"] == "k1" for s in seen)


def test_cursor_loop_is_stopped(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/loop", lambda s: Reply(200, {"data": [record(1)], "next": "same"}))
    cfg = request(server, "/loop", records_path="data", pagination={"type": "cursor", "cursor_path": "next"})
    with pytest.raises(PaginationError, match="same cursor twice"):
        fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert len(server.requests("/loop")) == 2
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_next_url_pagination_relative_links(server: FixtureServer, tmp_path: Path) -> None:
    def handler(s: Seen) -> Reply:
        page = int(s.query.get("p", 0))
        nxt = f"/n?p={page + 1}&keep=1" if (page + 1) * 10 < TOTAL else None
        return Reply(200, {"items": ALL[page * 10 : page * 10 + 10], "links": {"next": nxt}})

    server.route("/n", handler)
    cfg = request(
        server,
        "/n",
        params={"keep": "1"},
        records_path="items",
        pagination={"type": "next_url", "next_url_path": "links.next"},
    )
    result = fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert [s.query for s in server.requests("/n")] == [
        {"keep": "1"},
        {"p": "1", "keep": "1"},
        {"p": "2", "keep": "1"},
    ]


def test_next_url_to_another_host_is_refused(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/n", lambda s: Reply(200, {"items": [record(1)], "next": "http://198.51.100.7/steal"}))
    cfg = request(
        server, "/n", records_path="items", pagination={"type": "next_url", "next_url_path": "next"}
    )
    with pytest.raises(PaginationError, match="another host"):
        fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert len(server.requests()) == 1


def test_link_header_pagination(server: FixtureServer, tmp_path: Path) -> None:
    def handler(s: Seen) -> Reply:
        page = int(s.query.get("page", 1))
        headers = {}
        if page * 10 < TOTAL:
            headers["Link"] = (
                f'<{server.url("/l")}?page={page + 1}>; rel="next", <{server.url("/l")}?page=3>; rel="last"'
            )
        return Reply(200, ALL[(page - 1) * 10 : page * 10], headers)

    server.route("/l", handler)
    result = fetch_to_parquet(request(server, "/l", pagination={"type": "link_header"}), {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert result.requests == 3


def test_max_pages_fails_instead_of_truncating(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/p", page_handler)
    cfg = request(
        server,
        "/p",
        records_path="data.items",
        pagination={"type": "page", "size_param": "per_page", "page_size": 2, "max_pages": 3},
    )
    with pytest.raises(PaginationError, match="max_pages = 3"):
        fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert len(server.requests("/p")) == 3


# --- auth ------------------------------------------------------------------------------------------------


def echo_auth(expected: dict[str, str], query: dict[str, str] | None = None) -> Any:
    def handler(s: Seen) -> Reply:
        ok = all(s.headers.get(k) == v for k, v in expected.items()) and all(
            s.query.get(k) == v for k, v in (query or {}).items()
        )
        return Reply(200, [record(1)]) if ok else Reply(401, {"error": "bad credentials"})

    return handler


def test_bearer_from_env(server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", CANARY)
    server.route("/a", echo_auth({"authorization": f"Bearer {CANARY}"}))
    cfg = request(server, "/a", auth={"type": "bearer", "token_env": "T_TOKEN"})
    assert fetch_to_parquet(cfg, {}, tmp_path / "out").records == 1


def test_api_key_header_from_fernet_token(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("ADU_FERNET_KEY", key)
    server.route("/a", echo_auth({"x-key": CANARY}))
    auth = {"type": "api_key", "api_key_encrypted": encrypt(CANARY, key), "api_key_name": "X-Key"}
    assert fetch_to_parquet(request(server, "/a", auth=auth), {}, tmp_path / "out").records == 1


def test_api_key_in_query_never_leaks(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_KEY", CANARY)
    server.route("/a", lambda s: Reply(403, {"error": "forbidden", "echo": s.query.get("apikey")}))
    cfg = request(
        server,
        "/a",
        auth={"type": "api_key", "api_key_env": "T_KEY", "api_key_in": "query", "api_key_name": "apikey"},
    )
    with pytest.raises(ApiHttpError) as err:
        fetch_to_parquet(cfg, {}, tmp_path / "out", log=logging.getLogger("adu_test"))
    assert server.requests("/a")[0].query["apikey"] == CANARY  # the key did go to the server...
    message = str(err.value)
    assert "403" in message and "/a" in message and "forbidden" in message
    assert CANARY not in message  # ...but neither the URL nor the echoed body in the error shows it
    assert CANARY not in caplog.text
    assert (
        err.value.__cause__ is None
        and err.value.__context__ is None
        or CANARY not in str(err.value.__context__)
    )


def test_basic_auth(server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PW", CANARY)
    expected = "Basic " + base64.b64encode(f"svc:{CANARY}".encode()).decode()
    server.route("/a", echo_auth({"authorization": expected}))
    cfg = request(server, "/a", auth={"type": "basic", "username": "svc", "password_env": "T_PW"})
    assert fetch_to_parquet(cfg, {}, tmp_path / "out").records == 1


class TokenServer:
    """An oauth2 client-credentials endpoint plus an API that checks the tokens it issued."""

    def __init__(self, server: FixtureServer, expires_in: int, revoke_first: bool = False) -> None:
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.expires_in = expires_in
        self.revoke_first = revoke_first
        server.route("/token", self.token)
        server.route("/api", self.api)

    def token(self, s: Seen) -> Reply:
        form = dict(kv.split("=", 1) for kv in s.body.decode().split("&"))
        if form.get("client_secret") != CANARY or form.get("grant_type") != "client_credentials":
            return Reply(401, {"error": "invalid_client"})
        tok = f"tok-{len(self.issued)}-{CANARY}"
        self.issued.append(tok)
        if self.revoke_first and len(self.issued) == 1:
            self.revoked.add(tok)
        return Reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": self.expires_in})

    def api(self, s: Seen) -> Reply:
        tok = s.headers.get("authorization", "").removeprefix("Bearer ")
        if tok not in self.issued or tok in self.revoked:
            return Reply(401, {"error": "invalid_token", "token": tok})
        page = int(s.query.get("page", 1))
        return Reply(200, {"items": ALL[(page - 1) * 10 : page * 10]})


def oauth_request(server: FixtureServer, **auth: Any) -> RequestConfig:
    return request(
        server,
        "/api",
        records_path="items",
        pagination={"type": "page", "page_size": 10},
        auth={
            "type": "oauth2_client_credentials",
            "token_url": server.url("/token"),
            "client_id": "adu",
            "client_secret_env": "T_SECRET",
            **auth,
        },
    )


def test_oauth2_token_is_cached_until_expiry(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_SECRET", CANARY)
    tokens = TokenServer(server, expires_in=3600)
    result = fetch_to_parquet(oauth_request(server), {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert len(server.requests("/token")) == 1
    assert len(server.requests("/api")) == 4
    assert tokens.issued == [f"tok-0-{CANARY}"]


def test_oauth2_expired_token_is_fetched_again(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_SECRET", CANARY)
    TokenServer(server, expires_in=0)  # expires at once: every API call needs a fresh token
    fetch_to_parquet(oauth_request(server), {}, tmp_path / "out")
    assert len(server.requests("/token")) == len(server.requests("/api")) == 4


def test_oauth2_refreshes_once_on_401(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_SECRET", CANARY)
    TokenServer(server, expires_in=3600, revoke_first=True)
    result = fetch_to_parquet(oauth_request(server), {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert len(server.requests("/token")) == 2
    statuses = [s.headers["authorization"].split("-")[1] for s in server.requests("/api")]
    assert statuses == ["0", "1", "1", "1", "1"]  # one call with the revoked token, then the new one
    assert result.retries == 1
    assert CANARY not in caplog.text


def test_oauth2_401_after_refresh_fails(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_SECRET", CANARY)
    tokens = TokenServer(server, expires_in=3600)
    server.route(
        "/api", lambda s: Reply(401, {"error": "invalid_token", "seen": s.headers.get("authorization")})
    )
    with pytest.raises(ApiHttpError, match="HTTP 401") as err:
        fetch_to_parquet(oauth_request(server), {}, tmp_path / "out")
    assert len(server.requests("/token")) == 2 and len(server.requests("/api")) == 2
    assert len(tokens.issued) == 2
    assert CANARY not in str(err.value) and CANARY not in caplog.text


def test_plain_secrets_are_rejected() -> None:
    with pytest.raises(ValueError, match="auth.token is not accepted.*token_env or token_encrypted"):
        AuthConfig.model_validate({"type": "bearer", "token": CANARY})
    with pytest.raises(ValueError, match="auth.client_secret is not accepted"):
        AuthConfig.model_validate({"type": "oauth2_client_credentials", "client_secret": "x"})
    with pytest.raises(ValueError, match="exactly one of auth.password_env"):
        AuthConfig.model_validate({"type": "basic", "username": "u"})


def test_unset_secret_env_names_the_field_not_a_value(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T_NOPE", raising=False)
    cfg = request(server, "/a", auth={"type": "bearer", "token_env": "T_NOPE"})
    with pytest.raises(ValueError, match="T_NOPE, which is not set"):
        fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert server.requests() == []


# --- retries -----------------------------------------------------------------------------------------


def flaky(failures: list[Reply]) -> Any:
    def handler(s: Seen) -> Reply:
        return failures.pop(0) if failures else Reply(200, [record(1), record(2)])

    return handler


def test_429_with_retry_after_then_success(server: FixtureServer, tmp_path: Path) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server.route(
        "/r", flaky([Reply(429, b"slow down", {"Retry-After": "1"}), Reply(429, b"", {"Retry-After": later})])
    )
    result = fetch_to_parquet(request(server, "/r"), {}, tmp_path / "out")
    assert (result.records, result.requests, result.retries) == (2, 3, 2)


def test_503_then_success(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/r", flaky([Reply(503, b"maintenance"), Reply(502, b"")]))
    result = fetch_to_parquet(request(server, "/r"), {}, tmp_path / "out")
    assert (result.records, result.requests, result.retries) == (2, 3, 2)
    assert len(server.requests("/r")) == 3


def test_503_gives_up_after_max_attempts(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/r", lambda s: Reply(503, b"down for good"))
    cfg = request(server, "/r", retry={**FAST_RETRY, "max_attempts": 3})
    with pytest.raises(ApiHttpError, match=r"HTTP 503.*gave up after 3 attempts.*down for good"):
        fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert len(server.requests("/r")) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(server: FixtureServer, tmp_path: Path, status: int) -> None:
    server.route("/r", lambda s: Reply(status, b"x" * 600 + b"TAIL"))
    with pytest.raises(ApiHttpError) as err:
        fetch_to_parquet(request(server, "/r", params={"q": "1"}), {}, tmp_path / "out")
    assert len(server.requests("/r")) == 1
    message = str(err.value)
    assert f"HTTP {status}" in message and server.url("/r?q=1") in message
    assert "x" * 500 in message and "TAIL" not in message  # the first 500 bytes of the body, no more
    assert err.value.status == status
    assert not (tmp_path / "out").exists()


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that is certainly closed: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cfg = RequestConfig(url=f"http://127.0.0.1:{port}/x", retry={**FAST_RETRY, "max_attempts": 2})
        with pytest.raises(api.ApiError, match="failed after 2 attempts: ConnectError"):
            fetch_to_parquet(cfg, {}, tmp_path / "out")


def test_retry_delay_honours_retry_after_and_caps() -> None:
    retry = RetryConfig(backoff_base_seconds=1, backoff_max_seconds=8, retry_after_max_seconds=60)
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_delay(retry, 1, "7") == 7.0
    assert retry_delay(retry, 1, "Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_delay(retry, 1, "3600") == 60.0  # capped
    assert retry_delay(retry, 1, "Wed, 31 Dec 2025 12:00:00 GMT", now=now) == 0.0  # a date in the past
    assert retry_delay(retry, 1, rand=lambda: 1.0) == 1.0
    assert retry_delay(retry, 3, rand=lambda: 1.0) == 4.0
    assert retry_delay(retry, 3, rand=lambda: 0.0) == 2.0  # jitter keeps at least half the step
    assert retry_delay(retry, 10, rand=lambda: 1.0) == 8.0  # capped at backoff_max_seconds
    assert retry_delay(retry, 2, "soon", rand=lambda: 1.0) == 2.0  # unparseable header: own backoff


# --- bad responses and atomic output ------------------------------------------------------------------


def test_truncated_json_fails_and_writes_nothing(server: FixtureServer, tmp_path: Path) -> None:
    good = json.dumps({"data": {"items": ALL[:5]}}).encode()

    def handler(s: Seen) -> Reply:
        page = int(s.query["page"])
        return Reply(200, good if page == 1 else good[: len(good) // 2])

    server.route("/t", handler)
    out = tmp_path / "out"
    cfg = request(server, "/t", records_path="data.items", pagination={"type": "page", "page_size": 5})
    with pytest.raises(ApiResponseError, match=r"page 1 from .*/t\?page=2.* is not valid JSON"):
        fetch_to_parquet(cfg, {}, out)
    assert len(server.requests("/t")) == 2  # a broken body is not retried
    assert list(tmp_path.iterdir()) == []


def test_failed_rerun_keeps_previous_output(server: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    server.route("/x", lambda s: Reply(200, ALL[:3]))
    first = fetch_to_parquet(request(server, "/x"), {}, out)
    server.route("/x", lambda s: Reply(200, b"[{"))
    with pytest.raises(ApiResponseError):
        fetch_to_parquet(request(server, "/x"), {}, out)
    assert ids(first.raw_files) == [0, 1, 2]
    server.route("/x", lambda s: Reply(200, ALL[3:5]))
    second = fetch_to_parquet(request(server, "/x"), {}, out)  # a successful re-run replaces, never appends
    assert ids(second.raw_files) == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_records_path_missing_is_a_clear_error(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/x", lambda s: Reply(200, {"result": {"rows": []}, "status": "ok"}))
    with pytest.raises(ApiResponseError, match=r"has no 'data.items' \(top-level keys: result, status\)"):
        fetch_to_parquet(request(server, "/x", records_path="data.items"), {}, tmp_path / "out")


def test_records_path_not_a_list(server: FixtureServer, tmp_path: Path) -> None:
    server.route("/x", lambda s: Reply(200, {"data": {"id": 1}}))
    with pytest.raises(ApiResponseError, match="records_path 'data'"):
        fetch_to_parquet(request(server, "/x", records_path="data"), {}, tmp_path / "out")


def test_pretty_printed_and_unicode_records_are_kept_one_per_line(
    server: FixtureServer, tmp_path: Path
) -> None:
    body = json.dumps(
        {"d": [{"name": "Zoë\nline", "n": {"k": [1, 2]}}, {"name": "東京"}]}, indent=2, ensure_ascii=False
    )
    server.route("/x", lambda s: Reply(200, body.encode()))
    result = fetch_to_parquet(request(server, "/x", records_path="d"), {}, tmp_path / "out")
    raws = raw_records(result.raw_files)["_raw"].to_list()
    assert all("\n" not in r for r in raws)
    assert [json.loads(r) for r in raws] == [{"name": "Zoë\nline", "n": {"k": [1, 2]}}, {"name": "東京"}]


def test_stdlib_json_fallback_matches(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/p", page_handler)
    cfg = request(
        server,
        "/p",
        records_path="data.items",
        pagination={"type": "page", "size_param": "per_page", "page_size": 5, "total_path": "meta.total"},
    )
    original = api._Decoder.__init__

    def without_msgspec(self: Any, records_path: Any, meta_paths: Any, use_msgspec: Any = None) -> None:
        original(self, records_path, meta_paths, use_msgspec=False)

    monkeypatch.setattr(api._Decoder, "__init__", without_msgspec)
    result = fetch_to_parquet(cfg, {}, tmp_path / "out")
    assert ids(result.raw_files) == list(range(TOTAL))
    assert json.loads(raw_records(result.raw_files)["_raw"][4]) == ALL[4]


def test_progress_is_logged(server: FixtureServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.route("/p", page_handler)
    cfg = request(
        server,
        "/p",
        records_path="data.items",
        pagination={"type": "page", "size_param": "per_page", "page_size": 5},
    )
    caplog.set_level(logging.INFO, logger="adu_test")
    fetch_to_parquet(cfg, {}, tmp_path / "out", log=logging.getLogger("adu_test"), log_every_pages=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "adu_test"]
    assert any("4 pages, 20 records so far" in m for m in messages)
    assert "fetched 23 records in 6 pages (6 requests, 0 retries)" in messages[-1]


# --- config ------------------------------------------------------------------------------------------------


def test_render_template_is_recursive_and_strict() -> None:
    variables = {
        "partition_start": "2026-01-01",
        "partition_end": "2026-01-02",
        "partition_key": "2026-01-01",
    }
    body = {
        "range": {"from": "{partition_start}", "to": "{partition_end}"},
        "ids": ["{partition_key}", 3],
        "raw": '{"a": 1}',
    }
    assert render_template(body, variables) == {
        "range": {"from": "2026-01-01", "to": "2026-01-02"},
        "ids": ["2026-01-01", 3],
        "raw": '{"a": 1}',
    }
    with pytest.raises(ValueError, match=r"unknown placeholder \{partition_stat\}"):
        render_template({"since": "{partition_stat}"}, variables)


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match="cursor_path is required"):
        PaginationConfig(type="cursor")
    with pytest.raises(ValueError, match="total_path only applies"):
        PaginationConfig(type="cursor", cursor_path="x", total_path="t")
    with pytest.raises(ValueError, match="records_path is required"):
        RequestConfig(url="http://h/x", pagination={"type": "cursor", "cursor_path": "next"})
    with pytest.raises(ValueError, match="http:// or https://"):
        RequestConfig(url="ftp://h/x")
    assert RequestConfig(url="http://h/x").retry.max_attempts == 5


def test_safe_url_strips_credentials() -> None:
    url = f"http://user:{CANARY}@h/x?a=1&access_token={CANARY}&mykey={CANARY}"
    shown = api.safe_url(url, {"mykey"})
    assert CANARY not in shown and "a=1" in shown
