"""``quickstart``'s decision after the job (``_serve_and_back_up``): serve after a successful
job, never after a failed one (its exit code instead), never with ``--no-serve``. The server
and the job are stand-ins here; tests/e2e/test_quickstart.py runs the real thing."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from opencbs.cli import quickstart
from opencbs.settings import Settings


class _FakeServer:
    calls: list[str] = []

    def __init__(self, *args: Any) -> None:
        pass

    def start(self) -> None:
        self.calls.append("start")

    def wait(self) -> None:
        self.calls.append("wait")

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.mark.parametrize(
    ("job_code", "no_serve", "calls", "code"),
    [
        (0, False, ["start", "wait", "stop"], 0),
        (0, True, ["start", "stop"], 0),
        (9, False, ["start", "stop"], 9),  # BS_STOP_BY_SYSTEM_ERROR: its code, nothing served
        (130, False, ["start", "stop"], 130),
    ],
)
def test_serves_only_after_a_successful_job(
    monkeypatch: pytest.MonkeyPatch, job_code: int, no_serve: bool, calls: list[str], code: int
) -> None:
    _FakeServer.calls = []
    monkeypatch.setattr(quickstart, "BackgroundServer", _FakeServer)
    monkeypatch.setattr(quickstart, "_backup", lambda *a, **k: job_code)
    setup = quickstart.Setup(None, "quickstart", "pw", "key", "1", "/src", "2", Path("/d"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        got = quickstart._serve_and_back_up(
            Settings.model_construct(**Settings().model_dump()),
            None,  # type: ignore[arg-type]
            sock,
            setup,
            verbose=False,
            no_serve=no_serve,
            temporary=False,
        )
    assert (got, _FakeServer.calls) == (code, calls)
