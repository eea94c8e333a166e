"""Extract for API tasks: an HTTP client with auth, pagination and retries that lands raw pages as Parquet.

The YAML `request:` block of an `ApiIngest` component resolves into `RequestConfig`. `fetch_to_parquet`
walks every page of the request and streams the records to Parquet files on disk, so memory stays bounded
by a few pages whatever the size of the API's answer.

How raw records are stored: one row per record with three columns, ``_page`` (int32, 0-based page number),
``_record_index`` (int64, position of the record in the whole fetch) and ``_raw`` (the record's JSON text,
compact, one line). JSON text rather than Arrow structs because API records are heterogeneous: a field that
is an int on one page and a string or an object on the next would break a fixed Arrow schema mid-fetch,
while text keeps every record exactly as the API sent it (audit, replay) and leaves typing to `mapping.py`,
which decodes all records at once with one inferred schema.

Secrets are resolved here at run time (`secrets.resolve_secret`), registered with the redactor, and never
appear in an error message: URLs in errors lose their credential-carrying query parameters and every
message goes through `redact()`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urljoin

import dagster as dg
from pydantic import Field, model_validator

from adu_assets.model_bounds import require_at_least, require_at_most
from adu_assets.secrets import install_log_redaction, redact, register_secret, resolve_secret

if TYPE_CHECKING:
    import httpx
    import pyarrow.parquet as pq

__all__ = [
    "ApiError",
    "ApiHttpError",
    "ApiResponseError",
    "AuthConfig",
    "FetchResult",
    "PaginationConfig",
    "PaginationError",
    "RequestConfig",
    "RetryConfig",
    "fetch_to_parquet",
    "render_template",
    "retry_delay",
    "safe_url",
]

RAW_FILE_GLOB = "raw-*.parquet"
# Concurrent paging keeps this many pages per worker submitted or finished but not yet consumed. Beyond the
# pages in flight, the queued ones keep the workers busy while the consuming thread is held up (the GIL,
# a row group being handed over, a mapping batch); 2 per worker left the network idle in those moments.
_WINDOW_PER_WORKER = 4

# Query parameter names that carry credentials in the wild; their values never reach an error message.
_SECRET_PARAM_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "key",
        "token",
        "access_token",
        "auth",
        "client_secret",
        "password",
        "secret",
        "sig",
        "signature",
    }
)

# Deterministic failures: asking again returns the same answer, and retrying a 401 only trips lockouts.
_NEVER_RETRY = frozenset({400, 401, 403, 404, 422})
# 501/505 are 5xx but describe what the server can never do.
_RETRYABLE = frozenset({408, 429} | {s for s in range(500, 600) if s not in (501, 505)})


# --- errors ---------------------------------------------------------------------------------------


class ApiError(RuntimeError):
    """An API task failed in a way the user can act on. The message never contains a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ApiHttpError(ApiError):
    def __init__(self, message: str, *, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = redact(url)


class ApiResponseError(ApiError):
    """The server answered 2xx but the body is not what the task declares (bad JSON, wrong records_path)."""


class PaginationError(ApiError):
    """Pagination would loop or exceed `max_pages`."""


# --- config models -------------------------------------------------------------------------------

_PLAIN_SECRET_KEYS = {
    "token": "token_env or token_encrypted",
    "api_key": "api_key_env or api_key_encrypted",
    "password": "password_env or password_encrypted",
    "client_secret": "client_secret_env or client_secret_encrypted",
}


class AuthConfig(dg.Model):
    type: Literal["none", "bearer", "api_key", "basic", "oauth2_client_credentials"] = "none"
    token_env: str | None = Field(default=None, description="bearer: environment variable holding the token")
    token_encrypted: str | None = Field(default=None, description="bearer: Fernet token of the token")
    api_key_env: str | None = Field(default=None, description="api_key: environment variable holding the key")
    api_key_encrypted: str | None = Field(default=None, description="api_key: Fernet token of the key")
    api_key_name: str = Field(default="X-API-Key", description="api_key: header or query parameter name")
    api_key_in: Literal["header", "query"] = "header"
    username: str | None = Field(default=None, description="basic: user name (not a secret)")
    password_env: str | None = None
    password_encrypted: str | None = None
    token_url: str | None = Field(default=None, description="oauth2: the token endpoint")
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_encrypted: str | None = None
    scope: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_plain_secrets(cls, data: object) -> object:
        if isinstance(data, dict):
            for key, fix in _PLAIN_SECRET_KEYS.items():
                if key in data:
                    raise ValueError(
                        f"auth.{key} is not accepted: plain secrets must not live in YAML. Use {fix} "
                        "(an environment variable, or a Fernet token from `adu secrets encrypt`)"
                    )
        return data

    @model_validator(mode="after")
    def _check_fields(self) -> AuthConfig:
        def need_one(name: str) -> None:
            env, enc = getattr(self, f"{name}_env"), getattr(self, f"{name}_encrypted")
            if bool(env) == bool(enc):
                raise ValueError(
                    f"auth type {self.type}: set exactly one of auth.{name}_env or auth.{name}_encrypted"
                )

        if self.type == "bearer":
            need_one("token")
        elif self.type == "api_key":
            need_one("api_key")
        elif self.type == "basic":
            if not self.username:
                raise ValueError("auth type basic: auth.username is required")
            need_one("password")
        elif self.type == "oauth2_client_credentials":
            if not self.token_url or not self.client_id:
                raise ValueError(
                    "auth type oauth2_client_credentials: auth.token_url and auth.client_id are required"
                )
            need_one("client_secret")
        return self


class PaginationConfig(dg.Model):
    type: Literal["none", "page", "offset", "cursor", "next_url", "link_header"] = "none"
    page_param: str = "page"
    size_param: str | None = Field(default="page_size", description="page: sent with page_size; null to omit")
    page_size: int | None = Field(default=100)
    start_page: int = 1
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100)
    total_path: str | None = Field(
        default=None,
        description="page/offset: dot path to the total record count; once known, pages are fetched concurrently",
    )
    cursor_path: str | None = Field(
        default=None, description="cursor: dot path to the next cursor in the body"
    )
    cursor_param: str = "cursor"
    next_url_path: str | None = Field(default=None, description="next_url: dot path to the next page's URL")
    max_pages: int = Field(default=10_000, description="Fail rather than page forever past this many pages")
    location: Literal["query", "body"] = Field(
        default="query",
        description="Where page/offset/cursor parameters go: the query string or the JSON body",
    )

    @model_validator(mode="after")
    def _check_fields(self) -> PaginationConfig:
        require_at_least(self, "pagination", page_size=1, limit=1, max_pages=1)
        if self.type == "cursor" and not self.cursor_path:
            raise ValueError("pagination type cursor: pagination.cursor_path is required")
        if self.type == "next_url" and not self.next_url_path:
            raise ValueError("pagination type next_url: pagination.next_url_path is required")
        if self.total_path and self.type not in ("page", "offset"):
            raise ValueError("pagination.total_path only applies to types page and offset")
        return self


class RetryConfig(dg.Model):
    max_attempts: int = Field(default=5, description="Attempts per request, the first one included")
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    retry_after_max_seconds: float = Field(
        default=120.0, description="Cap on a server's Retry-After, so one header cannot stall a run"
    )
    timeout_seconds: float = Field(
        default=30.0,
        description="Total time one request may take, connect, headers and body included (a deadline, "
        "not a per-read timeout: a server that trickles bytes is cut off too)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> RetryConfig:
        require_at_least(
            self,
            "retry",
            max_attempts=1,
            backoff_base_seconds=0,
            backoff_max_seconds=0,
            retry_after_max_seconds=0,
            timeout_seconds=0.001,
        )
        return self


class RequestConfig(dg.Model):
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(default=None, description="JSON body (POST)")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    pagination: PaginationConfig = Field(default_factory=PaginationConfig)
    records_path: str | None = Field(
        default=None, description="Dot path to the list of records; null: the body is the list"
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    concurrency: int = Field(
        default=4, description="Parallel requests for page/offset with a known total (1-64)"
    )

    @model_validator(mode="after")
    def _check_fields(self) -> RequestConfig:
        require_at_least(self, "request", concurrency=1)
        require_at_most(self, "request", concurrency=64)
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"request.url must start with http:// or https:// (got {safe_url(self.url)!r})")
        p = self.pagination
        if self.records_path is None and (p.cursor_path or p.next_url_path or p.total_path):
            raise ValueError(
                "request.records_path is required when pagination reads cursor_path, next_url_path or total_path "
                "from the body (a body that is a bare list has nowhere to put them)"
            )
        if p.location == "body" and self.method != "POST":
            raise ValueError("pagination.location body needs method POST")
        return self


# --- templating ------------------------------------------------------------------------------------

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\{(partition_[a-z_]+)\}")


def render_template(value: T, variables: dict[str, str]) -> T:
    """Substitute ``{partition_start}``-style placeholders in strings, recursively through dicts and lists.

    Plain replacement rather than ``str.format`` so JSON-looking bodies with other braces pass untouched; an
    unknown ``{partition_...}`` name is an error because a typo would otherwise be sent to the API verbatim.
    """
    return cast(T, _render(value, variables))


def _render(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        out = value
        for name, sub in variables.items():
            out = out.replace("{" + name + "}", sub)
        left = _PLACEHOLDER.search(out)
        if left:
            known = ", ".join("{" + k + "}" for k in sorted(variables)) or "none"
            raise ValueError(f"unknown placeholder {{{left.group(1)}}} (known: {known})")
        return out
    if isinstance(value, dict):
        return {k: _render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables) for v in value]
    return value


# --- URLs and retry policy -------------------------------------------------------------------------


def safe_url(url: str, secret_params: frozenset[str] | set[str] = frozenset()) -> str:
    """The URL with credential-carrying query parameters removed, fit for an error message."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except Exception:
        return redact(url.split("?", 1)[0])
    drop = {p.lower() for p in secret_params} | _SECRET_PARAM_NAMES
    for name in list(parsed.params.keys()):
        if name.lower() in drop:
            parsed = parsed.copy_remove_param(name)
    if parsed.userinfo:
        parsed = parsed.copy_with(username=None, password=None)
    return redact(str(parsed))


def _parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_delay(
    retry: RetryConfig,
    attempt: int,
    retry_after: str | None = None,
    *,
    now: datetime | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    A server's Retry-After (seconds or an HTTP date) wins, capped by ``retry_after_max_seconds``. Otherwise
    exponential backoff with jitter in [50%, 100%] of the step, so parallel workers that failed together do
    not come back together.
    """
    parsed = _parse_retry_after(retry_after, now)
    if parsed is not None:
        return min(parsed, retry.retry_after_max_seconds)
    step = min(retry.backoff_max_seconds, retry.backoff_base_seconds * (2 ** max(0, attempt - 1)))
    return float(step * (0.5 + 0.5 * rand()))


# --- auth --------------------------------------------------------------------------------------------


class _Auth:
    """Resolved credentials for one fetch. Built at run time; holds secrets, so never logged or pickled."""

    def __init__(self, cfg: AuthConfig, retry: RetryConfig, client: httpx.Client, stats: _Stats) -> None:
        self.cfg = cfg
        self._retry = retry
        self._client = client
        self._stats = stats
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._static: str | None = None
        if cfg.type == "bearer":
            self._static = resolve_secret(
                env=cfg.token_env, encrypted=cfg.token_encrypted, field="auth.token"
            )
        elif cfg.type == "api_key":
            self._static = resolve_secret(
                env=cfg.api_key_env, encrypted=cfg.api_key_encrypted, field="auth.api_key"
            )
        elif cfg.type == "basic":
            self._static = resolve_secret(
                env=cfg.password_env, encrypted=cfg.password_encrypted, field="auth.password"
            )
        elif cfg.type == "oauth2_client_credentials":
            self._static = resolve_secret(
                env=cfg.client_secret_env, encrypted=cfg.client_secret_encrypted, field="auth.client_secret"
            )
        # Whole header values are registered too: an echo of a header may base64 it as one piece.
        self._basic: str | None = None
        if cfg.type == "bearer":
            register_secret(f"Bearer {self._static}")
        elif cfg.type == "basic":
            import base64

            pair = register_secret(f"{cfg.username}:{self._static}").encode()
            self._basic = register_secret("Basic " + base64.b64encode(pair).decode())

    @property
    def secret_params(self) -> set[str]:
        return (
            {self.cfg.api_key_name}
            if self.cfg.type == "api_key" and self.cfg.api_key_in == "query"
            else set()
        )

    def apply(self, url: httpx.URL, headers: dict[str, str]) -> tuple[httpx.URL, str | None]:
        """Add credentials to a request; returns the URL and the oauth2 token used (for refresh-on-401)."""
        t = self.cfg.type
        if t == "bearer":
            headers["Authorization"] = f"Bearer {self._static}"
        elif t == "api_key":
            assert self._static is not None
            if self.cfg.api_key_in == "header":
                headers[self.cfg.api_key_name] = self._static
            else:
                url = url.copy_set_param(self.cfg.api_key_name, self._static)
        elif t == "basic":
            assert self._basic is not None
            headers["Authorization"] = self._basic
        elif t == "oauth2_client_credentials":
            token = self.oauth_token()
            headers["Authorization"] = f"Bearer {token}"
            return url, token
        return url, None

    def oauth_token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch_token()
            assert self._token is not None
            return self._token

    def invalidate(self, used: str | None) -> None:
        # Only drop the token this request used: another worker may already have refreshed it.
        with self._lock:
            if used is not None and self._token == used:
                self._token = None

    def _fetch_token(self) -> None:
        import httpx

        assert self.cfg.token_url and self._static is not None
        form = {
            "grant_type": "client_credentials",
            "client_id": self.cfg.client_id or "",
            "client_secret": self._static,
        }
        if self.cfg.scope:
            form["scope"] = self.cfg.scope
        resp = _send_with_retries(
            self._client,
            "POST",
            httpx.URL(self.cfg.token_url),
            headers={"Accept": "application/json"},
            data=form,
            retry=self._retry,
            stats=self._stats,
            secret_params=set(),
            what="oauth2 token request",
        )
        try:
            payload = json.loads(resp.content)
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ApiResponseError(
                f"oauth2 token endpoint {safe_url(self.cfg.token_url)} answered HTTP {resp.status_code} "
                "without a JSON access_token"
            ) from None
        register_secret(str(token))
        register_secret(f"Bearer {token}")
        # Not used, but an echo of the token answer in a later error must not show them either.
        for other in ("refresh_token", "id_token"):
            if isinstance(payload.get(other), str):
                register_secret(payload[other])
        expires_in = payload.get("expires_in")
        try:
            lifetime = float(expires_in) if expires_in is not None else 3600.0
        except (TypeError, ValueError):
            lifetime = 3600.0
        # Renew a little early so a token does not expire between the check and the server reading it.
        self._token = str(token)
        self._expires_at = time.monotonic() + lifetime - min(30.0, lifetime * 0.1)


# --- sending with retries ----------------------------------------------------------------------------


@dataclass
class _Stats:
    requests: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, requests: int = 0, retries: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.retries += retries


# How much of an error body is kept: enough for the API's own explanation, never a whole echoed request.
_EXCERPT_CHARS = 500
# The part of an error body that is redacted before the excerpt is cut from it. Redacting first means a
# secret that starts inside the excerpt and ends past it cannot leave its first half behind.
_EXCERPT_SCAN_BYTES = 64 << 10
# An echoed credential in a form no registered secret matches (an encoding not foreseen, a token the server
# issued itself): the value after a credential-named field, or after a Bearer/Basic scheme, is masked too.
_CREDENTIAL_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "password",
    "passwd",
    "secret",
    "token",
    "auth",
    "key",
    "sig",
    "signature",
)
_CREDENTIAL_SCHEME = re.compile(r"(?i)\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=%-]{8,}")


def _credential_field(names: Iterable[str]) -> re.Pattern[str]:
    """`name: value`, `"name": "value"` or `name=value` for any of `names`, the value in group 2."""
    alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(
        rf"""(?i)(?<![A-Za-z0-9_-])(["']?(?:{alternatives})["']?\s*[:=]\s*)"""
        r"""("(?:[^"\\]|\\.)*"|'[^']*'|[^\s&,;}\]"']+)"""
    )


_CREDENTIAL_FIELD = _credential_field(_CREDENTIAL_NAMES)


def error_excerpt(content: bytes, extra_names: set[str] | frozenset[str] = frozenset()) -> str:
    """The start of an error body fit for a message and the event log: every registered secret removed in
    all its forms, credential-looking fields masked, then cut to 500 characters."""
    text = redact(content[:_EXCERPT_SCAN_BYTES].decode("utf-8", errors="replace"))
    text = _CREDENTIAL_SCHEME.sub(r"\1\2***", text)
    # A configured api_key_name ("X-Api-Token", "sub_key") is a credential field as well.
    fields = _credential_field([*_CREDENTIAL_NAMES, *extra_names]) if extra_names else _CREDENTIAL_FIELD
    text = fields.sub(_mask_value, text)
    excerpt = text[:_EXCERPT_CHARS]
    return excerpt + ("…" if len(text) > _EXCERPT_CHARS or len(content) > _EXCERPT_SCAN_BYTES else "")


_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)


def register_credential_values(*mappings: dict[str, str]) -> None:
    """Register the values of credential-named headers and query parameters with the redactor."""
    names = _CREDENTIAL_HEADERS | _SECRET_PARAM_NAMES | {n.replace("-", "_") for n in _CREDENTIAL_HEADERS}
    for mapping in mappings:
        for name, value in mapping.items():
            if name.lower() in names and isinstance(value, str):
                register_secret(value)
                scheme, _, credential = value.partition(" ")  # "Bearer <token>": the token alone too
                if credential and scheme.isalpha():
                    register_secret(credential.strip())


def _mask_value(m: re.Match[str]) -> str:
    value = m.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m.group(1)}{quote}***{quote}"


def _status_error(
    method: str, url: str, resp: httpx.Response, note: str, names: set[str] | frozenset[str] = frozenset()
) -> ApiHttpError:
    # Status, the URL without its credentials and a redacted excerpt: nothing of the request itself (its
    # headers, its body) is kept, and the server's reason phrase is redacted like the body.
    body = error_excerpt(resp.content, names)
    reason = error_excerpt(resp.reason_phrase.encode(), names)[:100]
    return ApiHttpError(
        f"{method} {url} failed with HTTP {resp.status_code} {reason}{note}. "
        f"Response body (first {_EXCERPT_CHARS} characters, credentials removed): {body!r}",
        status=resp.status_code,
        url=url,
    )


def _credential_names(secret_params: set[str], auth: _Auth | None) -> set[str]:
    if auth is not None and auth.cfg.type == "api_key":
        return secret_params | {auth.cfg.api_key_name}
    return secret_params


def _request_within(
    client: httpx.Client,
    method: str,
    url: httpx.URL,
    *,
    headers: dict[str, str],
    json_body: dict[str, Any] | None,
    data: dict[str, str] | None,
    seconds: float,
) -> httpx.Response:
    """One request, body included, within `seconds` in total (`retry.timeout_seconds`).

    httpx's timeouts are per read: a server that trickles a byte every 2 s never trips a 5 s read timeout
    and holds the request as long as it likes. A timer shuts the connection's socket down at the deadline
    (that wakes a read blocked in the kernel, where closing it would not) and the request fails as a
    timeout, which the retry loop treats like any other.
    """
    import socket

    import httpx

    lock = threading.Lock()
    state: dict[str, Any] = {"done": False, "expired": False, "socks": []}

    def trace(event: str, info: dict[str, Any]) -> None:
        # A new connection's socket, so the deadline also covers a server that trickles its headers.
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with lock:
                    state["socks"].append(sock)

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["expired"] = True
            for sock in state["socks"]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    request = client.build_request(
        method, url, headers=headers, json=json_body, data=data,
        timeout=httpx.Timeout(seconds), extensions={"trace": trace},
    )
    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    resp: httpx.Response | None = None
    try:
        resp = client.send(request, stream=True)
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with lock:
            if sock is not None:
                state["socks"].append(sock)
            if state["expired"] and sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        resp.read()
    except httpx.TransportError:
        if state["expired"]:
            raise httpx.ReadTimeout(
                f"no complete response within retry.timeout_seconds = {seconds:g} s", request=request
            ) from None
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
        if resp is not None:
            resp.close()
    return resp


def _send_with_retries(
    client: httpx.Client,
    method: str,
    url: httpx.URL,
    *,
    headers: dict[str, str],
    retry: RetryConfig,
    stats: _Stats,
    secret_params: set[str],
    what: str,
    json_body: dict[str, Any] | None = None,
    data: dict[str, str] | None = None,
    auth: _Auth | None = None,
) -> httpx.Response:
    # httpx's transport retries cover only failed connects; 429, 5xx and read timeouts need this loop.
    import httpx

    refreshed = False
    attempt = 0
    while True:
        attempt += 1
        send_headers = dict(headers)
        send_url, token = auth.apply(url, send_headers) if auth else (url, None)
        shown = safe_url(str(send_url), secret_params)
        stats.add(requests=1)
        try:
            resp = _request_within(
                client, method, send_url, headers=send_headers, json_body=json_body, data=data,
                seconds=retry.timeout_seconds,
            )
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError) as exc:
            raise ApiError(f"{what}: {method} {shown} cannot be sent: {type(exc).__name__}: {exc}") from None
        except httpx.TransportError as exc:
            if attempt >= retry.max_attempts:
                raise ApiError(
                    f"{what}: {method} {shown} failed after {attempt} attempts: {type(exc).__name__}: {exc}"
                ) from None
            stats.add(retries=1)
            time.sleep(retry_delay(retry, attempt))
            continue

        status = resp.status_code
        if status < 300:
            return resp
        if (
            status == 401
            and auth is not None
            and auth.cfg.type == "oauth2_client_credentials"
            and not refreshed
        ):
            # A token can be revoked before its announced expiry: fetch a new one once, then give up.
            refreshed = True
            auth.invalidate(token)
            stats.add(retries=1)
            attempt -= 1
            continue
        if status in _NEVER_RETRY or status not in _RETRYABLE:
            note = " (not retried: the same request would fail again)"
            if 300 <= status < 400:
                note = f" (redirects are not followed, so credentials never go to another host; set the url to {safe_url(resp.headers.get('location', '?'), secret_params)})"
            raise _status_error(method, shown, resp, note, _credential_names(secret_params, auth)) from None
        if attempt >= retry.max_attempts:
            names = _credential_names(secret_params, auth)
            raise _status_error(method, shown, resp, f" (gave up after {attempt} attempts)", names) from None
        stats.add(retries=1)
        time.sleep(retry_delay(retry, attempt, resp.headers.get("retry-after")))


# --- page decoding -------------------------------------------------------------------------------


@dataclass
class _Page:
    number: int
    records: list[bytes]
    meta: dict[str, Any]
    next_link: str | None
    url: str


def _split(path: str | None) -> list[str]:
    return [p for p in path.split(".") if p] if path else []


def _walk(obj: Any, parts: list[str]) -> Any:
    for p in parts:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


class _Decoder:
    """Parses a page body once: the records list as raw JSON bytes per record, plus pagination fields.

    With msgspec, a schema built from the configured paths decodes only what is needed and keeps each
    record's original bytes (``msgspec.Raw``), so records are never turned into Python objects and back.
    Without msgspec, stdlib json does the same job more slowly.
    """

    def __init__(
        self, records_path: str | None, meta_paths: list[str], use_msgspec: bool | None = None
    ) -> None:
        self.records_parts = _split(records_path)
        self.records_path = records_path
        self.meta_paths = [p for p in meta_paths if p]
        self._type: Any = None
        if use_msgspec is None:
            try:
                import msgspec  # noqa: F401

                use_msgspec = True
            except ImportError:
                use_msgspec = False
        self.use_msgspec = use_msgspec
        if use_msgspec:
            self._type = self._msgspec_type()

    def _msgspec_type(self) -> Any:
        import msgspec

        if not self.records_parts:
            return list[msgspec.Raw]
        tree: dict[str, Any] = {}
        leaves = [(self.records_parts, "records")] + [(_split(p), "meta") for p in self.meta_paths]
        for parts, kind in leaves:
            node = tree
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                existing = node.get(part)
                if last:
                    if isinstance(existing, dict):
                        raise ValueError(
                            f"dot path {'.'.join(parts)} is also a prefix of another configured path"
                        )
                    node[part] = kind if existing in (None, kind) else "meta"
                else:
                    if isinstance(existing, str):
                        raise ValueError(f"dot path {'.'.join(parts[: i + 1])} is both a value and a parent")
                    node = node.setdefault(part, {})
        counter = iter(range(1_000_000))

        def build(node: dict[str, Any]) -> Any:
            fields: list[tuple[str, Any, Any]] = []
            rename: dict[str, str] = {}
            for key, sub in node.items():
                name = f"f{next(counter)}"
                rename[name] = key
                if sub == "records":
                    typ: Any = list[msgspec.Raw] | None | msgspec.UnsetType
                elif sub == "meta":
                    typ = Any
                else:
                    typ = build(sub) | None | msgspec.UnsetType
                fields.append((name, typ, msgspec.UNSET))
            return msgspec.defstruct(f"Page{next(counter)}", fields, rename=rename)

        return build(tree)

    def decode(self, body: bytes, number: int, shown_url: str) -> tuple[list[bytes] | None, dict[str, Any]]:
        """Returns (records or None when records_path is absent, {meta path: value})."""
        if self.use_msgspec:
            return self._decode_msgspec(body, number, shown_url)
        return self._decode_json(body, number, shown_url)

    def _bad_json(self, number: int, shown_url: str, detail: str) -> ApiResponseError:
        return ApiResponseError(
            f"page {number} from {shown_url} is not valid JSON ({detail}); the response may be truncated. "
            "Nothing was written."
        )

    def _decode_msgspec(
        self, body: bytes, number: int, shown_url: str
    ) -> tuple[list[bytes] | None, dict[str, Any]]:
        import msgspec

        try:
            page = msgspec.json.decode(body, type=self._type)
        except msgspec.ValidationError as exc:
            raise ApiResponseError(
                f"page {number} from {shown_url} does not match records_path {self.records_path!r}: {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            raise self._bad_json(number, shown_url, str(exc)) from None
        if not self.records_parts:
            raws: Any = page
            meta: dict[str, Any] = {}
        else:
            raws = self._get(page, self.records_parts)
            meta = {}
            for path in self.meta_paths:
                value = self._get(page, _split(path))
                meta[path] = None if value is msgspec.UNSET else value
            if raws is msgspec.UNSET:
                return None, meta
        if raws is None:
            return [], meta
        # Pretty-printed APIs keep their newlines inside a Raw; NDJSON readers downstream need one line.
        if b"\n" in body or b"\r" in body:
            return [msgspec.json.format(bytes(r), indent=-1) for r in raws], meta
        return [bytes(r) for r in raws], meta

    @staticmethod
    def _get(obj: Any, parts: list[str]) -> Any:
        import msgspec

        for part in parts:
            if obj is None or obj is msgspec.UNSET:
                return obj
            cls = type(obj)
            attr = next(
                a
                for a, k in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True)
                if k == part
            )
            obj = getattr(obj, attr)
        return obj

    def _decode_json(
        self, body: bytes, number: int, shown_url: str
    ) -> tuple[list[bytes] | None, dict[str, Any]]:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._bad_json(number, shown_url, str(exc)) from None
        meta = {p: _walk(doc, _split(p)) for p in self.meta_paths}
        if self.records_parts:
            parent = _walk(doc, self.records_parts[:-1])
            if not isinstance(parent, dict) or self.records_parts[-1] not in parent:
                return None, meta
            raws = parent[self.records_parts[-1]]
        else:
            raws = doc
        if raws is None:
            return [], meta
        if not isinstance(raws, list):
            raise ApiResponseError(
                f"page {number} from {shown_url}: records_path {self.records_path!r} is a "
                f"{type(raws).__name__}, not a list"
            )
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        return [dumps(r).encode() for r in raws], meta

    def top_level_keys(self, body: bytes) -> str:
        try:
            doc = json.loads(body)
        except ValueError:
            return "?"
        return ", ".join(sorted(doc)[:20]) if isinstance(doc, dict) else type(doc).__name__


# --- landing raw records ----------------------------------------------------------------------------


class _RawWriter:
    """Appends records to Parquet in row groups of bounded size, starting a new file every `rows_per_file`.

    Encoding and compressing a row group takes tens of milliseconds; on the fetch loop's thread that stalls
    the submission of further pages, so the network sits idle. Row groups are therefore written by one
    background thread, at most one at a time (memory stays at two row groups), in order.
    """

    def __init__(
        self, directory: Path, *, rows_per_group: int = 20_000, rows_per_file: int = 1_000_000
    ) -> None:
        import pyarrow as pa

        self.directory = directory
        self.rows_per_group = rows_per_group
        self.rows_per_file = rows_per_file
        self.schema = pa.schema([("_page", pa.int32()), ("_record_index", pa.int64()), ("_raw", pa.string())])
        self.files: list[Path] = []
        self.records = 0  # records handed to the writing thread, so the next record's `_record_index`
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._raws: list[bytes] = []
        self._pages: list[tuple[int, int]] = []  # (page number, record count)
        self._bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def add(self, page: int, records: list[bytes]) -> None:
        if not records:
            return
        self._raws.extend(records)
        self._pages.append((page, len(records)))
        self._bytes += sum(map(len, records))
        # Bytes bound too: a few huge records must not pile up in memory waiting for a row count.
        if len(self._raws) >= self.rows_per_group or self._bytes >= 64 << 20:
            self._flush()

    def _flush(self) -> None:
        if not self._raws:
            return
        raws, pages, first = self._raws, self._pages, self.records
        self.records += len(raws)
        self._raws, self._pages, self._bytes = [], [], 0
        self._wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adu-raw")
        self._writing = self._pool.submit(self._write, raws, pages, first)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()  # a failed write fails the fetch

    def _write(self, raws: list[bytes], pages_counts: list[tuple[int, int]], first: int) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(raws)
        raw = pa.array(raws, type=pa.binary()).cast(pa.string())
        pages = np.repeat(
            np.array([p for p, _ in pages_counts], dtype=np.int32),
            np.array([c for _, c in pages_counts], dtype=np.int64),
        )
        index = np.arange(first, first + n, dtype=np.int64)
        table = pa.Table.from_arrays([pa.array(pages), pa.array(index), raw], schema=self.schema)
        if self._writer is None:
            path = self.directory / f"raw-{len(self.files):05d}.parquet"
            # Only `_page` repeats; dictionary-encoding unique record text and indexes is wasted work.
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd", use_dictionary=["_page"])
            self.files.append(path)
        self._writer.write_table(table)
        self._file_rows += n
        if self._file_rows >= self.rows_per_file:
            self._writer.close()
            self._writer, self._file_rows = None, 0

    def close(self) -> list[Path]:
        try:
            self._flush()
            self._wait()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        finally:
            self._shutdown()
        return list(self.files)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        try:
            self._wait()
        except Exception:
            pass
        self._shutdown()
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None


# --- the fetch -------------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    raw_files: list[Path]
    records: int
    pages: int
    requests: int
    retries: int
    seconds: float


class _Fetcher:
    def __init__(self, request: RequestConfig, variables: dict[str, str], log: logging.Logger) -> None:
        import httpx

        self.cfg = request
        self.p = request.pagination
        self.log = log
        self.method = request.method
        self.base_url = httpx.URL(render_template(request.url, variables))
        self.params = render_template(dict(request.params), variables)
        self.headers = {"Accept": "application/json", **render_template(dict(request.headers), variables)}
        # A credential written into headers or params rather than auth (`Authorization`, `Cookie`, `?token=`)
        # is redacted like one resolved by auth.
        register_credential_values(self.headers, self.params)
        self.body = render_template(request.body, variables) if request.body is not None else None
        self.stats = _Stats()
        self.client = httpx.Client(
            timeout=httpx.Timeout(request.retry.timeout_seconds),
            limits=httpx.Limits(
                max_connections=request.concurrency + 1, max_keepalive_connections=request.concurrency + 1
            ),
            follow_redirects=False,
            trust_env=False,  # an HTTP(S)_PROXY in the environment must not reroute internal API calls
        )
        self.auth = _Auth(request.auth, request.retry, self.client, self.stats)
        meta_paths = [self.p.cursor_path or "", self.p.next_url_path or "", self.p.total_path or ""]
        self.decoder = _Decoder(request.records_path, meta_paths)

    def close(self) -> None:
        self.client.close()

    # one page -------------------------------------------------------------------------------------

    def _shown(self, url: httpx.URL) -> str:
        return safe_url(str(url), self.auth.secret_params)

    def fetch(self, number: int, extra: dict[str, str] | None = None, url: str | None = None) -> _Page:
        import httpx

        if url is None:
            target = self.base_url.copy_merge_params(self.params)
            body = self.body
            if extra:
                if self.p.location == "body":
                    body = {**(body or {}), **extra}
                else:
                    target = target.copy_merge_params(extra)
        else:
            # A next URL carries its own query string; configured params would duplicate or fight it.
            target, body = httpx.URL(url), self.body
        resp = _send_with_retries(
            self.client,
            self.method,
            target,
            headers=self.headers,
            json_body=body if self.method == "POST" else None,
            retry=self.cfg.retry,
            stats=self.stats,
            secret_params=self.auth.secret_params,
            what=f"page {number}",
            auth=self.auth,
        )
        content = resp.content
        records, meta = self.decoder.decode(content, number, self._shown(target))
        if records is None:
            if number == 0:
                raise ApiResponseError(
                    f"page 0 from {self._shown(target)} has no {self.cfg.records_path!r} "
                    f"(top-level keys: {self.decoder.top_level_keys(content)}); check request.records_path"
                )
            records = []
        link = resp.links.get("next", {}).get("url") if self.p.type == "link_header" else None
        return _Page(number, records, meta, link, str(target))

    # pagination -------------------------------------------------------------------------------------

    def pages(self) -> Iterator[_Page]:
        t = self.p.type
        if t == "none":
            yield self.fetch(0)
        elif t in ("page", "offset"):
            yield from self._numbered()
        elif t == "cursor":
            yield from self._cursor()
        else:
            yield from self._links()

    def _numbered_params(self, i: int) -> dict[str, str]:
        p = self.p
        if p.type == "page":
            out = {p.page_param: str(p.start_page + i)}
            if p.size_param and p.page_size:
                out[p.size_param] = str(p.page_size)
            return out
        return {p.offset_param: str(i * p.limit), p.limit_param: str(p.limit)}

    def _page_capacity(self) -> int | None:
        return self.p.page_size if self.p.type == "page" else self.p.limit

    def _numbered(self) -> Iterator[_Page]:
        first = self.fetch(0, self._numbered_params(0))
        yield first
        if not first.records:
            return
        total = self._total(first) if self.p.total_path else None
        size = self._page_capacity()
        if total is not None and size:
            count = math.ceil(total / size)
            if count > self.p.max_pages:
                raise PaginationError(
                    f"{self.p.total_path} = {total} records needs {count} pages, more than "
                    f"pagination.max_pages = {self.p.max_pages}; raise max_pages if that is expected"
                )
            yield from self._concurrent(range(1, count))
            return
        i = 1
        while True:
            self._check_max(i)
            page = self.fetch(i, self._numbered_params(i))
            yield page
            if not page.records:
                return
            i += 1

    def _total(self, page: _Page) -> int | None:
        raw = page.meta.get(self.p.total_path or "")
        try:
            return int(raw) if raw is not None else None
        except (TypeError, ValueError):
            raise ApiResponseError(
                f"total_path {self.p.total_path!r} holds {str(raw)[:50]!r}, not a number"
            ) from None

    def _concurrent(self, numbers: range) -> Iterator[_Page]:
        """Fetch pages in parallel but hand them over in order, holding at most ~4×concurrency pages."""
        if not numbers:
            return
        window = _WINDOW_PER_WORKER * self.cfg.concurrency
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="adu-http") as pool:
            pending: deque[Future[_Page]] = deque()
            it = iter(numbers)
            try:
                for n in it:
                    pending.append(pool.submit(self.fetch, n, self._numbered_params(n)))
                    if len(pending) >= window:
                        break
                while pending:
                    page = pending.popleft().result()
                    if not page.records:
                        return  # the total overstated the data; stop at the first empty page
                    yield page
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append(pool.submit(self.fetch, nxt, self._numbered_params(nxt)))
            finally:
                for f in pending:
                    f.cancel()

    def _check_max(self, i: int) -> None:
        if i >= self.p.max_pages:
            raise PaginationError(
                f"stopped after pagination.max_pages = {self.p.max_pages} pages and the API still has more; "
                "raise max_pages if that is expected"
            )

    def _cursor(self) -> Iterator[_Page]:
        seen: set[str] = set()
        page = self.fetch(0)
        i = 0
        while True:
            yield page
            cursor = page.meta.get(self.p.cursor_path or "")
            if not page.records or cursor in (None, ""):
                return
            cursor = str(cursor)
            if cursor in seen:
                raise PaginationError(
                    f"the API returned the same cursor twice (at {self.p.cursor_path!r}, page {i}); "
                    "stopping instead of looping forever"
                )
            seen.add(cursor)
            i += 1
            self._check_max(i)
            page = self.fetch(i, {self.p.cursor_param: cursor})

    def _links(self) -> Iterator[_Page]:
        import httpx

        seen = {str(self.base_url.copy_merge_params(self.params))}
        origin = (self.base_url.scheme, self.base_url.host, self.base_url.port)
        page = self.fetch(0)
        i = 0
        while True:
            yield page
            if self.p.type == "next_url":
                nxt = page.meta.get(self.p.next_url_path or "")
            else:
                nxt = page.next_link
            if not page.records or not nxt:
                return
            url = urljoin(page.url, str(nxt))
            parsed = httpx.URL(url)
            if (parsed.scheme, parsed.host, parsed.port) != origin:
                raise PaginationError(
                    f"the next page is on another host ({safe_url(url, self.auth.secret_params)}); "
                    "credentials are only sent to the configured url's host"
                )
            key = safe_url(url, self.auth.secret_params)
            if key in seen:
                raise PaginationError(f"the API returned the same next page URL twice ({key}); stopping")
            seen.add(key)
            i += 1
            self._check_max(i)
            page = self.fetch(i, url=url)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        strays = [p.name for p in out_dir.iterdir() if not p.match(RAW_FILE_GLOB)]
        if strays:
            raise ApiError(
                f"{out_dir} holds files this fetch did not write ({', '.join(strays[:5])}); "
                "out_dir must be a directory of its own, it is replaced on every run"
            )
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def fetch_to_parquet(
    request: RequestConfig,
    variables: dict[str, str],
    out_dir: Path,
    *,
    log: logging.Logger | None = None,
    log_every_pages: int = 50,
    on_records: Callable[[int, list[bytes]], None] | None = None,
) -> FetchResult:
    """Fetch every page of `request` and land the records as Parquet files in `out_dir`.

    `out_dir` belongs to this fetch (e.g. ``<data>/raw/<task>/<partition_key>``): it is replaced as a whole
    when the fetch succeeds, so a re-run never mixes with an earlier one, and left untouched when it fails.

    `on_records(first_record_index, records)` sees every non-empty page's raw records in page order, on the
    calling thread, while later pages are still in flight: `api_ingest` decodes and maps there instead of
    parsing the landed JSON a second time after the fetch.
    """
    install_log_redaction()
    log = log or logging.getLogger(__name__)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Same parent, so the final rename is atomic on one filesystem.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    fetcher: _Fetcher | None = None
    writer = _RawWriter(tmp)
    pages = 0
    try:
        fetcher = _Fetcher(request, variables, log)
        for page in fetcher.pages():
            if on_records is not None and page.records:
                on_records(writer.records + len(writer._raws), page.records)
            writer.add(page.number, page.records)
            pages += 1
            if pages % log_every_pages == 0:
                log.info(
                    "%s: %d pages, %d records so far (%d requests, %d retries)",
                    fetcher._shown(fetcher.base_url),
                    pages,
                    writer.records + len(writer._raws),
                    fetcher.stats.requests,
                    fetcher.stats.retries,
                )
        files = writer.close()
        _replace_dir(tmp, out_dir)
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fetcher is not None:
            fetcher.close()
    final = [out_dir / f.name for f in files]
    result = FetchResult(
        raw_files=final,
        records=writer.records,
        pages=pages,
        requests=fetcher.stats.requests,
        retries=fetcher.stats.retries,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "%s: fetched %d records in %d pages (%d requests, %d retries) in %.2f s",
        fetcher._shown(fetcher.base_url),
        result.records,
        result.pages,
        result.requests,
        result.retries,
        result.seconds,
    )
    return result
