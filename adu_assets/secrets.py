"""Credentials: Fernet-encrypted tokens or environment variables, decrypted only at run time.

A decrypted value is registered with the redactor the moment it exists, so the logging filter and
``redact()`` can scrub it from any log record or error message afterwards. Decrypted values never go
into run config, metadata or tags: components keep the *reference* (env name or token) and resources
resolve it inside the step.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

FERNET_KEY_ENV = "ADU_FERNET_KEY"
REDACTED = "***"


class SecretError(ValueError):
    """A credential could not be resolved. The message names the field, never the value."""


# --- redaction -----------------------------------------------------------------------------------
#
# A server that echoes a request back rarely echoes the secret's literal bytes: a query-string key comes
# back URL-encoded, a token inside a JSON error body JSON-escaped, an Authorization header base64-encoded.
# So each secret is registered in every form it is likely to be echoed in, and `redact()` removes them all.

_known: set[str] = set()
# `_known`, longest first (a form that contains another is replaced whole); rebuilt on registration, since
# `redact()` runs on every log record and registration happens a few times per run.
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()
# Shorter forms would redact half the log; a real credential is never this short.
_MIN_LEN = 4
# A base64 fragment shorter than this matches by chance in unrelated base64 (hashes, ids).
_MIN_B64_FRAGMENT = 8


def _base64_fragments(raw: bytes) -> set[str]:
    """The base64 characters that depend only on `raw`, wherever `raw` sits inside the encoded text.

    base64 works on 3-byte groups, so the same bytes encode differently at offsets 0, 1 and 2 of a group; for
    each offset, the characters whose 6 bits all come from `raw` are the same whatever surrounds it. That
    catches base64 of the secret alone, of `user:password`, of a whole `Bearer ...` header and of a JSON
    body that contains the secret. The padded encoding of the value alone is added whole.
    """
    out: set[str] = set()
    for lead in range(3):
        enc = base64.b64encode(b"\0" * lead + raw).decode().rstrip("=")
        first = -(-8 * lead // 6)  # ceil: the first character made only of `raw` bits
        last = (8 * lead + 8 * len(raw)) // 6  # exclusive: the last such character ends here
        fragment = enc[first:last]
        if len(fragment) >= _MIN_B64_FRAGMENT:
            out.add(fragment)
    whole = base64.b64encode(raw).decode()
    out.add(whole)
    # The URL-safe alphabet (JWTs, signed URLs) differs in two characters.
    out |= {f.replace("+", "-").replace("/", "_") for f in list(out)}
    return out


def secret_forms(value: str) -> set[str]:
    """Every form of `value` that `redact()` removes: literal, URL-encoded (quote, quote_plus, lower-case
    hex), JSON-escaped (with and without \\u escapes, with an escaped /), SQL- and libpq-quoted, and base64
    of each of those (see `_base64_fragments`)."""
    forms = {value}
    for q in (quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="")):
        forms.add(q)
        # Some servers write percent escapes in lower case.
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), q))
    for ascii_only in (True, False):
        escaped = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        forms.add(escaped)
        forms.add(escaped.replace("/", "\\/"))
    # As a SQL literal ('' for ') or a libpq connection-string value (\' and \\): a driver error may quote
    # the statement or the connection string it was given.
    forms.add(value.replace("'", "''"))
    forms.add(value.replace("\\", "\\\\").replace("'", "\\'"))
    # base64 of a JSON body or a query string holds the escaped forms, not the literal one.
    for text in list(forms):
        forms |= _base64_fragments(text.encode())
    return {f for f in forms if len(f) >= _MIN_LEN}


def register_secret(value: str) -> str:
    """Make `redact()` and the log filter remove `value` in all its forms; returns `value`."""
    if value and len(value) >= _MIN_LEN:
        global _ordered
        forms = secret_forms(value)
        with _lock:
            if not forms <= _known:
                _known.update(forms)
                _ordered = tuple(sorted(_known, key=len, reverse=True))
    return value


def redact(text: str) -> str:
    if not text:
        return text
    for v in _ordered:
        if v in text:
            text = text.replace(v, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Scrubs every known secret from a log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _known:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        # Dagster attaches structured fields to its records; scrub their string forms too.
        for attr in ("dagster_meta",):
            meta = getattr(record, attr, None)
            if isinstance(meta, dict):
                for k, v in list(meta.items()):
                    if isinstance(v, str):
                        meta[k] = redact(v)
        return True


_installed = False


def install_log_redaction() -> None:
    """Attach the redacting filter to the root logger's handlers and the dagster loggers. Idempotent."""
    global _installed
    if _installed:
        return
    flt = RedactingFilter()
    for name in ("", "dagster", "adu_assets", "httpx"):
        lg = logging.getLogger(name)
        lg.addFilter(flt)
        for h in lg.handlers:
            h.addFilter(flt)
    _installed = True


# --- Fernet ---------------------------------------------------------------------------------------


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _multifernet(keys: str | None = None) -> MultiFernet:
    raw = keys if keys is not None else os.environ.get(FERNET_KEY_ENV, "")
    parts = [k.strip() for k in raw.split(",") if k.strip()]
    if not parts:
        raise SecretError(
            f"{FERNET_KEY_ENV} is not set: it must hold one or more comma-separated Fernet keys, newest first "
            "(create one with `adu secrets generate-key`)."
        )
    try:
        return MultiFernet([Fernet(k.encode()) for k in parts])
    except (ValueError, TypeError):
        raise SecretError(f"{FERNET_KEY_ENV} holds a value that is not a Fernet key") from None


def encrypt(value: str, keys: str | None = None) -> str:
    return _multifernet(keys).encrypt(value.encode()).decode()


def decrypt(token: str, keys: str | None = None, *, field: str = "password_encrypted") -> str:
    try:
        plain = _multifernet(keys).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError(
            f"{field}: the token does not decrypt with any key in {FERNET_KEY_ENV} "
            "(wrong key, or the key was rotated out)"
        ) from None
    return register_secret(plain)


def rotate(token: str, keys: str | None = None) -> str:
    """Re-encrypt a token under the newest key (the first in ADU_FERNET_KEY)."""
    try:
        return _multifernet(keys).rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretError(f"the token does not decrypt with any key in {FERNET_KEY_ENV}") from None


def resolve_secret(
    *, env: str | None, encrypted: str | None, field: str, required: bool = True
) -> str | None:
    """Resolve a ``<field>_env`` / ``<field>_encrypted`` pair at run time."""
    if env and encrypted:
        raise SecretError(f"{field}: set either {field}_env or {field}_encrypted, not both")
    if env:
        value = os.environ.get(env)
        if value is None:
            raise SecretError(f"{field}_env names the environment variable {env}, which is not set")
        return register_secret(value)
    if encrypted:
        return decrypt(encrypted, field=f"{field}_encrypted")
    if required:
        raise SecretError(f"{field}: set {field}_env or {field}_encrypted (plain secrets are not accepted)")
    return None


def scrub_exception(exc: BaseException, context: str) -> RuntimeError:
    """A RuntimeError with the same message minus secrets; raise it ``from None`` so the
    original (unscrubbed) exception is not serialized into the event log as its cause."""
    return RuntimeError(redact(f"{context}: {type(exc).__name__}: {exc}"))
