"""The password rule (``model.passwords``) on its own: its bounds, the name check, what is not
text, and generated passwords meeting every allowed ``min_length``."""

from __future__ import annotations

import pytest

from opencbs.errors import InvalidInput
from opencbs.model.passwords import (
    MAX_LENGTH,
    MIN_LENGTH_CEILING,
    MIN_LENGTH_FLOOR,
    PasswordRule,
)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("", "must not be empty"),
        ("seven77", "too short: at least 8 characters"),
        ("x" * (MAX_LENGTH + 1), "too long: at most 1024"),
        ("eight\x00ch", "NUL"),
        ("first-line\nsecond", "line break"),
        ("lone-\ud800-surrogate", "surrogate"),
        ("Alice-Smith", "the user's name"),
    ],
)
def test_refused(password: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        PasswordRule().check(password, "alice-smith")
    assert why in err.value.message
    assert err.value.hint.startswith("choose a password of 8 to 1024 characters")


def test_accepted() -> None:
    rule = PasswordRule()
    for password in ("8 chars!", "alice-smith's long passphrase", "x" * MAX_LENGTH, "ünïcødé8"):
        rule.check(password, "alice-smith")


@pytest.mark.parametrize("min_length", range(MIN_LENGTH_FLOOR, MIN_LENGTH_CEILING + 1, 8))
def test_generated_passwords_meet_the_rule(min_length: int) -> None:
    rule = PasswordRule(min_length)
    for _ in range(20):
        password = rule.generate()
        assert len(password) == max(20, min_length)
        rule.check(password, "admin")
