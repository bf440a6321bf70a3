"""One job of a set at a time (``agent.set_lock``) and how an earlier job that did not finish
is said (``agent.delivery.Delivery.abandoned_line``); the spool folder of the same moment."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from opencbs.agent.delivery import Delivery, DeliveryState
from opencbs.agent.set_lock import JobRunning, lock_path, set_lock
from opencbs.agent.spool import JobSpool, JobStart, SpoolError

HOLD = """
import sys, time
from pathlib import Path
from opencbs.agent.set_lock import set_lock
with set_lock(Path(sys.argv[1]), "42"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(JobRunning) as caught, set_lock(tmp_path, "42", set_name="docs"):
            pass
        err = caught.value
        assert err.exit_code == 5 and err.pid == holder.pid
        assert err.message == (
            f"a job of backup set 'docs' (42) is running (pid {holder.pid}); not starting another"
        )
        assert f"`kill {holder.pid}` stops it cleanly" in err.hint
        with set_lock(tmp_path, "43"):  # another set is not held
            pass
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock, nothing is stale
        holder.wait()
    with set_lock(tmp_path, "42"):
        assert lock_path(tmp_path, "42").read_text().strip() != str(holder.pid)


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with set_lock(tmp_path, "7"), set_lock(tmp_path, "7"):
        pass
    with set_lock(tmp_path, "7"):  # released after both
        pass


def test_a_spool_folder_of_the_same_moment_is_not_a_disk_problem(tmp_path: Path) -> None:
    first = JobSpool.create(tmp_path, JobStart("1", "2", 1_000))
    try:
        with pytest.raises(SpoolError) as caught:
            JobSpool.create(tmp_path, JobStart("1", "2", 1_000))
        assert "started at the same moment" in caught.value.message
        assert "free space" not in caught.value.hint and "data_dir" not in caught.value.hint
    finally:
        first.remove()


def test_an_abandoned_job_is_said_with_how_the_server_has_it() -> None:
    closed = Delivery(
        "f",
        "1",
        "2",
        "2026-12-05-10-00-00",
        DeliveryState.DROPPED,
        message="the server closed it as BS_BACKUP_NOT_FINISHED",
        abandoned=True,
        status="BS_BACKUP_NOT_FINISHED",
    )
    assert closed.abandoned_line == (
        "the previous job 2026-12-05-10-00-00 of this backup set did not finish: its agent "
        "stopped before the job ended (killed, or its machine stopped); the server closed it "
        "as BS_BACKUP_NOT_FINISHED"
    )
    offline = Delivery(
        "f",
        "1",
        "2",
        None,
        DeliveryState.PENDING,
        message="not delivered yet: cannot reach the server",
        start_ms=int(time.time() * 1000),
        abandoned=True,
    )
    line = offline.abandoned_line
    assert line.startswith("the previous job of this backup set (the offline job of ")
    assert line.endswith("; not delivered yet: cannot reach the server") and "None" not in line
