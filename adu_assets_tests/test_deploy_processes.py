"""The deployment in deploy/, run as separate processes on loopback against the real PostgreSQL.

The code server, the daemon and the webserver start from deploy/dagster.yaml and deploy/workspace.yaml
(only the code server's host and port are changed to loopback), just as compose.yaml runs them. A run
launched through the webserver's GraphQL API goes through the whole path a user's click takes: queued by
the webserver, dequeued by the daemon, executed by the code server, recorded in PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from adu_assets_tests.pg_server import PgServer, free_port
from adu_assets_tests.test_run_storage_postgres import history_database

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
PARTITION = "2026-03-01"
DEMO_ASSETS = {
    ("shop", "main", "orders"),
    ("shop", "main", "customers"),
    ("shop", "main", "products"),
    ("inventory", "main", "warehouses"),
    ("inventory", "main", "stock_levels"),
}
T = TypeVar("T")


class DagsterProcess:
    """A dagster CLI process in its own process group, with its output in a file for failure messages."""

    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=dict(env), cwd=logs, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self, n: int = 3000) -> str:
        return (
            f"--- {self.name} (exit {self.proc.poll()}) ---\n"
            + self.log_path.read_text(errors="replace")[-n:]
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The code server and the webserver start children of their own: stop the whole group.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def processes() -> Iterator[list[DagsterProcess]]:
    started: list[DagsterProcess] = []
    try:
        yield started
    finally:
        for p in reversed(started):
            p.stop()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, procs: list[DagsterProcess]) -> T:
    """Poll `probe` until it returns a value; fail with every process's log if it never does or one dies."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.proc.poll() is not None]
        if dead:
            pytest.fail(
                f"{dead[0].name} exited while waiting for {what}\n" + "\n".join(p.tail() for p in procs)
            )
        try:
            value = probe()
            if value is not None:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(0.5)
    pytest.fail(
        f"gave up after {timeout:.0f}s waiting for {what} (last error: {last_error})\n"
        + "\n".join(p.tail() for p in procs)
    )


def http_json(url: str, body: Mapping[str, Any] | None = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def graphql(base: str, query: str, variables: Mapping[str, Any] | None = None) -> Any:
    reply = http_json(f"{base}/graphql", {"query": query, "variables": dict(variables or {})})
    if reply.get("errors"):
        raise AssertionError(f"GraphQL errors: {reply['errors']}")
    return reply["data"]


def webserver_ready(base: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        info = http_json(f"{base}/server_info", timeout=5)
        return info if "dagster_webserver_version" in info else None

    return probe


ASSET_NODES = "{ assetNodes { assetKey { path } jobNames } }"


def listed_assets(base: str) -> Callable[[], dict[tuple[str, ...], list[str]] | None]:
    """The asset keys the webserver shows, once the code location has loaded them."""

    def probe() -> dict[tuple[str, ...], list[str]] | None:
        nodes = graphql(base, ASSET_NODES)["assetNodes"]
        keys = {tuple(n["assetKey"]["path"]): n["jobNames"] for n in nodes}
        return keys if DEMO_ASSETS <= keys.keys() else None

    return probe


def loopback_workspace(path: Path, port: int) -> Path:
    """deploy/workspace.yaml with the code server's compose host name replaced by loopback."""
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    entry["grpc_server"].update(host="127.0.0.1", port=port)
    path.write_text(yaml.safe_dump(workspace))
    return path


def deploy_env(tmp_path: Path, pg_env: Mapping[str, str]) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    env.update(
        pg_env,
        DAGSTER_HOME=str(home),
        ADU_DATA_DIR=str(tmp_path / "data"),
        ADU_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    return env


LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: [$partition]) {
        runId partition
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
PERMISSIONS = "{ permissions { permission value } }"


def launch_params(job: str, key: list[str]) -> dict[str, Any]:
    return {
        "selector": {
            "repositoryLocationName": "adu_assets",
            "repositoryName": "__repository__",
            "jobName": job,
            "assetSelection": [{"path": key}],
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
    }


@pytest.mark.slow
def test_code_server_daemon_and_webservers_from_deploy_files(pg: PgServer, tmp_path: Path) -> None:
    env = deploy_env(tmp_path, history_database(pg, "adu_deploy"))
    grpc_port, web_port, viewer_port = free_port(), free_port(), free_port()
    workspace = loopback_workspace(tmp_path / "workspace.yaml", grpc_port)
    logs = tmp_path / "logs"
    logs.mkdir()
    web, viewer = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{viewer_port}"

    with processes() as procs:
        procs.append(
            DagsterProcess(
                "code-server",
                [
                    str(BIN / "dagster"),
                    "code-server",
                    "start",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(grpc_port),
                    "-m",
                    "adu_assets.definitions",
                    "--location-name",
                    "adu_assets",
                ],
                env,
                logs,
            )
        )
        procs.append(
            DagsterProcess("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs)
        )
        procs.append(
            DagsterProcess(
                "webserver",
                [
                    str(BIN / "dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(web_port),
                    "-w",
                    str(workspace),
                ],
                env,
                logs,
            )
        )
        procs.append(
            DagsterProcess(
                "viewer",
                [
                    str(BIN / "dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(viewer_port),
                    "-w",
                    str(workspace),
                    "--read-only",
                ],
                env,
                logs,
            )
        )

        info = wait_for("the webserver's /server_info", webserver_ready(web), 120, procs)
        assert info["dagster_version"] == "1.13.27"
        assets = wait_for("the demo assets in the webserver", listed_assets(web), 180, procs)
        assert DEMO_ASSETS <= assets.keys()

        # The daemon heartbeats into PostgreSQL; the webserver reads its health from there.
        def daemons_healthy() -> dict[str, bool] | None:
            statuses = graphql(web, DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            health = {s["daemonType"]: s["healthy"] for s in statuses if s["required"]}
            return health if health and all(health.values()) else None

        health = wait_for("healthy daemons", daemons_healthy, 120, procs)
        assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"} <= health.keys()

        # Launch as the UI does: queued by the webserver, started by the daemon, run by the code server.
        key = ["shop", "main", "products"]
        job = assets[tuple(key)][0]
        launched = graphql(web, LAUNCH, {"params": launch_params(job, key)})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished() -> str | None:
            status = graphql(web, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = wait_for(f"run {run_id} to finish", finished, 240, procs)
        assert status == "SUCCESS", "\n".join(p.tail() for p in procs)
        materializations = graphql(web, MATERIALIZATIONS, {"key": {"path": key}, "partition": PARTITION})[
            "assetOrError"
        ]["assetMaterializations"]
        assert [(m["runId"], m["partition"]) for m in materializations] == [(run_id, PARTITION)]
        row_count = {e["label"]: e.get("intValue") for e in materializations[0]["metadataEntries"]}
        assert row_count["dagster/row_count"] == 200
        with pg.connect("adu_deploy") as conn:
            assert conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone() == (
                "SUCCESS",
            )

        # The viewers' webserver shows the same history but refuses to launch anything.
        wait_for("the read-only webserver", webserver_ready(viewer), 120, procs)
        assert (
            DEMO_ASSETS <= wait_for("the demo assets for viewers", listed_assets(viewer), 120, procs).keys()
        )
        rights = {p["permission"]: p["value"] for p in graphql(viewer, PERMISSIONS)["permissions"]}
        assert rights["launch_pipeline_execution"] is False
        assert {p["permission"]: p["value"] for p in graphql(web, PERMISSIONS)["permissions"]}[
            "launch_pipeline_execution"
        ] is True
        refused = graphql(viewer, LAUNCH, {"params": launch_params(job, key)})["launchRun"]
        assert refused["__typename"] == "UnauthorizedError", refused
        seen = graphql(viewer, RUN_STATUS, {"id": run_id})["runOrError"]
        assert seen == {"__typename": "Run", "status": "SUCCESS"}


def ensure_nginx() -> str:
    """Debian's nginx (nginx-light), installed on first use; a skip says so loudly if it cannot be."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        return nginx
    why = "not root" if os.geteuid() != 0 else ""
    if not why:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nginx-light"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                why = f"`{' '.join(cmd)}` failed: {proc.stderr[-300:]}"
                break
    if Path("/usr/sbin/nginx").exists():
        return "/usr/sbin/nginx"
    message = f"PROXY CHECK NOT RUN: nginx is missing and could not be installed ({why}); apt-get install nginx-light"
    print(message, file=sys.stderr)
    pytest.skip(message)


def htpasswd_line(user: str, password: str) -> str:
    # nginx reads {SSHA} (salted SHA-1) entries; apache2-utils' htpasswd -B (bcrypt) is what users run.
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n"


def self_signed_tls(folder: Path) -> None:
    folder.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(folder / "server.key"),
            "-out",
            str(folder / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def loopback_nginx_conf(root: Path, editors: int, viewers: int, ports: tuple[int, int]) -> Path:
    """deploy/nginx.conf with compose names, listen ports and /etc/nginx paths moved to loopback and `root`."""
    text = (DEPLOY / "nginx.conf").read_text()
    replacements = {
        "server webserver:3000;": f"server 127.0.0.1:{editors};",
        "server webserver-readonly:3001;": f"server 127.0.0.1:{viewers};",
        "listen 8443 ssl;": f"listen 127.0.0.1:{ports[0]} ssl;",
        "listen 8444 ssl;": f"listen 127.0.0.1:{ports[1]} ssl;",
        "/etc/nginx/": f"{root}/",
        "access_log /dev/stdout;": f"access_log {root}/access.log;",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx.conf no longer has {old!r}; update this test with it"
        text = text.replace(old, new)
    conf = root / "nginx.conf"
    conf.write_text(text)
    return conf


def through_proxy(
    url: str, auth: tuple[str, str] | None, body: Mapping[str, Any] | None = None
) -> tuple[int, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.mark.slow
def test_nginx_example_puts_basic_auth_in_front_of_both_webservers(tmp_path: Path) -> None:
    nginx = ensure_nginx()
    # nginx's workers drop to an unprivileged user and read the user files on each request, so these
    # live in a world-readable folder (pytest's tmp_path is private to its owner).
    root = Path(tempfile.mkdtemp(prefix="adu-nginx-"))
    root.chmod(0o755)
    try:
        proxy_checks(nginx, root, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def proxy_checks(nginx: str, root: Path, tmp_path: Path) -> None:
    self_signed_tls(root / "tls")
    (root / "htpasswd-editors").write_text(htpasswd_line("alice", "editor-pass"))
    (root / "htpasswd-viewers").write_text(htpasswd_line("bob", "viewer-pass"))
    web_port, viewer_port, edit_proxy, view_proxy = free_port(), free_port(), free_port(), free_port()
    conf = loopback_nginx_conf(root, web_port, viewer_port, (edit_proxy, view_proxy))

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "ADU_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home), ADU_DATA_DIR=str(tmp_path / "data"), ADU_STATE_DIR=str(tmp_path / "state")
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    web = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-m", "adu_assets.definitions"]

    with processes() as procs:
        procs.append(DagsterProcess("webserver", [*web, "-p", str(web_port)], env, logs))
        # One at a time: two processes creating a fresh SQLite instance's tables at once collide.
        wait_for("the editors' webserver", webserver_ready(f"http://127.0.0.1:{web_port}"), 120, procs)
        procs.append(DagsterProcess("viewer", [*web, "-p", str(viewer_port), "--read-only"], env, logs))
        procs.append(
            DagsterProcess(
                "nginx",
                [
                    nginx,
                    "-p",
                    str(root),
                    "-c",
                    str(conf),
                    "-g",
                    f"daemon off; pid {root}/nginx.pid; error_log {root}/error.log;",
                ],
                env,
                logs,
            )
        )
        editors, viewers = f"https://127.0.0.1:{edit_proxy}", f"https://127.0.0.1:{view_proxy}"

        def proxied_info() -> dict[str, Any] | None:
            status, info = through_proxy(f"{editors}/server_info", ("alice", "editor-pass"))
            return info if status == 200 else None

        assert (
            wait_for("the editors' UI through nginx", proxied_info, 180, procs)["dagster_version"]
            == "1.13.27"
        )
        wait_for("the viewers' webserver", webserver_ready(f"http://127.0.0.1:{viewer_port}"), 120, procs)

        assert through_proxy(f"{editors}/server_info", None)[0] == 401
        assert through_proxy(f"{editors}/server_info", ("alice", "wrong"))[0] == 401
        assert through_proxy(f"{editors}/server_info", ("bob", "viewer-pass"))[0] == 401
        assert through_proxy(f"{viewers}/server_info", ("alice", "editor-pass"))[0] == 401
        assert through_proxy(f"{viewers}/graphql", None, {"query": PERMISSIONS})[0] == 401

        def permissions(base: str, auth: tuple[str, str]) -> dict[str, bool]:
            status, reply = through_proxy(f"{base}/graphql", auth, {"query": PERMISSIONS})
            assert status == 200, status
            return {p["permission"]: p["value"] for p in reply["data"]["permissions"]}

        assert permissions(editors, ("alice", "editor-pass"))["launch_pipeline_execution"] is True
        assert permissions(viewers, ("bob", "viewer-pass"))["launch_pipeline_execution"] is False
        status, reply = through_proxy(f"{viewers}/graphql", ("bob", "viewer-pass"), {"query": ASSET_NODES})
        assert status == 200
        assert DEMO_ASSETS <= {tuple(n["assetKey"]["path"]) for n in reply["data"]["assetNodes"]}
