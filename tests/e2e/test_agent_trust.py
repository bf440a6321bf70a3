"""The agent trusts its own record, not the server, for where it writes and what it reads
(issue 11, finding 6), as real processes against a real ``opencbs serve``:

- a destination folder holding someone else's ``config`` (a ``~/.aws``) is refused before
  anything is written, whether the server named it or the command line did; the file stays
  byte-identical;
- a destination folder or the sources changed on the server (agent API ``PATCH``) are refused
  by the next backup (exit code 7, nothing written at the new folder) and accepted with
  ``--accept-server-changes``, or when named on the command line;
- a restore that takes its folder from the server reads only from a folder the agent accepted;
- a set renamed on the server whose name is given to a new set (other sources, the same folder)
  is refused: ``--set NAME`` does not follow the name to what the owner never accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serving import add_user, agent_env, isolated_env, ok, run, serving

LOGIN, PASSWORD, ENCRYPTION = "trusty", "trusty-pw", "repo-secret"
AWS_CONFIG = b"[default]\nregion = eu-west-1\noutput = json\n"


@dataclass(frozen=True)
class Server:
    url: str
    root: Path
    env: dict[str, str]  # the agent's environment: server, login, passwords

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A change made on the server side, through the agent API (as a compromised server
        or anyone holding the backup user's password could)."""
        return self._call("PATCH", path, body, 200)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Something created on the server side, through the agent API."""
        return self._call("POST", path, body, 201)

    def _call(self, method: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        r = httpx.request(
            method, f"{self.url}/api/agent/v1{path}", json=body, auth=(LOGIN, PASSWORD), timeout=30
        )
        assert r.status_code == status, r.text
        answer: dict[str, Any] = r.json()
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("agent-trust")
    env = isolated_env(root)
    add_user(env, LOGIN, PASSWORD)
    with serving(env) as srv:
        yield Server(
            srv.url,
            root,
            agent_env(env, srv.url, login=LOGIN, password=PASSWORD, encryption=ENCRYPTION),
        )


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n" * 100)
    (root / "sub" / "b.txt").write_bytes(b"beta")


def _aws(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config").write_bytes(AWS_CONFIG)
    os.utime(folder / "config", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def _untouched(folder: Path) -> None:
    assert sorted(os.listdir(folder)) == ["config"]
    assert (folder / "config").read_bytes() == AWS_CONFIG
    assert (folder / "config").stat().st_mtime_ns == 1_600_000_000_000_000_000


def _refused(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """A refusal: exit code 7, one error line and a hint, no traceback, no job."""
    assert res.returncode == 7, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    errors = [x for x in lines if x.startswith("opencbs: error: ")]
    assert len(errors) == 1 and lines[lines.index(errors[0]) + 1].startswith("hint: "), lines
    assert "Traceback" not in res.stderr and res.stdout == ""
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def _backup(srv: Server, *args: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(ok(srv.env, "backup", *args, "--json"))
    assert job["status"] == "BS_STOP_SUCCESS", job
    return job


def _trust_record(srv: Server) -> dict[str, Any]:
    found = list((srv.root / "data" / "agent-spool").glob("trusty-*/accepted-targets.json"))
    if not found:
        return {"sets": {}}
    (path,) = found
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def test_server_set_pointing_at_a_foreign_config_is_refused(server: Server, tmp_path: Path) -> None:
    src, aws = tmp_path / "src", tmp_path / "home" / ".aws"
    _tree(src)
    _aws(aws)
    # the set is made on the server side: the agent never named this folder
    ok(server.env, "set", "add", LOGIN, "aws", "--source", str(src), "--destination", str(aws))
    res = run(server.env, "backup", "--set", "aws")
    _refused(res, str(aws), "not empty and holds no opencbs repository")
    _untouched(aws)
    assert "aws" not in {s["name"] for s in _trust_record(server)["sets"].values()}

    # named on the agent's own command line, for a new set: refused before the server hears
    res = run(
        server.env, "backup", "--set", "aws-cli", "--source", str(src), "--destination", str(aws)
    )
    _refused(res, str(aws))
    _untouched(aws)
    listed = json.loads(ok(server.env, "set", "list", LOGIN, "--json"))
    assert "aws-cli" not in {s["Name"] for s in listed}


def test_first_use_of_a_server_set_is_accepted_with_a_note(server: Server, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    ok(server.env, "set", "add", LOGIN, "tofu", "--source", str(src), "--destination", str(dest))
    res = run(server.env, "backup", "--set", "tofu")
    assert res.returncode == 0, res.stderr
    assert "used for the first time on this agent" in res.stderr and str(dest) in res.stderr
    again = run(server.env, "backup", "--set", "tofu")
    assert again.returncode == 0 and "first time" not in again.stderr


def test_destination_moved_on_the_server(server: Server, tmp_path: Path) -> None:
    src, dest, moved = tmp_path / "src", tmp_path / "dest", tmp_path / "elsewhere" / "new"
    _tree(src)
    job = _backup(server, "--set", "moved", "--source", str(src), "--destination", str(dest))
    set_id, dest_id = job["backup_set_id"], job["destination_id"]
    server.patch(
        f"/backup-sets/{set_id}/destinations/{dest_id}", {"settings": {"path": str(moved)}}
    )

    res = run(server.env, "backup", "--set", "moved")
    line = _refused(res, f"destination {dest_id} changed from {dest} to {moved}")
    assert "nothing read or written" in line and "--accept-server-changes" in res.stderr
    assert not moved.parent.exists()  # nothing written there, not even the folder
    assert _trust_record(server)["sets"][set_id]["destinations"] == {dest_id: str(dest)}
    # into the server's folder holding someone's files: refused even with the flag
    _aws(moved)
    res = run(server.env, "backup", "--set", "moved", "--accept-server-changes")
    _refused(res, "not empty and holds no opencbs repository")
    _untouched(moved)
    assert _trust_record(server)["sets"][set_id]["destinations"] == {dest_id: str(dest)}

    (moved / "config").unlink()
    res = run(server.env, "backup", "--set", "moved", "--accept-server-changes", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "BS_STOP_SUCCESS"
    assert (moved / "keys" / "default").is_file()
    assert _trust_record(server)["sets"][set_id]["destinations"] == {dest_id: str(moved)}
    _backup(server, "--set", "moved")  # accepted now: no flag needed


def test_destination_moved_then_named_on_the_command_line(server: Server, tmp_path: Path) -> None:
    src, dest, moved = tmp_path / "src", tmp_path / "dest", tmp_path / "moved"
    _tree(src)
    job = _backup(server, "--set", "named", "--source", str(src), "--destination", str(dest))
    set_id, dest_id = job["backup_set_id"], job["destination_id"]
    server.patch(
        f"/backup-sets/{set_id}/destinations/{dest_id}", {"settings": {"path": str(moved)}}
    )
    _refused(run(server.env, "backup", "--set", "named"), "changed from")
    _backup(server, "--set", "named", "--destination", str(moved))  # the owner names it
    _backup(server, "--set", "named")


def test_sources_changed_on_the_server(server: Server, tmp_path: Path) -> None:
    src, dest, secret = tmp_path / "src", tmp_path / "dest", tmp_path / "secret"
    _tree(src)
    secret.mkdir()
    (secret / "id_ed25519").write_bytes(b"private key")
    job = _backup(server, "--set", "wider", "--source", str(src), "--destination", str(dest))
    set_id = job["backup_set_id"]
    snapshots = len(json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json")))
    server.patch(f"/backup-sets/{set_id}", {"settings": {"sources": [str(src), str(secret)]}})

    res = run(server.env, "backup", "--set", "wider", "--verbose")
    _refused(res, f"sources changed from [{src}] to [{src}, {secret}]")
    assert "--source PATH" in res.stderr and "id_ed25519" not in res.stderr + res.stdout
    listed = json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json"))
    assert len(listed) == snapshots  # no job ran

    job = _backup(server, "--set", "wider", "--accept-server-changes")
    assert job["counts"]["new"] == 2  # the secret folder and its file, now accepted
    assert _trust_record(server)["sets"][set_id]["sources"] == [str(src), str(secret)]


def test_sources_changed_then_named_on_the_command_line(server: Server, tmp_path: Path) -> None:
    src, dest, more = tmp_path / "src", tmp_path / "dest", tmp_path / "more"
    _tree(src)
    more.mkdir()
    job = _backup(server, "--set", "named-src", "--source", str(src), "--destination", str(dest))
    server.patch(
        f"/backup-sets/{job['backup_set_id']}", {"settings": {"sources": [str(src), str(more)]}}
    )
    _refused(run(server.env, "backup", "--set", "named-src"), "sources changed")
    _backup(server, "--set", "named-src", "--source", str(src), "--source", str(more))
    _backup(server, "--set", "named-src")


def test_restore_from_a_folder_named_by_the_server(server: Server, tmp_path: Path) -> None:
    src, dest, moved = tmp_path / "src", tmp_path / "dest", tmp_path / "moved"
    _tree(src)
    job = _backup(server, "--set", "restore", "--source", str(src), "--destination", str(dest))
    target = tmp_path / "t1"
    ok(server.env, "restore", job["job_id"], "--set", "restore", "--target", str(target))
    assert (target / src.relative_to("/") / "a.txt").read_bytes() == b"alpha\n" * 100

    # another agent (its own data_dir) never accepted this set: it must be told the folder
    other = {**server.env, "OPENCBS_DATA_DIR": str(tmp_path / "other-agent")}
    res = run(other, "restore", job["job_id"], "--set", "restore", "--target", str(tmp_path / "t2"))
    _refused(res, "has not accepted", str(dest))
    assert not (tmp_path / "t2").exists()
    ok(other, "restore", job["job_id"], "--set", "restore", "--destination", str(dest),
       "--target", str(tmp_path / "t3"))  # fmt: skip

    # the server moves the folder: refused, then read with the owner's consent
    shutil_copy(dest, moved)
    server.patch(
        f"/backup-sets/{job['backup_set_id']}/destinations/{job['destination_id']}",
        {"settings": {"path": str(moved)}},
    )
    res = run(
        server.env, "restore", job["job_id"], "--set", "restore", "--target", str(tmp_path / "t4")
    )
    _refused(res, str(moved))
    assert not (tmp_path / "t4").exists()
    ok(server.env, "restore", job["job_id"], "--set", "restore", "--accept-server-changes",
       "--target", str(tmp_path / "t5"))  # fmt: skip
    assert (tmp_path / "t5" / src.relative_to("/") / "sub" / "b.txt").read_bytes() == b"beta"


def shutil_copy(a: Path, b: Path) -> None:
    import shutil

    shutil.copytree(a, b)


def test_a_set_swapped_behind_its_name_is_refused(server: Server, tmp_path: Path) -> None:
    src, dest, secret = tmp_path / "src", tmp_path / "dest4", tmp_path / "secret"
    _tree(src)
    secret.mkdir()
    (secret / "id_swapped").write_bytes(b"private key")
    job = _backup(server, "--set", "Docs", "--source", str(src), "--destination", str(dest))
    snapshots = len(json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json")))
    # the server renames the set, and gives its name to a new set reading /secret into dest4
    server.patch(f"/backup-sets/{job['backup_set_id']}", {"name": "Docs-old"})
    swapped = server.post(
        "/backup-sets",
        {
            "name": "Docs",
            "type": "FILE",
            "settings": {"sources": [str(secret)]},
            "destinations": [{"name": "Local", "type": "LOCAL", "settings": {"path": str(dest)}}],
        },
    )

    res = run(server.env, "backup", "--set", "Docs", "--verbose")
    line = _refused(res, f"the name 'Docs' belongs to set ID {job['backup_set_id']} here")
    assert f"that folder belongs to set 'Docs' (ID {job['backup_set_id']})" in line
    assert "first time" not in res.stderr and "id_swapped" not in res.stderr
    listed = json.loads(ok(server.env, "snapshots", "--destination", str(dest), "--json"))
    assert len(listed) == snapshots  # no job ran, nothing written to dest4
    assert swapped["id"] not in _trust_record(server)["sets"]
    # nothing read: no entry of the secret file on the server's or the agent's disk (the
    # server's database with its job reports, the agent's spooled reports and its record); the
    # secret folder is named only where the server's own sets are kept
    for path in (p for p in server.root.rglob("*") if p.is_file()):
        assert b"id_swapped" not in path.read_bytes(), path
        if not path.name.startswith("opencbs.db") and path.name != "sets.json":
            assert str(secret).encode() not in path.read_bytes(), path

    # the owner consents: backed up, and accepted from now on
    job = _backup(server, "--set", "Docs", "--accept-server-changes")
    assert job["backup_set_id"] == swapped["id"] and job["counts"]["new"] == 2
    _backup(server, "--set", "Docs")
