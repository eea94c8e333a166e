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
