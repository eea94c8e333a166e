"""The `connection:` block of the YAML contract, shared by sources and destinations.

The model holds secret *references* only (`password_env`, `password_encrypted`). The password itself is
resolved by `resolve_password()` at run time, inside a resource or IO manager, never at definition load.

`options` reach a driver or a libpq connection string, so a value there could otherwise re-point the
connection (`application_name: "x dbname=other"`, `host: ...`, `sslmode: disable`) and send the password
to another server or database. Only known option names with checked values are accepted, per kind, and the
YAML is refused when definitions load; the address and the credentials come from their own fields only.
"""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import dagster as dg
from pydantic import ConfigDict, Field, model_validator

from adu_assets.secrets import resolve_secret
from adu_assets.settings import expand_path

ConnectionKind = Literal["postgres", "vertica", "duckdb", "sqlite", "oracle"]

DEFAULT_PORTS = {"postgres": 5432, "vertica": 5433, "oracle": 1521}

# A host name, an IPv4/IPv6 address or (PostgreSQL) a Unix socket directory: no spaces, quotes, "=" or
# parentheses, which would start another key in a connection string or an Oracle connect descriptor.
_HOST = re.compile(r"^[A-Za-z0-9._:%\[\]/-]+$")
# An Oracle service name goes into an Easy Connect string after "/", where "?" or "(" would add parameters.
_SERVICE = re.compile(r"^[A-Za-z0-9_.$#-]+$")


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def _int(low: int = 0) -> Callable[[str], int]:
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < low:
            raise ValueError(f"must be {low} or more")
        return number

    return check


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError("must be a number of seconds above 0")
    return number


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "on", "1", "yes"):
        return True
    if lowered in ("false", "off", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _text(value: str) -> str:
    # NUL ends a C string early and a line break splits a log line; nothing legitimate needs either.
    if not value or any(c in value for c in "\x00\r\n"):
        raise ValueError("must be non-empty text on one line")
    return value


def _path(value: str) -> str:
    return str(expand_path(_text(value)))


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# Per kind: the accepted option names and how each value is checked and converted. Not accepted anywhere:
# host, hostaddr, port, dbname/database, user, password, passfile, service, dsn, backup_server_node, proxies,
# log paths: they re-point the connection, read credentials from elsewhere, or write files.
OPTION_RULES: dict[str, dict[str, Callable[[str], Any]]] = {
    "postgres": {
        "sslmode": _one_of(*_SSL_MODES),
        "sslrootcert": _path,
        "sslcert": _path,
        "sslkey": _path,
        "sslcrl": _path,
        "application_name": _text,
        "connect_timeout": _int(0),
        "keepalives": _one_of("0", "1"),
        "keepalives_idle": _int(0),
        "keepalives_interval": _int(0),
        "keepalives_count": _int(0),
        "tcp_user_timeout": _int(0),
        "target_session_attrs": _one_of(
            "any", "read-write", "read-only", "primary", "standby", "prefer-standby"
        ),
        "gssencmode": _one_of("disable", "prefer", "require"),
        "channel_binding": _one_of("disable", "prefer", "require"),
    },
    "vertica": {
        "tlsmode": _one_of("disable", "prefer", "require", "verify-ca", "verify-full"),
        "tls_cafile": _path,
        "tls_certfile": _path,
        "tls_keyfile": _path,
        "connection_timeout": _seconds,
        "session_label": _text,
        "workload": _text,
        "connection_load_balance": _bool,
        "binary_transfer": _bool,
    },
    "oracle": {
        "protocol": _one_of("tcp", "tcps"),
        "tcp_connect_timeout": _seconds,
        "expire_time": _int(0),
        "retry_count": _int(0),
        "retry_delay": _int(0),
        "ssl_server_dn_match": _bool,
        "ssl_server_cert_dn": _text,
        "wallet_location": _path,
    },
    "duckdb": {},
    "sqlite": {},
}


def check_options(kind: str, options: dict[str, str]) -> dict[str, Any]:
    """`options` checked against `kind`'s accepted names and converted to the driver's types; a ValueError
    naming the option otherwise (never its value: a misplaced credential must not land in a message)."""
    rules = OPTION_RULES[kind]
    out: dict[str, Any] = {}
    for name, value in options.items():
        check = rules.get(name)
        if check is None and "pass" in name.lower():
            raise ValueError(
                f"connection.options may not contain {name}: put the password in password_env (an "
                "environment variable) or password_encrypted (a Fernet token from `adu secrets encrypt`)"
            )
        if check is None:
            accepted = ", ".join(sorted(rules)) or "none"
            raise ValueError(
                f"connection.options.{name} is not accepted for kind {kind} (accepted: {accepted}). "
                "The server, database and user come from connection.host/port/database/service/user, "
                "the password from password_env or password_encrypted"
            )
        try:
            out[name] = check(value)
        except ValueError as e:
            raise ValueError(f"connection.options.{name} {e}") from None
    return out


def _option_text(value: object) -> object:
    # YAML gives `connect_timeout: 10` as an int; the rules check the text either way.
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def libpq_quote(value: str) -> str:
    """A libpq connection-string value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ConnectionConfig(dg.Model):
    # A validation error must not echo the YAML it refused (a password typed into `options` would be in it).
    # This covers the model validated on its own; inside a component, `_no_plain_password` masks the values.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

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
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Driver options, by kind: postgres sslmode, sslrootcert, application_name, connect_timeout, ...; "
        "oracle protocol, tcp_connect_timeout, wallet_location, ...; vertica tlsmode, connection_timeout, ...",
    )
    max_parallel: int = Field(default=2, description="At most this many parallel queries on this source")

    @model_validator(mode="before")
    @classmethod
    def _no_plain_password(cls, data: object) -> object:
        # Pydantic, and Dagster's component loader after it, print the refused input next to the error: a
        # password typed into the wrong field would be printed with it. So the offending values are blanked
        # out in place (the dict is the YAML just parsed for this validation) before the error is raised.
        if not isinstance(data, dict):
            return data
        if "password" in data:
            data["password"] = "***"
            raise ValueError(
                "connection.password is not accepted: use password_env (an environment variable) or "
                "password_encrypted (a Fernet token from `adu secrets encrypt`)"
            )
        options = data.get("options")
        if not isinstance(options, dict):
            return data
        texts = {k: _option_text(v) for k, v in options.items()}
        kind = data.get("kind")
        if isinstance(kind, str) and kind in OPTION_RULES and all(isinstance(v, str) for v in texts.values()):
            try:
                check_options(kind, cast(dict[str, str], texts))
            except ValueError:
                for name in options:
                    options[name] = "***"
                raise
        return {**data, "options": texts}

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
        if self.host is not None and not _HOST.match(self.host):
            raise ValueError(
                "connection.host must be a host name, an IP address or a socket directory "
                "(no spaces, quotes, '=' or parentheses)"
            )
        if self.service is not None and not _SERVICE.match(self.service):
            raise ValueError("connection.service must be an Oracle service name (letters, digits, _ . $ # -)")
        for name, value in (("database", self.database), ("user", self.user)):
            if value is not None and any(c in value for c in "\x00\r\n"):
                raise ValueError(f"connection.{name} must be text on one line")
        self.driver_options()  # refuses unknown or invalid options now, at definitions load
        return self

    def driver_options(self) -> dict[str, Any]:
        """`options`, checked against this kind's accepted names and converted to the driver's types."""
        return check_options(self.kind, self.options)

    def libpq_options(self) -> str:
        """The options as a libpq connection string, every value quoted: `sslmode='require' ...`.
        Host, port, database, user and password are not in it; they travel as separate parameters."""
        if self.kind != "postgres":
            raise ValueError(f"libpq options are for kind postgres, not {self.kind}")
        return " ".join(f"{k}={libpq_quote(str(v))}" for k, v in self.driver_options().items())

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
