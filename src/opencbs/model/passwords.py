"""The password rule of system users and backup users: one rule, checked wherever a password is
set (``opencbs sysuser add``, ``sysuser passwd``, ``user add``, quickstart, the demo, and any API
call that sets one), never at login: a password stored before the rule (or before a stricter
setting) keeps working until it is changed.

The rule (:meth:`PasswordRule.check`), after NIST SP 800-63B §5.1.1.2 (memorized secrets chosen
by the subscriber: a minimum length, no composition rules, a maximum of at least 64 characters,
and a check against context-specific words such as the user name):

- at least ``min_length`` characters (Unicode code points): ``DEFAULT_MIN_LENGTH`` (8, NIST's
  minimum), raised by the setting ``password_min_length`` (``OPENCBS_PASSWORD_MIN_LENGTH``,
  ``MIN_LENGTH_FLOOR``..``MIN_LENGTH_CEILING``);
- at most ``MAX_LENGTH`` (1024) characters: longer input is refused rather than hashed (and
  the server's login refuses longer passwords anyway);
- not the user's own name, compared case-insensitively (``str.casefold``). A password merely
  *containing* the name is allowed: a long passphrase that holds it is still strong;
- text the login can compare: no NUL, no lone surrogate (``model.text``), no line break (a
  password is read as the first line of stdin or a config value).

No character classes are required (NIST: composition rules make passwords worse, not
stronger). Generated passwords (:func:`generate_password`) always meet the rule.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from opencbs.errors import InvalidInput
from opencbs.model.text import is_text

__all__ = [
    "DEFAULT_MIN_LENGTH",
    "MAX_LENGTH",
    "MIN_LENGTH_CEILING",
    "MIN_LENGTH_FLOOR",
    "PasswordRule",
    "generate_password",
]

#: Characters a password needs at least by default: NIST SP 800-63B §5.1.1.2's minimum for a
#: password the user chooses.
DEFAULT_MIN_LENGTH = 8
#: The lowest the setting ``password_min_length`` may go (the default: it can only be made
#: stricter) and the highest (a password a person can still type).
MIN_LENGTH_FLOOR = DEFAULT_MIN_LENGTH
MIN_LENGTH_CEILING = 128
#: Characters a password may have at most: NIST asks for at least 64; beyond 1024 it is input
#: nobody types, only a cost to hash (the login refuses longer passwords too, ``api.auth``).
MAX_LENGTH = 1024
#: Characters of a generated password (``secrets.token_urlsafe``: about 6 bits each).
GENERATED_LENGTH = 20

_SETTING_HINT = "setting password_min_length, env OPENCBS_PASSWORD_MIN_LENGTH"


@dataclass(frozen=True, slots=True)
class PasswordRule:
    """The password rule in force: ``min_length`` characters at least (the setting
    ``password_min_length``). ``PasswordRule()`` is the default rule."""

    min_length: int = DEFAULT_MIN_LENGTH

    def check(self, password: str, name: str) -> None:
        """Raise ``InvalidInput`` (exit code 2; the message names the rule) unless ``password``
        may be set for the user ``name`` (system user name or backup user ``LoginName``); the
        rules are in the module docstring."""
        if not password:
            raise InvalidInput("the password must not be empty", self.hint())
        if len(password) < self.min_length:
            raise InvalidInput(
                f"password too short: at least {self.min_length} characters "
                f"({_SETTING_HINT}); it has {len(password)}",
                self.hint(),
            )
        if len(password) > MAX_LENGTH:
            raise InvalidInput(
                f"password too long: at most {MAX_LENGTH} characters; it has {len(password)}",
                self.hint(),
            )
        if not is_text(password) or "\n" in password or "\r" in password:
            raise InvalidInput(
                "password not usable: it holds a NUL, a line break or a lone surrogate",
                self.hint(),
            )
        if name and password.casefold() == name.casefold():
            raise InvalidInput(f"password refused: it is the user's name ({name!r})", self.hint())

    def hint(self) -> str:
        """What a password must be, for an error's hint."""
        return (
            f"choose a password of {self.min_length} to {MAX_LENGTH} characters that is not "
            "the user's name (a few unrelated words make a good one)"
        )

    def generate(self) -> str:
        """A random password meeting this rule (:func:`generate_password`)."""
        return generate_password(max(GENERATED_LENGTH, self.min_length))


def generate_password(length: int = GENERATED_LENGTH) -> str:
    """A random password of ``length`` URL-safe characters (``A-Z a-z 0-9 - _``, about 6 bits
    each: 20 give about 120 bits), from ``secrets``."""
    return secrets.token_urlsafe(length)[:length]
