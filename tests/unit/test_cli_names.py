"""Names as the CLI prints them (``cli.common.show_name``, the log formatter) and the rule for
user names (``store.users.check_name``)."""

from __future__ import annotations

import logging

import pytest

from opencbs.cli.common import SafeFormatter, show_name
from opencbs.errors import InvalidInput
from opencbs.model.destinations import DestinationAddress
from opencbs.store.users import check_name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain/é.txt", "plain/é.txt"),
        ("two\nlines", "two\\nlines"),
        ("title\x1b]0;pwned\x07", "title\\x1b]0;pwned\\x07"),
        ("del\x7f c1\x9b tab\t cr\r", "del\\x7f c1\\x9b tab\\t cr\\r"),
        ("not-utf8-\udcff", "not-utf8-\\xff"),
        (b"/raw/\xff\n", "/raw/\\xff\\n"),
    ],
)
def test_show_name_escapes_control_characters(name: str | bytes, shown: str) -> None:
    assert show_name(name) == shown


def test_every_control_character_is_escaped() -> None:
    every = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)])
    assert all(0x20 <= ord(c) < 0x7F for c in show_name(every))


def test_log_lines_escape_names() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "cannot read %s", ("a\x1b[2Jb",), None
    )
    line = SafeFormatter("%(message)s").format(record)
    assert line == "cannot read a\\x1b[2Jb"


@pytest.mark.parametrize("name", ["alice", "ann.lee@example.org", "Bob Smith", "é-ü_1"])
def test_good_names(name: str) -> None:
    check_name(name, "login name")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "must not be empty"),
        ("a\nb", "control character"),
        ("a\x1bb", "control character"),
        ("a\x85", "control character"),
        ("a/b", "'/'"),
        ("a\\b", "'/'"),
        (" alice", "space"),
        ("alice ", "space"),
    ],
)
def test_bad_names(name: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as caught:
        check_name(name, "login name")
    assert caught.value.exit_code == 2 and caught.value.hint


def test_a_failed_job_hint_names_what_failed(capsys: pytest.CaptureFixture[str]) -> None:
    """A system error from the destination points at the destination; one from the scan's
    helper process does not (both: one error line, one hint line)."""

    from opencbs.agent.job import JobOutcome
    from opencbs.cli.backup_run import print_job_failure
    from opencbs.model.jobs import JobRef
    from opencbs.reports.vocabulary import JobStatus

    ref = JobRef("1", "2", "2026-11-29-22-00-00")
    failed = JobStatus.STOP_BY_SYSTEM_ERROR
    print_job_failure(
        JobOutcome(ref, failed, None, message="Destination error: disk full"),
        DestinationAddress.local("/mnt/backup"),
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("opencbs: error: backup job 2026-11-29-22-00-00 failed")
    assert err[1].startswith("hint: free space on the destination /mnt/backup")
    print_job_failure(
        JobOutcome(
            ref,
            failed,
            None,
            message="Scan error: the scan's helper process ended early (exit code 1)",
        ),
        DestinationAddress.local("/mnt/backup"),
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "Scan error" in err[0]
    assert err[1].startswith("hint: the walk of the sources stopped")
    assert "free space" not in err[1]
