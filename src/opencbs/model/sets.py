"""A backup set's settings: the one model the agent API, the store and the agent validate with.

Keys (JSON, as stored and served): ``sources`` (full paths of the folders and files to back up),
``filters`` (``{"include": [...], "exclude": [...]}`` glob patterns of full paths),
``compression`` (``{"type": "ZSTD", "level": 0..22}``, default level
:data:`DEFAULT_COMPRESSION_LEVEL`) and ``deduplication`` (bool). Every string is valid UTF-8
text without NUL (``opencbs.model.text``): sets are stored and served as JSON text, so a source
or pattern that is not raises ``InvalidInput`` with a hint, wherever it is validated.

Parse a JSON object with :meth:`BackupSetSettings.parse` (or ``merged`` for a partial update):
a wrong shape raises ``InvalidInput`` with a one-line message naming the key. Pydantic's own
``model_validate`` raises its ``ValidationError`` instead (the agent API answers it as a 422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from opencbs.errors import InvalidInput
from opencbs.model.text import PATTERN_HINT, SOURCE_HINT, require_text

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "MAX_PATH",
    "BackupSetSettings",
    "Compression",
    "Filters",
]

#: zstd level of a new backup set and of a new repository (the one default; the repository
#: records the level it was created with).
DEFAULT_COMPRESSION_LEVEL = 3
#: Longest path (characters): Windows' extended-length limit.
MAX_PATH = 32_767

Pattern = Annotated[str, Field(min_length=1, max_length=4096)]
SourcePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH)]

#: What each key must be: the message of ``InvalidInput`` for a wrong shape.
_KEY_RULES = {
    "sources": "sources must be a list of paths",
    "filters": 'filters must be {"include": [patterns], "exclude": [patterns]}',
    "compression": 'compression must be {"type": "ZSTD", "level": 0..22}',
    "deduplication": "deduplication must be true or false",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_text_items(value: Any, what: str, hint: str) -> Any:
    """``require_text`` for each string of a list (other items are pydantic's to refuse)."""
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, str):
                require_text(item, what, hint)
    return value


class Filters(_Frozen):
    """Glob patterns of full paths a backup set includes and excludes."""

    include: tuple[Pattern, ...] = Field(default=(), max_length=1000)
    exclude: tuple[Pattern, ...] = Field(default=(), max_length=1000)

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _text_patterns(cls, value: Any, info: ValidationInfo) -> Any:
        """A pattern that is not valid UTF-8 text raises ``InvalidInput`` ("include pattern …
        is not valid UTF-8 text"), not a pydantic error."""
        return _require_text_items(value, f"{info.field_name} pattern", PATTERN_HINT)


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (``18.0``: an integer in JSON Schema) as an ``int``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Compression(_Frozen):
    """How chunks are compressed: zstd at ``level`` 0..22."""

    type: Literal["ZSTD"] = "ZSTD"
    level: Annotated[int, BeforeValidator(_integral)] = Field(
        default=DEFAULT_COMPRESSION_LEVEL, ge=0, le=22, strict=True
    )


class BackupSetSettings(_Frozen):
    """A backup set's settings (module docstring); every key has its default, and
    ``given()`` tells which keys a request named (a missing key keeps its current value)."""

    sources: tuple[SourcePath, ...] = Field(
        default=(),
        max_length=1000,
        description="Full paths of the folders and files to back up (valid UTF-8 text).",
    )
    filters: Filters = Field(default_factory=Filters)
    compression: Compression = Field(default_factory=Compression)
    deduplication: Annotated[bool, Field(strict=True)] = True

    @field_validator("sources", mode="before")
    @classmethod
    def _text_sources(cls, value: Any) -> Any:
        """A source that is not valid UTF-8 text raises ``InvalidInput`` ("source … is not
        valid UTF-8 text", with ``SOURCE_HINT``: rename it or choose its parent), not a
        pydantic error."""
        return _require_text_items(value, "source", SOURCE_HINT)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> BackupSetSettings:
        """The settings of a JSON object; missing keys take their defaults. Raises
        ``InvalidInput`` for an unknown key, a wrong shape (message naming the key) or a
        string that is not valid UTF-8 text."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from None

    def merged(self, changes: Mapping[str, Any]) -> BackupSetSettings:
        """These settings with the keys of ``changes`` (JSON form) replaced; raises
        ``InvalidInput`` as ``parse`` does."""
        return self.parse({**self.as_json(), **changes})

    def given(self) -> dict[str, Any]:
        """The keys the input named, in their JSON form (for a partial update)."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    def as_json(self) -> dict[str, Any]:
        """Every key in its JSON form (lists, not tuples), as stored and served."""
        return self.model_dump(mode="json")


def _invalid(exc: ValidationError) -> InvalidInput:
    """The ``InvalidInput`` of pydantic's first complaint: one line naming the key."""
    error = exc.errors()[0]
    loc = error["loc"]
    detail = " ".join(str(error["msg"]).split())
    if not loc:
        return InvalidInput(f"backup set settings must be an object ({detail})")
    key = str(loc[0])
    if key not in _KEY_RULES:
        known = ", ".join(_KEY_RULES)
        return InvalidInput(f"unknown backup set setting {key!r}", f"known: {known}")
    where = ".".join(str(part) for part in loc)
    return InvalidInput(f"{_KEY_RULES[key]} ({where}: {detail})")
