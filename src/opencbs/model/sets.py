"""A backup set's settings: the one model the agent API, the store and the agent validate with.

Keys (JSON, as stored and served): ``sources`` (full paths of the folders and files to back up),
``filters`` (``{"include": [...], "exclude": [...]}`` glob patterns of full paths),
``compression`` (``{"type": "ZSTD", "level": 0..22}``, default level
:data:`DEFAULT_COMPRESSION_LEVEL`), ``deduplication`` (bool) and ``retention`` (the retention
policy, :class:`Retention`; default SIMPLE, 7 days). Every string is valid UTF-8
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
    model_validator,
)

from opencbs.errors import InvalidInput
from opencbs.model.text import PATTERN_HINT, SOURCE_HINT, require_text

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "MAX_PATH",
    "BackupSetSettings",
    "Compression",
    "Filters",
    "Retention",
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
    "retention": (
        'retention must be {"mode": "SIMPLE", "days": 1..365} or {"mode": "SIMPLE", "jobs": '
        '1..365} or {"mode": "ADVANCED", "keep_last": n, ...}'
    ),
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


#: Most days or jobs a SIMPLE retention policy keeps (the vendor's bound, cbs-api.md §8).
MAX_SIMPLE_RETENTION = 365
#: Default days of a SIMPLE retention policy (the vendor's default for a file set).
DEFAULT_RETENTION_DAYS = 7

_Keep = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=1_000_000, strict=True)]
_Simple = Annotated[
    int, BeforeValidator(_integral), Field(ge=1, le=MAX_SIMPLE_RETENTION, strict=True)
]


class Retention(_Frozen):
    """A backup set's retention policy (minimal form; attribute names are the JSON keys).

    ``mode`` ``SIMPLE``: exactly one of ``days`` or ``jobs`` (1..365; neither given: ``days``
    :data:`DEFAULT_RETENTION_DAYS`). ``mode`` ``ADVANCED``: the ``keep_*`` counts (0 = rule
    off) and ``keep_within`` (a duration such as ``30d``; ``None`` = off), at least one rule on.
    ``after_backup``: run the policy after each backup job (the vendor's
    ``SpaceFreeUpEnabled``)."""

    mode: Literal["SIMPLE", "ADVANCED"] = "SIMPLE"
    days: _Simple | None = None
    jobs: _Simple | None = None
    keep_last: _Keep = 0
    keep_hourly: _Keep = 0
    keep_daily: _Keep = 0
    keep_weekly: _Keep = 0
    keep_monthly: _Keep = 0
    keep_yearly: _Keep = 0
    keep_within: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,5}[hdwmy]$")] | None = None
    after_backup: Annotated[bool, Field(strict=True)] = True

    @model_validator(mode="before")
    @classmethod
    def _default_days(cls, data: Any) -> Any:
        """A SIMPLE policy that names neither days nor jobs keeps 7 days."""
        if isinstance(data, Mapping) and data.get("mode", "SIMPLE") == "SIMPLE":
            if data.get("days") is None and data.get("jobs") is None:
                return {**data, "days": DEFAULT_RETENTION_DAYS}
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> Retention:
        keeps = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        if self.mode == "SIMPLE":
            if (self.days is None) == (self.jobs is None):
                raise ValueError("a SIMPLE policy keeps either days or jobs, not both")
            if any(keeps) or self.keep_within is not None:
                raise ValueError("keep_* rules belong to an ADVANCED policy")
        else:
            if self.days is not None or self.jobs is not None:
                raise ValueError("days and jobs belong to a SIMPLE policy")
            if not any(keeps) and self.keep_within is None:
                raise ValueError("an ADVANCED policy needs at least one keep_* rule")
        return self


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
    retention: Retention = Field(default_factory=Retention)

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
