"""What a destination holds, and the quota a job starts with: values the agent sends and the
server answers (the agent API, cbs-api.md §11), defined once for both (style.md §16).

- :class:`StorageMeasurement`: the body of ``POST /api/agent/v1/backup-sets/{set_id}/
  destinations/{destination_id}/storage``, sent after a backup job or a retention run. Sizes
  are bytes, counts are files or snapshots, ``measured_at`` epoch ms (``None``: the server's
  clock when it arrives). Every number a JSON integer from 0 to 2^53 - 1 (``18.0`` counts,
  ``"18"`` or ``true`` do not).
- :class:`StorageQuota`: the ``quota`` object of the job start answer: the user's quota
  (``limit`` bytes, 0 = none), what the user's other destinations hold (``used``) and what the
  job's destination holds (``destination_used``), each destination counted by its latest
  ``stored_size``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from opencbs.reports.timefmt import MAX_TIME_MS, MIN_TIME_MS

__all__ = ["MAX_STORAGE_NUMBER", "StorageMeasurement", "StorageQuota"]

#: Largest size or count taken: 2^53 - 1, the largest integer every JSON reader holds exactly.
MAX_STORAGE_NUMBER = 2**53 - 1


def _whole(value: Any) -> Any:
    """A JSON number without fraction (``18.0``: an integer in JSON Schema) as an ``int``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Number = Annotated[int, Field(ge=0, le=MAX_STORAGE_NUMBER), Strict(), BeforeValidator(_whole)]
_Time = Annotated[int, Field(ge=MIN_TIME_MS, le=MAX_TIME_MS), Strict(), BeforeValidator(_whole)]


class StorageMeasurement(BaseModel):
    """One measurement of a destination's repository (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measured_at: _Time | None = Field(
        default=None,
        description="When it was measured, epoch ms (default: when the server receives it; "
        "at most 5 minutes past the server's clock).",
    )
    stored_size: _Number = Field(
        description="Bytes the whole repository takes on the destination (after "
        "deduplication, compression and encryption)."
    )
    data_size: _Number = Field(description="Bytes stored for what the newest snapshot holds.")
    data_count: _Number = Field(description="Files in the newest snapshot.")
    retain_size: _Number = Field(
        description="Bytes stored only for file versions older snapshots hold (the retention area)."
    )
    retain_count: _Number = Field(description="File versions only older snapshots hold.")
    snapshot_count: _Number = Field(description="Snapshots in the repository.")


class StorageQuota(BaseModel):
    """The quota a backup job starts with (module docstring); bytes."""

    model_config = ConfigDict(frozen=True)

    limit: int = Field(description="The backup user's quota in bytes; 0: none.")
    used: int = Field(
        description="Bytes the user's other destinations hold (latest stored_size of each)."
    )
    destination_used: int = Field(
        description="Bytes this job's destination holds (its latest stored_size; 0: never "
        "measured)."
    )

    def exceeded_by(self, destination_bytes: int) -> bool:
        """Whether the job's destination holding ``destination_bytes`` puts the user over its
        quota (never when there is none)."""
        return self.limit > 0 and self.used + destination_bytes > self.limit
