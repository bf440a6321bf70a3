"""A backup set's settings: the one model the agent API, the store and the agent validate with.

Keys (JSON, as stored and served): ``sources`` (full paths of the folders and files to back up),
``filters`` (``{"include": [...], "exclude": [...]}`` glob patterns of full paths),
``compression`` (``{"type": "ZSTD", "level": 0..22}``, default level
:data:`DEFAULT_COMPRESSION_LEVEL`) and ``deduplication`` (bool). Every string is valid UTF-8
text without NUL: sets are stored and served as JSON text (``opencbs.store.sets``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filters(_Frozen):
    """Glob patterns of full paths a backup set includes and excludes."""

    include: tuple[Pattern, ...] = Field(default=(), max_length=1000)
    exclude: tuple[Pattern, ...] = Field(default=(), max_length=1000)


class Compression(_Frozen):
    """How chunks are compressed: zstd at ``level`` 0..22."""

    type: Literal["ZSTD"] = "ZSTD"
    level: int = Field(default=DEFAULT_COMPRESSION_LEVEL, ge=0, le=22, strict=True)


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

    def given(self) -> dict[str, Any]:
        """The keys the input named, in their JSON form (for a partial update)."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    def as_json(self) -> dict[str, Any]:
        """Every key in its JSON form (lists, not tuples), as stored and served."""
        return self.model_dump(mode="json")
