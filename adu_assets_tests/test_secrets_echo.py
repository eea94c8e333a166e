"""Secrets stay secret in every encoding a server can echo them in (issue 12).

A loopback API answers 401 and 500 with bodies that echo the credentials it was sent: literal,
URL-encoded (quote and quote_plus), JSON-escaped and base64 (the token alone, `user:password`, the whole
Authorization header). The real `dagster asset materialize` CLI runs four API tasks against it (bearer,
API key in the query string, basic with a Fernet-encrypted password, oauth2 client credentials); then every
byte of DAGSTER_HOME (SQLite, compute logs), ADU_DATA_DIR, the state folder, stdout and stderr, and the
GraphQL answers the UI reads (runConfigYaml, tags, logsForRun, asset nodes and their metadata, resources)
are searched for each form: 0 hits. The destinations hold `password_encrypted`: that Fernet token must not
be in any of those places either.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import pytest
from cryptography.fernet import Fernet

from adu_assets import secrets
from adu_assets.sources.http import error_excerpt
from adu_assets_tests.defs_helpers import load, write_component
from adu_assets_tests.http_fixture_server import FixtureServer, Reply, Seen, running_fixture_server

# Each secret has a unique plain prefix (found in any textual form that keeps it, however often escaped)
# and ends in characters every encoding changes: + / " and a space.
RUN = uuid.uuid4().hex[:8]
BEARER = f'BearerCnry{RUN}+7f3a91/"x y'
API_KEY = f'KeyCnry{RUN}+7f3a91/"x y'
BASIC_USER = "svc_reader"
BASIC_PW = f'PwCnry{RUN}+7f3a91/"x y'
CLIENT_SECRET = f'ClientCnry{RUN}+7f3a91/"x y'
ACCESS = f'AccessCnry{RUN}+7f3a91/"x y'
DEST_PW = f'DestCnry{RUN}+7f3a91/"x y'
PARTITION = "2026-01-02"
TASKS = ("echo_bearer", "echo_key", "echo_basic", "echo_oauth")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def encodings(secret: str) -> dict[str, str]:
    return {
        "literal": secret,
        "quote": quote(secret, safe=""),
        "quote_default": quote(secret),
        "quote_plus": quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
        "base64": b64(secret),
    }


def header_encodings() -> dict[str, str]:
    pair = f"{BASIC_USER}:{BASIC_PW}"
    return {
        "b64 Bearer header": b64(f"Bearer {BEARER}"),
        "b64 user:password": b64(pair),
        "b64 Basic header": b64(f"Basic {b64(pair)}"),
        "b64 oauth Bearer header": b64(f"Bearer {ACCESS}"),
    }


def needles(fernet_tokens: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, secret in (
        ("bearer", BEARER),
        ("api_key", API_KEY),
        ("basic_pw", BASIC_PW),
        ("client_secret", CLIENT_SECRET),
        ("access_token", ACCESS),
        ("destination_pw", DEST_PW),
    ):
        for form, value in encodings(secret).items():
            out[f"{name} {form}"] = value.encode()
        # The plain prefix: catches forms nobody listed, e.g. JSON escaped twice inside a serialized event.
        out[f"{name} prefix"] = secret.split("+")[0].encode()
    for form, value in header_encodings().items():
        out[form] = value.encode()
    for i, token in enumerate(fernet_tokens):
        out[f"fernet token {i}"] = token.encode()
    return out


def echo_body(seen: Seen, secret: str, what: str) -> bytes:
    """What a careless API puts in an error body: the credential in every form, then the request echoed."""
    auth = seen.headers.get("authorization", "")
    lines = [f"{what}. Echo of your credentials:"]
    lines += [f"{form}: {value}" for form, value in encodings(secret).items()]
    lines += [f"key={quote_plus(secret)}", json.dumps({"token": secret})]
    if auth:
        lines.append(f"b64 of the Authorization header: {b64(auth)}")
    lines.append(f"b64 of user:password: {b64(f'{BASIC_USER}:{BASIC_PW}')}")
    lines.append(
        f"request: {seen.method} {seen.path}?{'&'.join(f'{k}={quote_plus(v)}' for k, v in seen.query.items())}"
    )
    lines.append(f"headers: {json.dumps(seen.headers)}")
    return "\n".join(lines).encode()


def serve(api: FixtureServer) -> None:
    api.route(
        "/bearer",
        lambda s: Reply(401, echo_body(s, BEARER, "401 unauthorized"), {"Content-Type": "text/plain"}),
    )
    api.route(
        "/key",
        lambda s: Reply(500, echo_body(s, API_KEY, "500 internal error"), {"Content-Type": "text/plain"}),
    )
    api.route(
        "/basic",
        lambda s: Reply(401, echo_body(s, BASIC_PW, "401 bad password"), {"Content-Type": "text/plain"}),
    )
    api.route(
        "/token", lambda s: Reply(200, {"access_token": ACCESS, "token_type": "bearer", "expires_in": 3600})
    )
    # The oauth API echoes the access token it was sent, and the client secret for good measure.
    api.route(
        "/oauth",
        lambda s: Reply(
            401, echo_body(s, ACCESS, "401 token revoked") + b"\n" + echo_body(s, CLIENT_SECRET, "client")
        ),
    )


def task(name: str, url: str, auth: dict[str, Any], dest_token: str, **request: Any) -> dict[str, Any]:
    return {
        "name": name,
        "request": {
            "url": url,
            "params": {"day": "{partition_key}"},
            "auth": auth,
            "retry": {"max_attempts": 2, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02},
            **request,
        },
        "start_date": "2026-01-01",
        "mappings": [{"source": "id", "target": "id"}],
        "destination": {
            # Never reached: every fetch fails first. Its token must still not show anywhere.
            "connection": {
                "kind": "postgres",
                "host": "127.0.0.1",
                "port": 9,
                "database": "hr",
                "user": "loader",
                "password_encrypted": dest_token,
            },
            "table": "employees",
            "mode": "upsert",
            "keys": ["id"],
        },
    }


def write_tasks(defs_dir: Path, api: FixtureServer, key: str) -> list[str]:
    dest_token = secrets.encrypt(DEST_PW, keys=key)
    basic_token = secrets.encrypt(BASIC_PW, keys=key)
    tasks = [
        task("echo_bearer", api.url("/bearer"), {"type": "bearer", "token_env": "ECHO_BEARER"}, dest_token),
        task(
            "echo_key",
            api.url("/key"),
            {"type": "api_key", "api_key_env": "ECHO_KEY", "api_key_in": "query", "api_key_name": "key"},
            dest_token,
        ),
        task(
            "echo_basic",
            api.url("/basic"),
            {"type": "basic", "username": BASIC_USER, "password_encrypted": basic_token},
            dest_token,
        ),
        task(
            "echo_oauth",
            api.url("/oauth"),
            {
                "type": "oauth2_client_credentials",
                "token_url": api.url("/token"),
                "client_id": "adu",
                "client_secret_env": "ECHO_CLIENT_SECRET",
            },
            dest_token,
        ),
    ]
    for t in tasks:
        write_component(defs_dir, t["name"], "adu_assets.ApiIngest", t)
    return [dest_token, basic_token]


def hits(data: bytes, found: dict[str, bytes]) -> list[str]:
    return [name for name, needle in found.items() if needle in data]


def files_with(root: Path, found: dict[str, bytes]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in root.rglob("*"):
        if p.is_file():
            h = hits(p.read_bytes(), found)
            if h:
                out[str(p.relative_to(root))] = h
    return out


# --- fast checks of the pieces -----------------------------------------------------------------------


def test_every_echoed_form_is_redacted() -> None:
    secrets.register_secret(BEARER)
    secrets.register_secret(f"Bearer {BEARER}")
    pair = secrets.register_secret(f"{BASIC_USER}:{BASIC_PW}")
    secrets.register_secret(f"Basic {b64(pair)}")
    seen = Seen("GET", "/x", {"key": API_KEY}, {"authorization": f"Bearer {BEARER}"}, b"")
    text = secrets.redact(echo_body(seen, BEARER, "401").decode())
    for name, needle in {**encodings(BEARER), **header_encodings()}.items():
        if "oauth" in name:
            continue
        assert needle not in text, name
    # base64 of a JSON document that holds the token, at every alignment.
    for pad in ("", "a", "ab"):
        blob = b64(json.dumps({"pad": pad, "auth": f"Bearer {BEARER}"}))
        cleaned = secrets.redact(blob)
        # All but the 2 boundary characters on each side of the token's base64 are gone.
        escaped_len = len(json.dumps(BEARER)) - 2
        assert len(cleaned.replace("***", "")) <= len(blob) - (escaped_len * 4 // 3 - 4), pad


def test_excerpt_is_redacted_before_it_is_cut() -> None:
    secrets.register_secret(API_KEY)
    # The key starts inside the first 500 characters and ends after them.
    body = ("x" * (497 - len("key="))).encode() + b"key=" + quote_plus(API_KEY).encode() + b" tail"
    excerpt = error_excerpt(body)
    assert len(excerpt) <= 501
    assert "KeyC" not in excerpt and quote_plus(API_KEY)[:3] not in excerpt[-10:]


def test_unregistered_credentials_in_an_echo_are_masked() -> None:
    body = b'{"headers": {"Authorization": "Bearer never-registered-123456", "X-Api-Key": "k-9988776655"}}'
    text = error_excerpt(body)
    assert "never-registered" not in text and "k-9988776655" not in text
    assert '"Authorization": "***"' in text


def test_credentials_written_into_headers_and_params_are_redacted_too(tmp_path: Path) -> None:
    from adu_assets.sources.http import ApiHttpError, RequestConfig, fetch_to_parquet

    header_token = f"HdrCnry{RUN}+1/x"
    param_token = f"PrmCnry{RUN}+2/x"
    with running_fixture_server() as api:
        api.route(
            "/h", lambda s: Reply(403, echo_body(s, header_token, "403") + echo_body(s, param_token, ""))
        )
        request = RequestConfig.model_validate(
            {
                "url": api.url("/h"),
                "headers": {"Authorization": f"Token {header_token}"},
                "params": {"access_token": param_token},
            }
        )
        with pytest.raises(ApiHttpError) as err:
            fetch_to_parquet(request, {}, tmp_path / "raw")
    message = str(err.value)
    assert "HTTP 403" in message
    assert f"HdrCnry{RUN}" not in message and f"PrmCnry{RUN}" not in message
    for secret in (header_token, param_token):
        for form in encodings(secret).values():
            assert form not in message


def test_unforeseen_errors_leave_the_step_redacted() -> None:
    from adu_assets.components.api_ingest import _redacted_failure

    secrets.register_secret(BEARER)
    try:
        try:
            raise KeyError(f"header {quote_plus(BEARER)} unexpected")
        except KeyError as inner:
            raise RuntimeError(f"wrapped {json.dumps(BEARER)}") from inner
    except RuntimeError as e:
        failure = _redacted_failure(e, "echo_bearer")
    text = failure.description or ""
    assert "KeyError" in text and "RuntimeError" in text and "Traceback" in text
    assert BEARER.split("+")[0] not in text


def test_destination_token_is_not_in_the_definitions_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_home: Path
) -> None:
    """What the UI and GraphQL read about definitions (asset metadata, descriptions, tags, resources, jobs)
    is the serialized repository snapshot: neither the Fernet tokens nor the destination block are in it."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("ADU_FERNET_KEY", key)
    with running_fixture_server() as api:
        tokens = write_tasks(tmp_path / "defs", api, key)
        # A database export's source connection with a Fernet token, beside the API tasks.
        export_token = secrets.encrypt(DEST_PW, keys=key)
        tokens.append(export_token)
        conn = {
            "kind": "postgres",
            "host": "127.0.0.1",
            "port": 9,
            "database": "hr",
            "user": "reader",
            "password_encrypted": export_token,
            "options": {"sslmode": "prefer"},
        }
        write_component(
            tmp_path / "defs",
            "export",
            "adu_assets.DatabaseExport",
            {
                "name": "hr_export",
                "connection": conn,
                "start_date": "2021-01-01",
                "tables": [{"name": "genre"}, {"name": "invoice", "incremental_column": "invoice_date"}],
            },
        )
        defs = load(tmp_path / "defs", monkeypatch)
    repo = defs.get_repository_def()
    snapshot = serialize_value(RepositorySnap.from_def(repo))
    assert "echo_bearer" in snapshot and "hr_export" in snapshot  # the snapshot really holds the tasks
    for token in tokens:
        assert token not in snapshot
        assert token[:40] not in snapshot
    assert 'adu/destination"' not in snapshot and "password_encrypted" not in snapshot
    node = defs.get_assets_def(dg.AssetKey(["echo_basic"]))
    assert "adu/destination" not in node.metadata_by_key[dg.AssetKey(["echo_basic"])]
    assert node.metadata_by_key[dg.AssetKey(["echo_basic"])]["adu/destination_table"] == "employees"


# --- the whole thing, through the real CLI ----------------------------------------------------------

RUNS = """{ runsOrError { ... on Runs { results { runId status runConfigYaml tags { key value }
  assetSelection { path } } } } }"""
ERROR = "fragment E on PythonError { message stack className causes { message stack } }"
META = """fragment M on MetadataEntry { label description
  ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr } ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } }"""
LOGS = (
    """query($runId: ID!) { logsForRun(runId: $runId) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message level stepKey }
  ... on ExecutionStepFailureEvent { error { ...E } failureMetadata { metadataEntries { ...M } } }
  ... on RunFailureEvent { error { ...E } }
  ... on EngineEvent { error { ...E } metadataEntries { ...M } } } } } }"""
    + ERROR
    + META
)
ASSETS = (
    """{ assetNodes { assetKey { path } description opNames jobNames groupName kinds
  tags { key value } metadataEntries { ...M } } }"""
    + META
)
RESOURCES = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name
  allTopLevelResourceDetails { name description resourceType configFields { name description }
  configuredValues { key value type } } } } } }"""


@pytest.fixture
def graphql(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs a GraphQL query the way the UI does, in process, against DAGSTER_HOME and the defs folder."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    contexts: list[Any] = []

    def run(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        if not contexts:
            instance = dg.DagsterInstance.get()
            target = InProcessWorkspaceLoadTarget(
                InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(module_name="adu_assets.definitions", working_directory=os.getcwd()),
                    location_name="adu",
                )
            )
            contexts.append(WorkspaceProcessContext(instance, target))
        result = execute_dagster_graphql(contexts[0].create_request_context(), query, variables)
        assert not result.errors, result.errors
        return dict(result.data)

    yield run
    for c in contexts:
        c.__exit__(None, None, None)


@pytest.mark.slow
def test_echoed_credentials_never_stored_printed_or_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graphql: Any
) -> None:
    home, data, defs_dir, state = tmp_path / "home", tmp_path / "data", tmp_path / "defs", tmp_path / "state"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    key = Fernet.generate_key().decode()
    with running_fixture_server() as api:
        serve(api)
        tokens = write_tasks(defs_dir, api, key)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            DAGSTER_HOME=str(home),
            ADU_DATA_DIR=str(data),
            ADU_DEFS_DIR=str(defs_dir),
            ADU_STATE_DIR=str(state),
            ADU_FERNET_KEY=key,
            ECHO_BEARER=BEARER,
            ECHO_KEY=API_KEY,
            ECHO_CLIENT_SECRET=CLIENT_SECRET,
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "adu_assets.definitions",
                "--select",
                ",".join(TASKS),
                "--partition",
                PARTITION,
                # Dagster's step retries would only repeat the same failures, 70 s later.
                "--config-json",
                json.dumps({"execution": {"config": {"retries": {"disabled": {}}}}}),
            ],
            env=env,
            capture_output=True,
            timeout=600,
        )
        # Every task reached its server and failed on its answer, so every echo was produced.
        assert proc.returncode != 0
        for path in ("/bearer", "/key", "/basic", "/oauth", "/token"):
            assert api.requests(path), path
        # 500 is retried by the client (2 attempts); 401 is not; oauth fetches a new token once on 401.
        assert len(api.requests("/key")) == 2 and len(api.requests("/bearer")) == 1
        assert len(api.requests("/oauth")) == 2
    out = proc.stdout + proc.stderr
    for status in (b"HTTP 401", b"HTTP 500"):
        assert status in out, out.decode()[-3000:]

    found = needles(tokens)
    assert hits(proc.stdout, found) == []
    assert hits(proc.stderr, found) == []
    assert files_with(home, found) == {}
    assert files_with(state, found) == {} if state.exists() else True
    if data.exists():
        assert files_with(data, found) == {}
    # The search looked at real run history: the event log holds the failures and their redacted excerpts.
    assert any(home.rglob("*.db"))
    assert b"credentials removed" in b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())

    # What the UI shows, asked the way the UI asks.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ADU_DATA_DIR", str(data))
    monkeypatch.setenv("ADU_DEFS_DIR", str(defs_dir))
    monkeypatch.setenv("ADU_STATE_DIR", str(state))
    monkeypatch.setenv("ADU_FERNET_KEY", key)
    answers: dict[str, Any] = {"runs": graphql(RUNS)}
    runs = answers["runs"]["runsOrError"]["results"]
    assert len(runs) == 1 and runs[0]["status"] == "FAILURE"
    answers["logs"] = graphql(LOGS, {"runId": runs[0]["runId"]})
    answers["assets"] = graphql(ASSETS)
    answers["resources"] = graphql(RESOURCES)
    events = answers["logs"]["logsForRun"]["events"]
    failures = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert len(failures) == len(TASKS)
    # The 500 is the cause of the (disabled) step retry; the 401s fail the step themselves.
    assert any("HTTP 500" in json.dumps(f["error"]) for f in failures)
    assert sum("HTTP 401" in f["error"]["message"] for f in failures) == 3
    assert {tuple(n["assetKey"]["path"]) for n in answers["assets"]["assetNodes"]} >= {(t,) for t in TASKS}
    text = json.dumps(answers).encode()
    # JSON-dumping the answers escapes them again; search the raw strings as well.
    raw = "\n".join(_strings(answers)).encode()
    assert hits(text, found) == []
    assert hits(raw, found) == []


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
