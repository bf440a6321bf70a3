"""The agent API (``/api/agent/v1``): backup users manage their sets and deliver job reports."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/agent/v1", tags=["Agent API"])
