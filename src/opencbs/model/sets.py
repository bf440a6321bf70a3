"""A backup set's settings: the one model the agent API, the store and the agent validate with.

Keys (JSON, as stored and served): ``sources`` (full paths of the folders and files to back up),
``filters`` (``{"include": [...], "exclude": [...]}`` glob patterns of full paths),
``compression`` (``{"type": "ZSTD", "level": 0..22}``, default level
:data:`DEFAULT_COMPRESSION_LEVEL`), ``deduplication`` (bool), ``retention`` (which snapshots
the set keeps, :class:`Retention`; default: 7 days) and ``time_zone`` (the IANA zone its
schedules run in; null: the server's). Every string is valid UTF-8
text without NUL (``opencbs.model.text``): sets are stored and served as JSON text, so a source
or pattern that is not raises ``InvalidInput`` with a hint, wherever it is validated.

Parse a JSON object with :meth:`BackupSetSettings.parse` (or ``merged`` for a partial update):
a wrong shape raises ``InvalidInput`` with a one-line message naming the key. Pydantic's own
``model_validate`` raises its ``ValidationError`` instead (the agent API answers it as a 422),
except for what a JSON schema cannot say (text that is not UTF-8, a ``retention`` that mixes
its modes or keeps nothing, a ``keep_within`` that is not a duration): ``InvalidInput`` there
too (the agent API's 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from opencbs.model.retention import Duration, KeepRules
from opencbs.model.text import PATTERN_HINT, SOURCE_HINT, require_text

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_RETENTION_DAYS",
    "MAX_KEEP_COUNT",
    "MAX_PATH",
    "MAX_SIMPLE_RETENTION",
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
#: A new set's retention: the versions of deleted and updated files kept 7 days (CBS's default
#: for a file set, cbs-api.md "Retention in CBS terms").
DEFAULT_RETENTION_DAYS = 7
#: Most days or jobs of a SIMPLE retention policy (CBS's simple policy: 1..365).
MAX_SIMPLE_RETENTION = 365
#: Most snapshots one ``keep_*`` count of an ADVANCED retention policy may name.
MAX_KEEP_COUNT = 10_000

Pattern = Annotated[str, Field(min_length=1, max_length=4096)]
SourcePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH)]

#: What each key must be: the message of ``InvalidInput`` for a wrong shape.
_KEY_RULES = {
    "sources": "sources must be a list of paths",
    "filters": 'filters must be {"include": [patterns], "exclude": [patterns]}',
    "compression": 'compression must be {"type": "ZSTD", "level": 0..22}',
    "deduplication": "deduplication must be true or false",
    "time_zone": 'time_zone must be an IANA time zone name such as "Europe/Berlin", or null',
    "retention": (
        'retention must be {"mode": "SIMPLE", "days" or "jobs": 1..365} or '
        '{"mode": "ADVANCED", "keep_*": 0..10000, "keep_within": "30d"}'
    ),
}
_RETENTION_HINT = (
    'e.g. {"mode": "SIMPLE", "days": 7}, {"mode": "SIMPLE", "jobs": 10} or {"mode": '
    '"ADVANCED", "keep_daily": 7, "keep_weekly": 4, "keep_within": "30d"}'
)


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


SimpleCount = Annotated[
    int, BeforeValidator(_integral), Field(ge=1, le=MAX_SIMPLE_RETENTION, strict=True)
]
KeepCount = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=MAX_KEEP_COUNT, strict=True)]
_KEEP_COUNTS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)


class Retention(_Frozen):
    """Which snapshots of a backup set are kept (issue 14; cbs-api.md "Retention in CBS terms").

    JSON form: ``{"mode": "SIMPLE"|"ADVANCED", "days": int|null, "jobs": int|null,
    "keep_last": 0, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0,
    "keep_yearly": 0, "keep_within": null|"30d", "after_backup": true}``.

    - ``SIMPLE`` (CBS's simple policy): exactly one of ``days`` (the versions of deleted and
      updated files kept N days) or ``jobs`` (kept N backup jobs), 1..365; every ``keep_*``
      0 or null.
    - ``ADVANCED``: restic's ``forget --keep-*`` rules (``opencbs.model.retention``): counts
      0..10000, ``keep_within`` a duration (``7d``, ``1y2m3d4h``; stored in canonical form);
      ``days`` and ``jobs`` null, at least one count above 0 or ``keep_within`` set.
    - ``after_backup``: the policy runs after each backup (CBS's ``SpaceFreeUpEnabled``).

    A set's default is :meth:`default` (SIMPLE, 7 days). A shape pydantic can check (types,
    ranges) fails as its ``ValidationError``; a rule across keys, or a ``keep_within`` that is
    not a duration, raises ``InvalidInput`` naming ``retention``. Integers are strict (a JSON
    number without fraction, ``7.0``, counts as one).
    """

    mode: Literal["SIMPLE", "ADVANCED"] = "SIMPLE"
    days: SimpleCount | None = None
    jobs: SimpleCount | None = None
    keep_last: KeepCount = 0
    keep_hourly: KeepCount = 0
    keep_daily: KeepCount = 0
    keep_weekly: KeepCount = 0
    keep_monthly: KeepCount = 0
    keep_yearly: KeepCount = 0
    keep_within: Annotated[str, Field(min_length=1, max_length=64, strict=True)] | None = None
    after_backup: Annotated[bool, Field(strict=True)] = True

    @classmethod
    def default(cls) -> Retention:
        """A new set's policy: SIMPLE, :data:`DEFAULT_RETENTION_DAYS` days, after each backup."""
        return cls(days=DEFAULT_RETENTION_DAYS)

    @field_validator("keep_within")
    @classmethod
    def _canonical_within(cls, value: str | None) -> str | None:
        """``keep_within`` in canonical form (``07d`` -> ``7d``); one that is not a duration
        raises ``InvalidInput`` ("retention keep_within: invalid duration …")."""
        if value is None:
            return None
        try:
            return str(Duration.parse(value))
        except InvalidInput as exc:
            raise InvalidInput(f"retention keep_within: {exc.message}", exc.hint) from None

    @model_validator(mode="after")
    def _one_mode(self) -> Retention:
        """The rules across keys (class docstring); ``InvalidInput`` naming ``retention``."""
        counts = [name for name in _KEEP_COUNTS if getattr(self, name)]
        if self.mode == "SIMPLE":
            if (self.days is None) == (self.jobs is None):
                problem = "a SIMPLE policy keeps either days or jobs (1..365)"
                _refuse(problem + (", not both" if self.days is not None else ""))
            if counts or self.keep_within is not None:
                given = ", ".join([*counts, *(["keep_within"] if self.keep_within else [])])
                _refuse(f"a SIMPLE policy takes no keep_* rules ({given}): use mode ADVANCED")
        else:
            if self.days is not None or self.jobs is not None:
                _refuse("an ADVANCED policy takes keep_* rules, not days or jobs")
            if not counts and self.keep_within is None:
                _refuse("an ADVANCED policy must keep something: a keep_* count or keep_within")
        return self

    def keep_rules(self) -> KeepRules:
        """The policy as ``KeepRules``: SIMPLE ``days`` N keeps the newest snapshot and every
        snapshot within N days of it; SIMPLE ``jobs`` N the N newest; ADVANCED its ``keep_*``."""
        if self.mode == "SIMPLE":
            if self.days is not None:
                return KeepRules(last=1, within=Duration(days=self.days))
            return KeepRules(last=self.jobs or 0)
        return KeepRules(
            last=self.keep_last,
            hourly=self.keep_hourly,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
            within=Duration.parse(self.keep_within) if self.keep_within else None,
        )


def _refuse(problem: str) -> NoReturn:
    """Raise the ``InvalidInput`` of a retention policy that breaks a rule across its keys."""
    raise InvalidInput(f"retention: {problem}", _RETENTION_HINT)


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
    retention: Retention = Field(default_factory=Retention.default)
    time_zone: Annotated[str, Field(min_length=1, max_length=64, strict=True)] | None = Field(
        default=None,
        description="IANA time zone of the set's schedules (cbs-api.md §13); null: the "
        "server's zone (setting timezone).",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        """A name ``zoneinfo`` does not know raises ``InvalidInput`` ("unknown time zone …")."""
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"unknown time zone {value!r}", 'give an IANA name such as "Europe/Berlin"'
            ) from None
        return value

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
        """These settings with the keys of ``changes`` (JSON form) replaced, each whole (a
        ``retention`` given is the whole policy); raises ``InvalidInput`` as ``parse`` does."""
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
