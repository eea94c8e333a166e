"""A throwaway Redis server for tests and benchmarks (the Celery broker), like pg_server.py for PostgreSQL.

Debian's `redis-server` listens on 127.0.0.1 only, on a free port, with a password (`requirepass`), no
persistence, and its files in a temporary folder. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adu_assets_tests.pg_server import free_port


def find_redis_server() -> str:
    """The redis-server binary. A missing server is an error, never a silent skip."""
    path = os.environ.get("ADU_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(path).exists():
        raise RuntimeError(
            "redis-server was not found. Install the Debian package 'redis-server' (./scripts/test does), or set "
            "ADU_REDIS_SERVER to the binary"
        )
    return path


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str
    pid: int

    def url(self, db: int = 0) -> str:
        """A broker URL with the password in it: put it in the environment only."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def client(self, db: int = 0):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, db=db, socket_timeout=10)


def _ping(host: str, port: int, password: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            s.settimeout(1)
            data = b""
            while b"PONG" not in data and len(data) < 200:
                chunk = s.recv(100)
                if not chunk:
                    break
                data += chunk
            return b"PONG" in data
    except OSError:
        return False


@contextmanager
def running_redis(
    password: str = "adu-test-redis-password", start_timeout: float = 30
) -> Iterator[RedisServer]:
    binary = find_redis_server()
    root = Path(tempfile.mkdtemp(prefix="adu-redis-"))
    port = free_port()
    conf = root / "redis.conf"
    # The password is in a file only this user reads, not on redis-server's command line (visible in ps).
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {root}",
                "save ''",
                "appendonly no",
                "daemonize no",
                "protected-mode yes",
                f"requirepass {password}",
                f"logfile {root / 'redis.log'}",
                "",
            ]
        )
    )
    conf.chmod(0o600)
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + start_timeout
        while not _ping("127.0.0.1", port, password):
            if proc.poll() is not None:
                log = (root / "redis.log").read_text() if (root / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{log[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not answer on 127.0.0.1:{port} within {start_timeout} s"
                )
            time.sleep(0.1)
        yield RedisServer("127.0.0.1", port, password, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
