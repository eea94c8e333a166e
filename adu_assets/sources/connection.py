"""The `connection:` block of the YAML contract, shared by sources and destinations.

The model holds secret *references* only (`password_env`, `password_encrypted`). The password itself is
resolved by `resolve_password()` at run time, inside a resource or IO manager, never at definition load.
"""

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from adu_assets.secrets import resolve_secret
from adu_assets.settings import expand_path

ConnectionKind = Literal["postgres", "vertica", "duckdb", "sqlite", "oracle"]

DEFAULT_PORTS = {"postgres": 5432, "vertica": 5433, "oracle": 1521}


class ConnectionConfig(dg.Model):
    kind: ConnectionKind = Field(description="postgres | vertica | duckdb | sqlite | oracle")
    host: str | None = None
    port: int | None = None
    database: str | None = Field(default=None, description="Database name (postgres, vertica)")
    service: str | None = Field(default=None, description="Oracle service name")
    path: str | None = Field(default=None, description="File path (duckdb, sqlite); ${ENV} is expanded")
    user: str | None = None
    password_env: str | None = Field(default=None, description="Environment variable holding the password")
    password_encrypted: str | None = Field(
        default=None, description="Fernet token (see `adu secrets encrypt`)"
    )
    options: dict[str, str] = Field(default_factory=dict, description="Extra driver options (e.g. sslmode)")
    max_parallel: int = Field(default=2, description="At most this many parallel queries on this source")

    @model_validator(mode="before")
    @classmethod
    def _no_plain_password(cls, data: object) -> object:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "connection.password is not accepted: use password_env (an environment variable) or "
                "password_encrypted (a Fernet token from `adu secrets encrypt`)"
            )
        return data

    @model_validator(mode="after")
    def _check_fields(self) -> "ConnectionConfig":
        if self.kind in ("duckdb", "sqlite"):
            if not self.path:
                raise ValueError(f"connection.path is required for kind {self.kind}")
        else:
            if not self.host:
                raise ValueError(f"connection.host is required for kind {self.kind}")
            if self.kind == "oracle" and not self.service:
                raise ValueError("connection.service is required for kind oracle")
            if self.kind in ("postgres", "vertica") and not self.database:
                raise ValueError(f"connection.database is required for kind {self.kind}")
        if self.max_parallel < 1:
            raise ValueError("connection.max_parallel must be 1 or more")
        if self.password_env and self.password_encrypted:
            raise ValueError("connection: set either password_env or password_encrypted, not both")
        return self

    @property
    def resolved_port(self) -> int | None:
        return self.port or DEFAULT_PORTS.get(self.kind)

    @property
    def resolved_path(self) -> Path:
        return expand_path(self.path or "")

    def resolve_password(self) -> str | None:
        return resolve_secret(
            env=self.password_env,
            encrypted=self.password_encrypted,
            field="connection.password",
            required=False,
        )

    def pool_name(self) -> str:
        """The Dagster pool for this connection: one pool per server and database."""
        if self.kind in ("duckdb", "sqlite"):
            ident = self.resolved_path.name
        else:
            ident = f"{self.host}_{self.resolved_port}_{self.database or self.service}"
        safe = "".join(c if c.isalnum() else "_" for c in ident)
        return f"adu_{self.kind}_{safe}"

    def describe(self) -> str:
        """A human label with no secret in it."""
        if self.kind in ("duckdb", "sqlite"):
            return f"{self.kind}:{self.path}"
        return f"{self.kind}://{self.user or ''}@{self.host}:{self.resolved_port}/{self.database or self.service}"
