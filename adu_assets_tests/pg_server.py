"""A throwaway PostgreSQL server for tests and benchmarks.

initdb refuses to run as root, so as root the server is run as the ``postgres`` user through ``runuser``.
The server listens on 127.0.0.1 only, on a free port, with password (scram) authentication so that tests
exercise the same credential path a user has.
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

SUPERUSER = "adu_admin"


def find_pg_bin() -> Path:
    """Locate PostgreSQL server binaries. A missing server is an error, never a silent skip."""
    candidates = []
    if os.environ.get("ADU_PG_BIN"):
        candidates.append(Path(os.environ["ADU_PG_BIN"]))
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        candidates += sorted((p / "bin" for p in base.iterdir()), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. Run ./scripts/test, which installs the "
        "Debian package 'postgresql', or set ADU_PG_BIN to the folder holding initdb."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    datadir: Path

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={database} user={self.user} password={self.password}"

    def connect(self, database: str = "postgres", autocommit: bool = True):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.dsn(database), autocommit=autocommit)

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def run_sql_file(self, database: str, path: Path) -> None:
        """Load a SQL script with psql (the sample databases use psql meta-commands)."""
        env = dict(os.environ, PGPASSWORD=self.password)
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port), "-U", self.user,
             "-d", database, "-f", str(path)],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def running_postgres(
    password: str = "adu-test-password", settings: dict[str, str] | None = None
) -> Iterator[PgServer]:
    bindir = find_pg_bin()
    root = Path(tempfile.mkdtemp(prefix="adu-pg-"))
    datadir = root / "data"
    sockdir = root / "sock"
    sockdir.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockdir, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                      "-A", "scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{sockdir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
        **(settings or {}),
    }
    with open(datadir / "postgresql.conf", "a") as f:
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")
    log = root / "server.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres")
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60", "start"]),
        check=True, stdout=subprocess.DEVNULL,
    )
    server = PgServer("127.0.0.1", port, SUPERUSER, password, datadir)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.connect().close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start; see {log}:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(root, ignore_errors=True)
