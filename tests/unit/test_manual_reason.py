"""``rotator rotate --reason``: one bounded line of printable text, or exit 2 at once."""

from __future__ import annotations

import pytest

from rotator.cli.main import main
from rotator.core.manual_reason import MANUAL_REASON_LIMIT, check_manual_reason


@pytest.mark.parametrize(("reason", "said"), [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("x" * (MANUAL_REASON_LIMIT + 1), f"at most {MANUAL_REASON_LIMIT} characters"),
    ("leaked\nrm -rf", "U+000A"),
    ("ok\x1b[2Jcleared", "U+001B"),
    ("abc\u202edcba", "U+202E"),          # a bidirectional override
    ("tab\there", "U+0009"),
], ids=["empty", "blank", "too long", "newline", "escape", "bidi", "tab"])
def test_a_bad_reason_is_exit_2_before_anything_runs(
        reason: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rotate", "app", "--reason", reason, "--config", "/nonexistent.toml"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --reason" in err and said in err
    if len(reason.strip()) > 3:
        assert reason not in err                 # the text itself is never echoed


def test_a_good_reason_is_kept_stripped() -> None:
    assert check_manual_reason("  SEC-42: key in a CI log — rotated  ") == (
        "SEC-42: key in a CI log — rotated")
    assert check_manual_reason("x" * MANUAL_REASON_LIMIT) == "x" * MANUAL_REASON_LIMIT


@pytest.mark.parametrize(("reason", "message"), [
    (" \t ", "a reason must say something: it is empty"),
    ("x" * (MANUAL_REASON_LIMIT + 1),
     f"a reason is at most {MANUAL_REASON_LIMIT} characters, "
     f"this one has {MANUAL_REASON_LIMIT + 1}"),
    ("a\x1bb\nc\x1bd\u202e",                      # each once, in code point order
     "a reason is one line of printable text; it holds U+000A, U+001B, U+202E"),
], ids=["empty", "too long", "several bad characters"])
def test_a_bad_reason_says_exactly_what_is_wrong(reason: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_manual_reason(reason)
    assert str(raised.value) == message
