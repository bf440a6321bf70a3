"""What a backup job's outcome says to a person (issue 12): counts in the singular or plural
(``reports.wording.plural``), the job's ``warn``/``error`` entries kept for the CLI and
``--json`` (the first ``MAX_MESSAGES``: ``agent.report``), the outcome's ``message`` for a job
with warnings (``agent.job``), permission bits in octal in a change's detail
(``engine.classify.change_detail``), and a destination named by its folder, never by a repr."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from opencbs.agent.client import AgentClient
from opencbs.agent.job import JobOutcome, _summary
from opencbs.agent.report import MAX_MESSAGES, JobMessage, ReportStream
from opencbs.cli.backup_run import print_job_failure, print_job_message
from opencbs.destinations import LocalStorage
from opencbs.engine.classify import Change, Reason, change_detail
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository, RepositoryExists, RepositoryNotFound
from opencbs.model.destinations import DestinationAddress
from opencbs.model.jobs import JobRef
from opencbs.reports.vocabulary import EntryType, JobStatus, LogType, ReportList
from opencbs.reports.wording import plural

FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1)


@pytest.mark.parametrize(
    ("count", "word", "many", "said"),
    [
        (0, "warning", None, "0 warnings"),
        (1, "warning", None, "1 warning"),
        (2, "problem", None, "2 problems"),
        (1, "batch", "batches", "1 batch"),
        (3, "batch", "batches", "3 batches"),
    ],
)
def test_plural(count: int, word: str, many: str | None, said: str) -> None:
    assert plural(count, word, many) == said


def test_the_stream_keeps_the_first_messages_and_counts_them_all() -> None:
    client = cast(AgentClient, object())  # never called: the stream starts offline
    stream = ReportStream(client, JobRef("1", "2", "2026-01-01-00-00-00"), online=False)
    stream.log(LogType.INFO, "not a message")
    for i in range(MAX_MESSAGES + 5):
        stream.log(LogType.WARN if i % 2 else LogType.ERROR, f"m{i}")
    assert stream.warnings + stream.errors == MAX_MESSAGES + 5
    assert len(stream.messages) == MAX_MESSAGES
    assert stream.messages[:2] == [JobMessage(LogType.ERROR, "m0"), JobMessage(LogType.WARN, "m1")]


def test_the_summary_of_a_job_with_warnings() -> None:
    one = [JobMessage(LogType.WARN, "/a: source not found or unreadable")]
    assert _summary(0, 0, []) == ""
    assert _summary(1, 0, one) == "completed with 1 warning: /a: source not found or unreadable"
    two = [*one, JobMessage(LogType.ERROR, "x")]
    assert _summary(2, 1, two) == (
        "completed with 2 warnings and 1 error; the first: /a: source not found or unreadable"
    )


def _file(mode: int) -> Entry:
    return Entry(
        path=b"/src/a.txt",
        etype=EntryType.FILE,
        size=5,
        mtime_ns=1,
        ctime_ns=1,
        mode=mode,
        uid=0,
        gid=0,
        inode=7,
        device=1,
    )


def test_a_mode_change_is_said_in_octal() -> None:
    cur = _file(0o100600)
    change = Change(ReportList.PMT, cur, Reason.MODE_CHANGED)
    assert change_detail(_file(0o100644), change) == "mode 0644→0600"


def test_a_destination_is_named_by_its_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "dest")
    with pytest.raises(RepositoryNotFound) as missing:
        Repository.open(storage, "pw")
    Repository.init(storage, "pw", kdf=FAST_KDF)
    with pytest.raises(RepositoryExists) as exists:
        Repository.init(storage, "pw", kdf=FAST_KDF)
    for exc in (missing.value, exists.value):
        assert str(tmp_path / "dest") in str(exc) and "LocalStorage(" not in str(exc)


def test_the_cli_says_each_message_as_it_comes_and_a_failure_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each warning and error is one line on stderr as the job logs it (beyond the 1,000 the
    outcome keeps too); the failure line does not repeat an error already said."""
    stream = ReportStream.__new__(ReportStream)
    stream.messages, stream.on_message = [], print_job_message
    for i in range(MAX_MESSAGES + 1):
        stream._keep(LogType.WARN, f"/f{i}: vanished")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "opencbs: warning: /f0: vanished" and len(err) == MAX_MESSAGES + 1
    assert len(stream.messages) == MAX_MESSAGES
    why = "Nothing backed up: none of the sources could be read"
    failed = JobOutcome(
        JobRef("1", "2", "2026-01-01-00-00-00"),
        JobStatus.STOP_BY_SYSTEM_ERROR,
        None,
        errors=1,
        message=why,
        messages=(JobMessage(LogType.ERROR, why),),
    )
    print_job_failure(failed, DestinationAddress.local("/mnt/backup"))
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0] == "opencbs: error: backup job 2026-01-01-00-00-00 failed (BS_STOP_BY_SYSTEM_ERROR)"
    )
