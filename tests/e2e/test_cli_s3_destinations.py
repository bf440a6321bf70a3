"""``opencbs set add … --destination s3://BUCKET/PREFIX`` through the real CLI (issue 13): an S3
destination kept in normal form, listed as its URL and endpoint, shown by a real ``opencbs
serve``'s GetBackupSet as Type ``S3``; S3 options with a folder, and a bucket that is not one,
refused with exit code 2, one line and a hint, nothing stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.e2e.serving import add_sysuser, add_user, isolated_env, ok, run, serving

LOGIN = "alice"
ADMIN = ("ops", "ops-password")


def _one_line_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: ") and text in lines[0], lines[0]
    assert lines[1].startswith("hint: ")
    assert res.stdout == ""


def test_set_add_with_an_s3_destination(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    add_user(env, LOGIN, "alice-pw")
    add_sysuser(env, *ADMIN)
    src = tmp_path / "src"
    src.mkdir()

    added = json.loads(
        ok(
            env,
            "set",
            "add",
            LOGIN,
            "Docs",
            "--source",
            str(src),
            "--destination",
            "s3://backups/alice/docs/",
            "--s3-endpoint",
            "http://127.0.0.1:8333/",
            "--json",
        )
    )
    (dest,) = added["DestinationList"]
    assert (dest["Name"], dest["Type"]) == ("S3", "S3")  # its default name
    assert dest["Settings"] == {
        "bucket": "backups",
        "prefix": "alice/docs",
        "endpoint": "http://127.0.0.1:8333",
        "region": "us-east-1",
    }
    local = json.loads(
        ok(env, "set", "add", LOGIN, "Pics", "--source", str(src), "--destination",
           str(tmp_path / "d"), "--json")
    )  # fmt: skip
    assert local["DestinationList"][0]["Name"] == "Local"
    aws = json.loads(
        ok(env, "set", "add", LOGIN, "Mail", "--source", str(src), "--destination", "s3://b-2",
           "--s3-region", "eu-central-1", "--destination-name", "AWS", "--json")
    )  # fmt: skip
    assert aws["DestinationList"][0]["Name"] == "AWS"
    assert aws["DestinationList"][0]["Settings"] == {
        "bucket": "b-2",
        "prefix": "",
        "endpoint": "",
        "region": "eu-central-1",
    }

    listed = json.loads(ok(env, "set", "list", LOGIN, "--json"))
    assert listed == [added, local, aws]  # --json: the same shape as before
    table = ok({**env, "COLUMNS": "250"}, "set", "list", LOGIN)  # no cell folded
    assert "s3://backups/alice/docs at http://127.0.0.1:8333" in table
    assert "s3://b-2" in table

    with serving(env) as srv:
        for call in ("GetBackupSet", "2/GetBackupSet"):
            answer = httpx.post(
                f"{srv.url}/obs/api/json/{call}.do",
                json={
                    "SysUser": ADMIN[0],
                    "SysPwd": ADMIN[1],
                    "LoginName": LOGIN,
                    "BackupSetID": added["ID"],
                },
                timeout=30,
            ).json()
            assert answer["Status"] == "OK", answer
            assert answer["Data"]["DestinationList"] == [
                {"Id": dest["Id"], "Name": "S3", "Type": "S3"}
            ]


def test_set_add_refuses_s3_options_with_a_folder_and_bad_buckets(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    add_user(env, LOGIN, "alice-pw")
    src = tmp_path / "src"
    src.mkdir()
    base = ("set", "add", LOGIN, "Docs", "--source", str(src), "--destination")

    _one_line_error(
        run(env, *base, str(tmp_path / "d"), "--s3-endpoint", "http://h:9000"),
        "--s3-endpoint and --s3-region apply to an s3:// destination",
    )
    _one_line_error(
        run(env, *base, str(tmp_path / "d"), "--s3-region", "eu-west-1"),
        "apply to an s3:// destination",
    )
    _one_line_error(run(env, *base, "s3://x"), "invalid S3 bucket name 'x'")
    _one_line_error(run(env, *base, "s3://"), "invalid S3 bucket name ''")
    _one_line_error(
        run(env, *base, "s3://backups/p", "--s3-endpoint", "http://key:secret@h"),
        "invalid S3 endpoint",
    )
    assert json.loads(ok(env, "set", "list", LOGIN, "--json")) == []  # nothing was added
