"""Reading the parameters of a CBS call (cbs-api.md §1): a JSON object whatever the
Content-Type says, or a form; query-string parameters merged in, the body winning on conflict."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request

from opencbs.errors import BodyNotObject, ParameterInvalid, ParameterMissing
from opencbs.model.text import is_text

#: A body larger than this is refused as not an object (bytes).
MAX_BODY = 1 << 20

_SURROGATE = re.compile("[\ud800-\udfff]")

_TRUE = {"true", "y", "1", "yes"}
_FALSE = {"false", "n", "0", "no"}


def _form(text: str) -> dict[str, Any]:
    return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))


_FORM = re.compile(r"^[^{}\[\]\"\s=&]+=[^{}\[\]\"\s]*(?:&[^{}\[\]\"\s=&]+=[^{}\[\]\"\s]*)*$")


def _looks_like_form(text: str) -> bool:
    """Whether ``text`` is ``key=value&key=value`` (URL-encoded), not broken JSON."""
    return bool(_FORM.match(text.strip()))


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The parameters in a request body. Raises ``BodyNotObject`` for anything but a JSON
    object or (with a form Content-Type) a form; an empty body has no parameters."""
    if len(body) > MAX_BODY:
        raise BodyNotObject()
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some Windows tools send
        body = body[3:]
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyNotObject() from None
    if "application/x-www-form-urlencoded" in content_type.lower():
        stripped = text.lstrip()
        if not stripped.startswith("{"):
            return _form(text)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # orjson refuses what the stdlib accepts (e.g. NaN); be as lenient as Java's JSON
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            if _looks_like_form(text):  # a form sent under a JSON or text Content-Type
                return _form(text)
            raise BodyNotObject() from None
    if not isinstance(value, dict):
        raise BodyNotObject()
    return value


async def read_params(request: Request) -> Params:
    """Parameters of a CBS request: query string, overlaid by the body (§1)."""
    merged: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    merged.update(parse_body(body, request.headers.get("content-type", "")))
    return Params(merged)


class Params:
    """Typed access to a call's parameters, raising the §3 parameter errors."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        if "DestinationID" not in self.values and "DestionationID" in self.values:
            self.values["DestinationID"] = self.values["DestionationID"]

    def optional_str(self, name: str) -> str | None:
        """The parameter as a string (numbers are accepted and written in decimal); ``None``
        when absent or null. Raises ``ParameterInvalid`` for an object, array or boolean, and
        for a string the databases cannot hold (a NUL character, a lone surrogate), so such input
        never reaches a query (PostgreSQL would refuse it: an HTTP 500)."""
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            if not is_text(value):
                raise ParameterInvalid(name, printable(value))
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        raise ParameterInvalid(name, shown_value(value))

    def required_str(self, name: str) -> str:
        """The parameter as a non-empty string. Raises ``ParameterMissing`` when absent or empty,
        ``ParameterInvalid`` for a wrong type."""
        value = self.optional_str(name)
        if value is None or value == "":
            raise ParameterMissing(name)
        return value

    def str_or_empty(self, name: str) -> str:
        """The parameter as a string, ``""`` when absent."""
        return self.optional_str(name) or ""

    def json_object(self, name: str) -> dict[str, Any] | None:
        """An object parameter: a JSON object in a JSON body, or its JSON text in a form or
        the query string (``RetentionPolicy={"Type":"SIMPLE",…}``); ``None`` when absent, null
        or empty. Raises ``ParameterInvalid`` for anything else."""
        value = self._json(name, dict, "not a JSON object")
        return value if isinstance(value, dict) else None

    def json_array(self, name: str) -> list[Any] | None:
        """An array parameter, as :meth:`json_object` reads an object (``ScheduleList=[…]``);
        ``None`` when absent, null or empty. Raises ``ParameterInvalid`` for anything else."""
        value = self._json(name, list, "not a JSON array")
        return value if isinstance(value, list) else None

    def _json(self, name: str, kind: type, refusal: str) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ParameterInvalid(name, printable(value), refusal) from None
        if not isinstance(value, kind):
            raise ParameterInvalid(name, shown_value(value), refusal)
        return value

    def boolean(self, name: str, *, default: bool = False) -> bool:
        """A boolean: JSON true/false, strings true/false in any case, Y/N, 1/0 (§1); the default
        when absent or empty. Raises ``ParameterInvalid`` otherwise."""
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        raise ParameterInvalid(name, shown_value(value))


def printable(value: str) -> str:
    """``value`` made safe to echo in an answer: NUL written ``\\u0000``, a lone surrogate
    replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "\\u0000"))


def shown_value(value: Any) -> str:
    """A parameter's value as an error message echoes it: a string made ``printable``,
    anything else as JSON (``{"Type":"SIMPLE"}``, ``[1]``, ``true``)."""
    if isinstance(value, str):
        return printable(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return printable(repr(value))
