"""The redaction processor: secrets never leave through a log line, exceptions included."""

from __future__ import annotations

import io
import json

import structlog

from rotator.core.secret import Secret
from rotator.logs import configure_logging
from rotator.redaction import REDACTED, redact_text, remember_secret


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
