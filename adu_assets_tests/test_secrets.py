"""Fernet/MultiFernet credentials, rotation, redaction, and the `adu secrets` CLI."""

import logging

import pytest
from cryptography.fernet import Fernet

from adu_assets import secrets
from adu_assets.cli import main as adu_cli
from adu_assets.sources.connection import ConnectionConfig


def test_encrypt_decrypt_and_rotate_with_multifernet() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = secrets.encrypt("s3cret-value", keys=old)
    # Newest key first; the old one still decrypts until it is dropped.
    assert secrets.decrypt(token, keys=f"{new},{old}") == "s3cret-value"
    rotated = secrets.rotate(token, keys=f"{new},{old}")
    assert secrets.decrypt(rotated, keys=new) == "s3cret-value"
    with pytest.raises(secrets.SecretError, match="does not decrypt with any key") as err:
        secrets.decrypt(token, keys=new)
    assert "s3cret-value" not in str(err.value)


def test_missing_key_and_env_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADU_FERNET_KEY", raising=False)
    with pytest.raises(secrets.SecretError, match="ADU_FERNET_KEY is not set"):
        secrets.encrypt("x")
    monkeypatch.delenv("NOPE_PW", raising=False)
    cfg = ConnectionConfig(kind="postgres", host="h", database="d", password_env="NOPE_PW")
    with pytest.raises(secrets.SecretError, match="NOPE_PW, which is not set"):
        cfg.resolve_password()


def test_connection_password_encrypted_resolves_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("ADU_FERNET_KEY", key)
    token = secrets.encrypt("pw-from-token-123")
    cfg = ConnectionConfig(kind="postgres", host="h", database="d", password_encrypted=token)
    assert "pw-from-token-123" not in cfg.model_dump_json()
    assert cfg.resolve_password() == "pw-from-token-123"


def test_plain_password_is_refused() -> None:
    with pytest.raises(ValueError, match="password_env"):
        ConnectionConfig(kind="postgres", host="h", database="d", password="plain")  # type: ignore[call-arg]


def test_log_filter_redacts_known_secrets(caplog: pytest.LogCaptureFixture) -> None:
    secrets.register_secret("canary-log-5150")
    logger = logging.getLogger("adu_assets.test")
    logger.addFilter(secrets.RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("connecting with %s now", "canary-log-5150")
    assert "canary-log-5150" not in caplog.text
    assert "connecting with *** now" in caplog.text
    assert secrets.redact("x canary-log-5150 y") == "x *** y"


def test_cli_generate_encrypt_rotate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert adu_cli(["secrets", "generate-key"]) == 0
    key1 = capsys.readouterr().out.strip()
    Fernet(key1.encode())  # a valid key
    monkeypatch.setenv("ADU_FERNET_KEY", key1)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("hunter2-pw\n"))
    assert adu_cli(["secrets", "encrypt", "--stdin"]) == 0
    token = capsys.readouterr().out.strip()
    assert "hunter2-pw" not in token
    key2 = Fernet.generate_key().decode()
    monkeypatch.setenv("ADU_FERNET_KEY", f"{key2},{key1}")
    assert adu_cli(["secrets", "rotate", token]) == 0
    rotated = capsys.readouterr().out.strip()
    assert secrets.decrypt(rotated, keys=key2) == "hunter2-pw"
    monkeypatch.setenv("ADU_FERNET_KEY", key2)
    assert adu_cli(["secrets", "rotate", token]) == 2
    assert "does not decrypt" in capsys.readouterr().err


def test_redact_removes_every_encoded_form() -> None:
    import base64
    import json
    from urllib.parse import quote, quote_plus

    value = "Forms-Canary+1/'\"x y\\z"
    secrets.register_secret(value)

    def b64(text: str, urlsafe: bool = False) -> str:
        enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
        return enc(text.encode()).decode()

    forms = {
        "quote": quote(value, safe=""),
        "quote default": quote(value),
        "quote_plus": quote_plus(value),
        "lower-case hex": quote(value, safe="").lower().replace("forms-canary", "Forms-Canary"),
        "json": json.dumps(value)[1:-1],
        "json escaped slash": json.dumps(value)[1:-1].replace("/", "\\/"),
        "sql literal": value.replace("'", "''"),
        "libpq value": value.replace("\\", "\\\\").replace("'", "\\'"),
        "base64": b64(value),
        "base64 url-safe": b64(value, urlsafe=True),
        "base64 user:password": b64(f"someone:{value}"),
        "base64 Bearer header": b64(f"Bearer {value}"),
        "base64 of a JSON body": b64(json.dumps({"k": value})),
        "base64 of a query string": b64(f"a=1&key={quote_plus(value)}"),
    }
    for name, form in forms.items():
        cleaned = secrets.redact(f"<<{form}>>")
        leftover = cleaned.replace("<<", "").replace(">>", "").replace("***", "")
        if name.startswith("base64"):
            # What surrounds the secret stays, and up to 2 boundary characters per side that mix its bits.
            assert len(leftover) <= len(form) - (len(value) * 4 // 3 - 4), (name, leftover)
        else:
            assert leftover == "", (name, leftover)


def test_short_values_are_not_redacted_everywhere() -> None:
    secrets.register_secret("ab")
    assert secrets.redact("a tab and a crab") == "a tab and a crab"
