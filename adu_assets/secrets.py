"""Credentials: Fernet-encrypted tokens or environment variables, decrypted only at run time.

A decrypted value is registered with the redactor the moment it exists, so the logging filter and
``redact()`` can scrub it from any log record or error message afterwards. Decrypted values never go
into run config, metadata or tags: components keep the *reference* (env name or token) and resources
resolve it inside the step.
"""

from __future__ import annotations

import logging
import os
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

FERNET_KEY_ENV = "ADU_FERNET_KEY"
REDACTED = "***"


class SecretError(ValueError):
    """A credential could not be resolved. The message names the field, never the value."""


# --- redaction -----------------------------------------------------------------------------------

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> str:
    # Very short values would redact half the log; a real credential is never this short.
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)
    return value


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for v in values:
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
