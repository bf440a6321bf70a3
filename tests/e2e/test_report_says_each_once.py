"""``opencbs report`` as a real process, for a first reader (issue 12): a failed job's status
in words without a second pair of parentheses, deduplication when there was nothing to examine,
each warning and error once (the log shown without them, titled so), the duration equal to the
shown end minus the shown start, and the agent's end line ``Backup ended: <status>`` for a job
that did not complete (``Backup completed: <status>`` only for the success statuses).

Data: a real job of ``opencbs backup`` against a real ``opencbs serve`` whose one source is gone
(``BS_STOP_BY_SYSTEM_ERROR``), and ``opencbs demo --no-serve``'s job with a warning."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from tests.e2e.serving import isolated_env as _env
from tests.e2e.serving import ok, run
from tests.e2e.test_first_hour_outcome import LOGIN, Agent, agent  # noqa: F401 (the fixture)

SECOND = "2024-06-27-13-24-35"  # the demo's job with a warning


def _section(text: str, title: str) -> str:
    """The lines of ``text`` from the one starting with ``title`` to the next blank line."""
    start = text.index("\n" + title) + 1
    end = text.find("\n\n", start)
    return text[start : end if end >= 0 else len(text)]


def _field(text: str, label: str) -> str:
    match = re.search(rf"^{label}\s{{2,}}(.+)$", text, re.M)
    assert match, (label, text)
    return match.group(1).strip()


def test_a_failed_job_reads_well(agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    ok(agent.env, "backup", "--set", "Docs", "--source", str(src), "--destination", str(dest))
    first = json.loads(ok(agent.env, "snapshots", "--destination", str(dest), "--json"))
    assert len(first) == 1
    src.rename(tmp_path / "moved")
    res = run(agent.env, "backup", "--set", "Docs", "--json")
    assert res.returncode == 9, res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "BS_STOP_BY_SYSTEM_ERROR"

    out = ok(agent.env, "report", job["job_id"], "--user", LOGIN)
    assert _field(out, "Status") == "Failed: a system error stopped it (BS_STOP_BY_SYSTEM_ERROR)"
    assert _field(out, "Deduplication") == "on; no new or changed content to examine"
    problems = _section(out, "Warnings and errors: 2 entries")
    log = _section(out, "Log (warnings and errors above): ")
    assert "source not found or unreadable" in problems and "Nothing backed up" in problems
    assert "source not found" not in log and "Nothing backed up" not in log
    assert out.count("source not found or unreadable") == 1
    assert out.count("Nothing backed up") == 1
    assert "Backup ended: BS_STOP_BY_SYSTEM_ERROR" in log
    assert "Backup completed" not in out

    started, ended = (datetime.fromisoformat(_field(out, label)) for label in ("Started", "Ended"))
    seconds = int((ended - started).total_seconds())
    said = _field(out, "Duration")
    assert said == (f"{seconds} second" + ("" if seconds == 1 else "s")), (said, seconds)

    as_json = json.loads(ok(agent.env, "report", job["job_id"], "--user", LOGIN, "--json"))["Data"]
    kinds = [e["Type"] for e in as_json["Logs"]]
    assert kinds.count("warn") == 1 and kinds.count("error") == 1  # --json: every entry
    ends = [e["Message"] for e in as_json["Logs"] if e["Type"] == "end"]
    assert ends == ["Backup ended: BS_STOP_BY_SYSTEM_ERROR"]

    # a job that completed keeps its words
    (tmp_path / "moved").rename(src)
    done = json.loads(ok(agent.env, "backup", "--set", "Docs", "--json"))
    report = json.loads(ok(agent.env, "report", done["job_id"], "--user", LOGIN, "--json"))
    ends = [e["Message"] for e in report["Data"]["Logs"] if e["Type"] == "end"]
    assert ends == ["Backup completed: BS_STOP_SUCCESS"]


def test_the_demo_warning_is_said_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    ok(env, "demo", "--no-serve")
    out = ok(env, "report", SECOND, "--user", "demo")
    warning = r"Skipped C:\Users\Administrator\Documents\mail.pst: the file is in use"
    assert warning in _section(out, "Warnings and errors: 1 entry")
    assert out.count(warning) == 1
    log = _section(out, "Log (warnings and errors above): 3 entries")
    assert "Start [opencbs demo]" in log
    # the vendor's example job has no warning: its log is titled plainly, in full
    example = ok(env, "report", "2024-06-26-13-24-35", "--user", "demo")
    assert "Warnings and errors" not in example and "\nLog: " in example
