"""The read-ahead helper process (``opencbs.agent.readahead``): started only when a path is
queued, fed whole messages, ended with the pipe, and never in the way when it cannot keep up or
is gone."""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opencbs.agent import readahead as ra
from opencbs.agent.readahead import ReadAhead


def _files(tmp_path: Path, n: int) -> list[bytes]:
    paths = []
    for i in range(n):
        p = tmp_path / f"file-{i:05d}-{'x' * 60}"
        p.write_bytes(b"content %d\n" % i)
        paths.append(os.fsencode(p))
    return paths


def test_no_helper_without_a_path() -> None:
    with ReadAhead() as ahead:
        ahead.send()
        assert ahead._proc is None and ahead.sent == 0


def test_paths_go_in_whole_messages_and_the_helper_ends_with_the_pipe(tmp_path: Path) -> None:
    paths = _files(tmp_path, 300)
    ahead = ReadAhead()
    numbers = [ahead.add(p) for p in paths]
    assert numbers == list(range(300))
    # messages of at most PIPE_BUF bytes left as they filled; the rest waits for send()
    assert 0 < ahead.sent < 300 and ahead.is_sent(0) and not ahead.is_sent(299)
    ahead.send()
    assert ahead.sent == 300 and ahead.dropped == 0 and ahead.is_sent(299)
    proc = ahead._proc
    assert proc is not None and proc.poll() is None
    ahead.close()
    assert proc.returncode == 0  # it ended at the closed pipe, by itself
    ahead.add(paths[0])  # after close: ignored, no new helper
    assert ahead._proc is None


def test_a_path_too_long_for_a_message_is_skipped() -> None:
    with ReadAhead() as ahead:
        no = ahead.add(b"/" + b"a" * 5000)
        assert ahead.is_sent(no) and ahead.sent == 0 and ahead._proc is None


def test_a_gone_helper_turns_read_ahead_off(tmp_path: Path) -> None:
    paths = _files(tmp_path, 3)
    with ReadAhead() as ahead:
        ahead.add(paths[0])
        ahead.send()
        assert ahead._proc is not None
        ahead._proc.kill()
        ahead._proc.wait()
        for p in paths[1:]:
            ahead.add(p)
        ahead.send()  # EPIPE: off, nothing raised
        assert ahead.dropped == 2 and ahead._off


def test_helper_cannot_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ra.sys, "executable", str(tmp_path / "no-such-python"))
    with ReadAhead() as ahead:
        ahead.add(b"/etc/hostname")
        ahead.send()
        assert ahead._off and ahead.sent == 0


def test_the_child_survives_bad_paths_and_stops_at_a_damaged_message(tmp_path: Path) -> None:
    """Errors per path are ignored (a hint only); a message that is not a path list ends it;
    the helper ends when its parent dies (the pipe closes) — here: stdin closed."""
    good = _files(tmp_path, 2)
    child = subprocess.Popen([sys.executable, "-I", "-S", str(ra._CHILD)], stdin=subprocess.PIPE)
    assert child.stdin is not None
    body = marshal.dumps([b"/no/such/file", os.fsencode(tmp_path), *good])
    child.stdin.write(len(body).to_bytes(2, "little") + body)
    child.stdin.flush()
    time.sleep(0.2)
    assert child.poll() is None  # still serving
    child.stdin.write(b"\x03\x00abc")  # not marshal
    child.stdin.flush()
    assert child.wait(timeout=5) == 0
    child.stdin.close()


def test_child_exits_quietly_on_ctrl_c() -> None:
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", str(ra._CHILD)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = child.communicate(timeout=5)
    assert b"Traceback" not in err


def test_a_fifo_does_not_block_the_helper(tmp_path: Path) -> None:
    """A path that became a FIFO is opened non-blocking (and only announced): the helper goes
    on and ends at the closed pipe."""
    fifo = tmp_path / "was-a-file"
    os.mkfifo(fifo)
    ahead = ReadAhead()
    ahead.add(os.fsencode(fifo))
    ahead.send()
    proc = ahead._proc
    assert proc is not None
    ahead.close()  # waits up to 2 s, then kills: a blocked helper would be killed (-9)
    assert proc.returncode == 0
