"""``opencbs report`` as a real process, readable for a person: the summary in words and human
units (no raw CBS field names), the warnings' text, the legend of the change kinds, ``--limit``
saying what it hides, 80 columns on a terminal; ``latest``, ``--list``, and a job ID that is not
one refused (exit 2) with its format. ``--json`` stays GetBackupJobReport's answer, byte for
byte (compared with a real ``opencbs serve``).

Data: ``opencbs demo --no-serve`` (the vendor's example job and a second job with a warning and
every list filled); and a backup user with real jobs in two sets, from ``opencbs backup``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from tests.e2e.serving import (
    OPENCBS,
    TIMEOUT,
    add_sysuser,
    add_user,
    agent_env,
    isolated_env,
    ok,
    run,
    serving,
)

EXAMPLE, SECOND = "2024-06-26-13-24-35", "2024-06-27-13-24-35"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The demo's data directory, plus a second set of the demo user that has no job."""
    root = tmp_path_factory.mktemp("report-demo")
    env = isolated_env(root)
    ok(env, "demo", "--no-serve")
    ok(env, "set", "add", "demo", "Empty", "--source", str(root), "--destination", str(root / "d"))
    return env


def _report(env: dict[str, str], *args: str) -> str:
    return ok(env, "report", *args, "--user", "demo")


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def test_summary_speaks_words_and_human_units(demo: dict[str, str]) -> None:
    out = _report(demo, SECOND)
    assert out.startswith(f"Backup job {SECOND}\n")
    summary = _between(out, "Backup job", "Changes")
    for expected in (
        "Completed with warnings (BS_STOP_SUCCESS_WITH_WARNING)",
        "Demo files (ID ",
        "Local (ID ",
        "2024-06-27 13:24:35",
        "2024-06-27 13:24:44",
        "9 seconds",
        "127.0.0.1",
        "1 warning, 0 errors",
        "20.5 kB of 92.2 kB examined was already stored (22% saved)",
    ):
        assert expected in summary, expected
    changes = _between(out, "Changes", "Change kinds")
    # kind, files, dirs, links, original size, stored size, compression's saving
    assert re.search(r"new\s+1\s+1\s+0\s+51\.2 kB\s+20\.5 kB\s+60%", changes), changes
    assert re.search(r"permission\s+1\s+1\.0 kB\s+512 bytes\s+50%", changes), changes
    assert re.search(r"copied\s+1\s+51\.2 kB\s+0 bytes\s+100%", changes), changes


def test_no_raw_field_names(demo: dict[str, str]) -> None:
    keys = json.loads(_report(demo, SECOND, "--json"))["Data"].keys()
    raw = [k for k in keys if re.search("[a-z][A-Z]", k)]  # NumOfNewFiles, FromIp, …
    assert "UpdatedFilesZipRation" in raw and "TotalUnzipNewFilesSize" in raw
    for job in (EXAMPLE, SECOND):
        out = _report(demo, job)
        assert [k for k in raw if k in out] == []
        assert not re.search(r"\b1 (files|entries|warnings|errors|seconds)\b", out)


def test_the_vendor_example_in_words(demo: dict[str, str]) -> None:
    out = _report(demo, EXAMPLE)
    assert "Completed (BS_STOP_SUCCESS)" in out and "21 seconds" in out
    assert "0 warnings, 0 errors" in out
    assert re.search(r"new\s+1,169\s+24\s+3 \(3 to dirs\)\s+10\.3 MB\s+6\.8 MB\s+33%", out)
    assert "0 bytes of 2.4 kB examined was already stored (0% saved)" in out
    assert "Warnings and errors" not in out  # no warn or error entry in that log


def test_warnings_with_their_text_and_the_legend(demo: dict[str, str]) -> None:
    out = _report(demo, SECOND)
    problems = _between(out, "Warnings and errors: 1 entry", "Log (warnings and errors above)")
    assert "warn" in problems
    assert r"Skipped C:\Users\Administrator\Documents\mail.pst: the file is in use" in problems
    legend = _between(out, "Change kinds", "Warnings and errors")
    for word, key in (
        ("new", "new"),
        ("updated", "upd"),
        ("permission", "pmt"),
        ("deleted", "del"),
        ("moved", "mov"),
        ("copied", "cpy"),
    ):
        assert re.search(rf"^{word}\s+{key}\s+\w", legend, re.M), word
    assert "permissions, owner or times changed" in legend
    lists = out[out.index("Log (warnings and errors above): 3 entries") :]
    for title in ("New (new): 2 entries", "Updated (upd): 1 entry", "Moved (mov): 1 entry"):
        assert title in lists
    assert re.search(r"notes\.txt →.*\n\s+C:\\Users\\Administrator\\Documents\\archive", lists)


def test_limit_says_what_it_hides(demo: dict[str, str]) -> None:
    out = _report(demo, SECOND, "--limit", "1")
    log = _between(out, "Log (warnings and errors above): 3 entries", "New (new)")
    assert "Start [opencbs demo]" in log and "Backup Completed" not in log
    assert "2 more entries not shown (--limit N shows more, --json all)" in log
    new = _between(out, "New (new): 2 entries", "Updated (upd)")
    assert "plan.docx" not in new and "1 more entry not shown" in new
    assert "not shown" not in _between(out, "Updated (upd)", "Permission (pmt)")


def test_fits_80_columns_on_a_terminal(demo: dict[str, str]) -> None:
    child = pexpect.spawn(
        OPENCBS,
        ["report", SECOND, "--user", "demo"],
        env={**demo, "TERM": "xterm-256color", "COLUMNS": "80"},
        dimensions=(50, 80),
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    lines = plain.split("\n")
    assert "Completed with warnings" in plain and "mail.pst" in plain
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]


def test_latest_is_the_newest_job_of_the_one_set_with_jobs(demo: dict[str, str]) -> None:
    # the demo user has two sets, and jobs only in "Demo files"
    assert _report(demo, "latest").startswith(f"Backup job {SECOND}\n")
    assert _report(demo, "latest", "--json") == _report(demo, SECOND, "--json")
    assert _report(demo, "LATEST", "--set", "Demo files").startswith(f"Backup job {SECOND}\n")
    res = run(demo, "report", "latest", "--user", "demo", "--set", "Empty")
    assert res.returncode == 4, res.stderr
    assert "has no backup job in backup set ‘Empty’" in res.stderr
    assert "hint: the user's jobs: `opencbs report --list --user demo`" in res.stderr


def test_a_job_id_out_of_format_is_invalid_input(demo: dict[str, str]) -> None:
    for bad in ("yesterday", "2024-13-45-00-00-00", "2024-06-27"):
        res = run(demo, "report", bad, "--user", "demo")
        assert res.returncode == 2, (bad, res.stderr)
        first, hint = res.stderr.splitlines()
        assert first.startswith(f"opencbs: error: invalid backup job ID ‘{bad}’: ")
        assert "yyyy-MM-dd-HH-mm-ss" in first and "latest" in first
        assert "`opencbs report latest --user demo --set NAME`" in hint
        assert "`opencbs report --list --user demo`" in hint
    res = run(demo, "report", "--user", "demo")
    assert res.returncode == 2 and "no backup job ID given" in res.stderr
    # well formed but not there: not found (4), with the way to list the jobs
    res = run(demo, "report", "2024-01-01-00-00-00", "--user", "demo")
    assert res.returncode == 4
    assert res.stderr.splitlines()[-1] == (
        "hint: the user's jobs: `opencbs report --list --user demo`"
    )


def test_list_of_the_demo_jobs(demo: dict[str, str]) -> None:
    out = ok(demo, "report", "--list", "--user", "demo")
    assert out.startswith("Backup jobs of demo: 2 jobs")
    assert out.index(EXAMPLE) < out.index(SECOND)  # newest last
    assert re.search(rf"{SECOND}\s+Demo files\s+Local\s+Completed with warnings\s+9 seconds", out)
    listed = json.loads(ok(demo, "report", "--list", "--user", "demo", "--json"))
    assert [j["ID"] for j in listed] == [EXAMPLE, SECOND]
    assert listed[1]["BackupJobStatus"] == "BS_STOP_SUCCESS_WITH_WARNING"
    assert listed[1]["BackupSetName"] == "Demo files" and listed[1]["DestinationName"] == "Local"
    res = run(demo, "report", SECOND, "--list", "--user", "demo")
    assert res.returncode == 2 and "--list takes no JOBID" in res.stderr


def test_a_user_without_jobs(demo: dict[str, str]) -> None:
    ok(demo, "user", "add", "carol", "--password-stdin", stdin="carol-password\n")
    assert ok(demo, "report", "--list", "--user", "carol") == "Backup jobs of carol: 0 jobs\n"
    assert json.loads(ok(demo, "report", "--list", "--user", "carol", "--json")) == []
    res = run(demo, "report", "latest", "--user", "carol")
    assert res.returncode == 4
    assert res.stderr.splitlines()[0] == "opencbs: error: backup user ‘carol’ has no backup job"


# --- a backup user with real jobs in two sets ---------------------------------------------


@dataclass(frozen=True)
class Bob:
    url: str
    env: dict[str, str]
    jobs: dict[str, list[dict[str, Any]]]  # set name -> the jobs `opencbs backup --json` ran


MONITOR = {"SysUser": "monitor", "SysPwd": "monitor-password"}


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bob]:
    """A served data directory where bob backed up "Docs" twice and "Photos" once."""
    root = tmp_path_factory.mktemp("report-bob")
    env = isolated_env(root)
    add_user(env, "bob", "bob-password")
    add_sysuser(env, "monitor", MONITOR["SysPwd"], "--role", "API_ONLY")
    with serving(env) as srv:
        agent = agent_env(env, srv.url, login="bob", password="bob-password", encryption="bob-repo")
        jobs: dict[str, list[dict[str, Any]]] = {"Docs": [], "Photos": []}
        for name in ("Docs", "Photos"):
            src = root / name
            src.mkdir()
            (src / "a.txt").write_bytes(b"alpha\n" * 1000)
            (src / "b.bin").write_bytes(os.urandom(5000))
            jobs[name].append(_backup(agent, name, src, root / f"{name}-dest"))
        (root / "Docs" / "a.txt").write_bytes(b"alpha, changed\n" * 1000)
        jobs["Docs"].append(_backup(agent, "Docs", root / "Docs", root / "Docs-dest"))
        yield Bob(srv.url, agent, jobs)


def _backup(env: dict[str, str], name: str, src: Path, dest: Path) -> dict[str, Any]:
    args = ["--set", name, "--source", str(src), "--destination", str(dest), "--json"]
    job: dict[str, Any] = json.loads(ok(env, "backup", *args))
    assert job["status"] == "BS_STOP_SUCCESS", job
    return job


def test_latest_with_several_sets_wants_set(bob: Bob) -> None:
    res = run(bob.env, "report", "latest", "--user", "bob")
    assert res.returncode == 2, res.stderr
    first, hint = res.stderr.splitlines()
    assert first.startswith(
        "opencbs: error: backup user ‘bob’ has jobs in 2 backup sets: Docs (ID "
    )
    assert "Photos (ID " in first
    assert hint.startswith("hint: choose one with --set: `opencbs report latest --user bob --set ")
    newest_docs = bob.jobs["Docs"][-1]
    out = ok(bob.env, "report", "latest", "--user", "bob", "--set", "Docs")
    assert out.startswith(f"Backup job {newest_docs['job_id']}\n")
    assert "Completed (BS_STOP_SUCCESS)" in out and "Updated (upd): 1 entry" in out
    by_id = ok(bob.env, "report", "latest", "--user", "bob", "--set", newest_docs["backup_set_id"])
    assert by_id == out
    photos = ok(bob.env, "report", "latest", "--user", "bob", "--set", "Photos")
    assert photos.startswith(f"Backup job {bob.jobs['Photos'][0]['job_id']}\n")


def test_latest_json_is_the_api_answer(bob: Bob) -> None:
    job = bob.jobs["Docs"][-1]
    api = httpx.post(
        bob.url + "/obs/api/json/GetBackupJobReport.do",
        timeout=30,
        json={
            **MONITOR,
            "LoginName": "bob",
            "BackupSetID": job["backup_set_id"],
            "DestinationID": job["destination_id"],
            "BackupJobID": job["job_id"],
        },
    )
    assert api.json()["Status"] == "OK"
    cli = ok(bob.env, "report", "latest", "--user", "bob", "--set", "Docs", "--json")
    assert cli.rstrip("\n").encode() == api.content


def test_list_of_jobs_in_two_sets(bob: Bob) -> None:
    out = ok(bob.env, "report", "--list", "--user", "bob")
    assert out.startswith("Backup jobs of bob: 3 jobs")
    ids = [bob.jobs["Docs"][0]["job_id"], bob.jobs["Photos"][0]["job_id"]]
    ids.append(bob.jobs["Docs"][1]["job_id"])
    shown = [w for line in out.splitlines() for w in line.split()[:1] if w in ids]
    assert shown == ids  # oldest first, newest last
    one = ok(bob.env, "report", "--list", "--user", "bob", "--limit", "1")
    assert ids[-1] in one and ids[0] not in one
    assert "2 older jobs not shown (--limit N shows more, --json all)" in one
    docs = json.loads(ok(bob.env, "report", "--list", "--user", "bob", "--set", "Docs", "--json"))
    assert [j["ID"] for j in docs] == [ids[0], ids[2]]
    assert {j["BackupSetName"] for j in docs} == {"Docs"}
