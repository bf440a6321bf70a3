"""The agent API's storage measurements (``/api/agent/v1``, cbs-api.md §11): what a
destination's repository holds, sent by the agent after a backup job or a retention run.

``POST /backup-sets/{set_id}/destinations/{destination_id}/storage`` with a
``model.storage.StorageMeasurement`` body stores it (``store.storage.record_measurement``) and
answers the record, 201 when new, 200 when the same measurement was stored already (a retry
after a lost answer). Authentication and errors are the agent API's (``api/agent.py``): 401,
404 for a set of another user or an unknown set or destination, 400 for a ``measured_at`` more
than 5 minutes past the server's clock, 409 for another measurement of that destination at
that instant, 422 for a body that does not match the schema (a number below 0, above 2^53 - 1
or not a JSON integer).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from opencbs.api.agent import COMMON_ANSWERS, DestIdPath, SetIdPath, User, error_answer
from opencbs.api.state import state_of
from opencbs.model.storage import StorageMeasurement
from opencbs.store import sets, storage

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"], responses=COMMON_ANSWERS)


class StorageOut(BaseModel):
    """A stored measurement: the set's and destination's IDs (strings), ``measured_at`` and
    ``received_at`` (epoch ms), the figures as sent (bytes, files, snapshots)."""

    backup_set_id: str
    destination_id: str
    measured_at: int
    received_at: int
    stored_size: int
    data_size: int
    data_count: int
    retain_size: int
    retain_count: int
    snapshot_count: int


def _out(record: storage.StorageRecord) -> StorageOut:
    return StorageOut(
        backup_set_id=str(record.set_id),
        destination_id=str(record.destination_id),
        measured_at=record.measured_at,
        received_at=record.received_at,
        stored_size=record.stored_size,
        data_size=record.data_size,
        data_count=record.data_count,
        retain_size=record.retain_size,
        retain_count=record.retain_count,
        snapshot_count=record.snapshot_count,
    )


@router.post(
    "/backup-sets/{set_id}/destinations/{destination_id}/storage",
    status_code=201,
    summary="Record what the destination's repository holds (after a backup job or a "
    "retention run); 200 when this measurement was recorded already.",
    responses={
        200: {"model": StorageOut, "description": "Recorded already (a retry)."},
        404: error_answer(
            "No such set of the caller (another user's set is not found), or "
            "no such destination of it."
        ),
        409: error_answer("The destination has another measurement at that measured_at."),
    },
)
def post_storage(
    request: Request,
    response: Response,
    user: User,
    *,
    set_id: SetIdPath,
    destination_id: DestIdPath,
    body: StorageMeasurement,
) -> StorageOut:
    with state_of(request).db.write() as conn:
        bset = sets.get_set(conn, user.id, set_id)
        dest = sets.get_destination(conn, bset, destination_id)
        record, new = storage.record_measurement(conn, bset, dest, body)
    if not new:
        response.status_code = 200
    return _out(record)
