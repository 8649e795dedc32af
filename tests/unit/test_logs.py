"""The redaction processor: secrets never leave through a log line, exceptions included."""

from __future__ import annotations

import io
import json

import structlog

from rotator.core.secret import Secret
from rotator.logs import configure_logging
from rotator.redaction import (
    MAX_KEYS,
    REDACTED,
    forget_key,
    is_remembered,
    redact_text,
    remember_secret,
)


def test_shapes_of_keys_and_tokens_are_masked() -> None:
    text = ("Bearer abc.def cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345 "
            "hvs.CAESIabcdefghijklmnopqrstuvwxyz s.abcdefghijklmnopqrstuvwx key_0123abcd")
    out = redact_text(text)
    assert "cnt_ABC" not in out and "hvs.CAES" not in out and "abc.def" not in out
    assert "s.abcdefghij" not in out
    assert "key_0123abcd" in out          # key ids are not secrets


def test_remembered_secrets_are_masked_whatever_their_shape() -> None:
    remember_secret(Secret("plain-looking-value-42"))
    assert redact_text("got plain-looking-value-42 back") == f"got {REDACTED} back"


def test_log_lines_and_tracebacks_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    remember_secret("zz-top-secret-zz")
    log = structlog.get_logger("t")
    log.debug("calling", headers={"Authorization": "Bearer zz-top-secret-zz"},
              api_key="zz-top-secret-zz", key_id="key_1", secret=Secret("other-secret-99"))
    try:
        raise RuntimeError("server echoed zz-top-secret-zz")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert "zz-top-secret-zz" not in text and "other-secret-99" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["key_id"] == "key_1" and first["api_key"] == REDACTED
    assert first["headers"]["Authorization"] == REDACTED
    assert "RuntimeError" in second["exception"]


def test_json_when_not_a_tty_console_when_asked() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream)
    structlog.get_logger("t").info("hello", target="app")
    assert json.loads(stream.getvalue())["target"] == "app"
    stream = io.StringIO()
    configure_logging("console", "info", stream)
    structlog.get_logger("t").info("hello", target="app")
    assert "hello" in stream.getvalue() and "target=app" in stream.getvalue()


def test_secret_never_prints() -> None:
    secret = Secret("cnt_visible?")
    assert "cnt_visible" not in f"{secret} {secret!r} {[secret]}"
    assert secret.fingerprint.startswith("sha256:") and len(secret.fingerprint) == 19


# --- review finding 9: names, JWTs and URL passwords; finding 10: a bounded registry -------

def test_a_key_named_secret_token_or_password_is_masked_whatever_its_suffix() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    structlog.get_logger("t").info(
        "login", secret_id="6a1e-approle-secret-id", client_token="opaque-token-value",
        db_password_hash="pw-hash-value", token_file="/run/vault-token",
        secret_id_env="VAULT_SECRET_ID", key_id="key_1", jwt_path="/var/run/sa/token",
        rotator_fingerprint="sha256:0123456789ab")
    line = json.loads(stream.getvalue())
    assert line["secret_id"] == line["client_token"] == line["db_password_hash"] == REDACTED
    # Where a secret lives (a path, a variable's name) and its hash are no secret.
    assert line["token_file"] == "/run/vault-token"
    assert line["secret_id_env"] == "VAULT_SECRET_ID" and line["key_id"] == "key_1"
    assert line["jwt_path"] == "/var/run/sa/token"
    assert line["rotator_fingerprint"] == "sha256:0123456789ab"


JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmU")


def test_jwt_shapes_and_url_passwords_are_masked_in_any_string() -> None:
    out = redact_text(f"login jwt={JWT} against postgresql://rotator:hunter2-pw@db:5432/x "
                      f"and https://user:p%40ss@vault.example:8200/v1, not https://vault.example")
    assert "eyJzdWIi" not in out and "c2lnbmF0" not in out
    assert "hunter2-pw" not in out and "p%40ss" not in out
    assert f"postgresql://rotator:{REDACTED}@db:5432/x" in out   # where it pointed stays
    assert "https://vault.example" in out


def test_the_registry_is_bounded_the_oldest_key_goes_first() -> None:
    credential = "pinned-credential-" + "0" * 8
    remember_secret(credential, pinned=True)
    values = [f"bounded-key-{n:06d}" for n in range(MAX_KEYS + 50)]
    for value in values:
        remember_secret(value, key_id=f"key_{value}")
    held = [value for value in values if is_remembered(value)]
    assert len(held) == MAX_KEYS and held == values[-MAX_KEYS:]
    assert is_remembered(credential)   # the keys' turnover never evicts a credential
    assert redact_text(values[-1]) == REDACTED and redact_text(values[0]) == values[0]


def test_a_deleted_key_leaves_the_registry() -> None:
    remember_secret("about-to-be-revoked-1", key_id="key_old")
    remember_secret("still-serving-key-1", key_id="key_new")
    forget_key("key_old")
    assert not is_remembered("about-to-be-revoked-1")
    assert is_remembered("still-serving-key-1")


def test_a_deleted_key_read_back_stays_out_until_it_authenticates_again() -> None:
    # The probe after a revoke reads the dead key back from Vault's previous version.
    remember_secret("revoked-then-read-back-1", key_id="key_gone")
    forget_key("key_gone")
    remember_secret("revoked-then-read-back-1", key_id="key_gone")
    remember_secret("revoked-then-read-back-1")   # a Vault version that names no key id
    assert not is_remembered("revoked-then-read-back-1")
    # A provider that did not revoke it: the key authenticated, so it is live again.
    remember_secret("revoked-then-read-back-1", key_id="key_gone", alive=True)
    assert is_remembered("revoked-then-read-back-1")
    forget_key("key_gone")
    assert not is_remembered("revoked-then-read-back-1")
