"""Finding snapshots through the real CLI, as processes against a real ``opencbs serve`` (issue
12): ``restore latest`` (one set; several sets without ``--set`` is an error naming them; with
``--set`` by name, by ID, and without ``--destination``), ``snapshots`` showing set names
(recorded by the job, or for snapshots without one the name this agent accepted the set under)
and filtering by ``--set`` and ``--host`` (the set's ID beside its name when the terminal is wide
enough: on a pseudo-terminal), ``verify`` saying each problem once, and counts of one in the
singular.

A second host: a copy of a snapshot is committed with another host name through the engine (as
an agent on another machine writing to the same destination would), then the CLI lists it."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pexpect

from opencbs.destinations.local import LocalStorage
from opencbs.engine.repository import Repository
from tests.e2e.serving import OPENCBS, ok, run
from tests.e2e.test_agent_cli import (  # noqa: F401 (server: the module's fixture)
    ENCRYPTION,
    Server,
    _same_tree,
    _tree,
    server,
)

OTHER_HOST = "other-host.example"


def _backup(srv: Server, name: str, src: Path, dest: Path) -> dict[str, Any]:
    res = run(
        srv.env, "backup", "--set", name, "--source", str(src), "--destination", str(dest), "--json"
    )
    assert res.returncode == 0, res.stderr
    job: dict[str, Any] = json.loads(res.stdout)
    return job


def _backed_up(srv: Server, name: str, tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Set ``name`` of a small tree (``tmp_path/src``) backed up once to ``tmp_path/dest``;
    returns (source, destination, the job as ``opencbs backup --json`` printed it)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    return src, dest, _backup(srv, name, src, dest)


def _listed(env: dict[str, str], dest: Path, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        ok(env, "snapshots", "--destination", str(dest), "--json", *args)
    )
    return rows


def _restore(env: dict[str, str], *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(ok(env, "restore", *args, "--json"))
    return answer


def _copy_snapshot(dest: Path, snapshot_id: str, **changes: Any) -> str:
    """Commit a copy of a snapshot, a second later, with other metadata (``changes``), as
    another agent would."""
    repo = Repository.open(LocalStorage(dest), ENCRYPTION)
    info, items = repo.load_snapshot(snapshot_id)
    later = info.meta.time_ns + 1_000_000_000
    return repo.commit_snapshot(dataclasses.replace(info.meta, time_ns=later, **changes), items)


def test_restore_latest_of_the_one_set(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest, _ = _backed_up(server, "latest-one", tmp_path)
    (src / "a.txt").write_bytes(b"changed\n")
    (src / "new.txt").write_bytes(b"new\n")
    second = _backup(server, "latest-one", src, dest)
    target = tmp_path / "restored"
    answer = _restore(server.env, "latest", "--destination", str(dest), "--target", str(target))
    assert answer["snapshot_id"] == second["snapshot_id"]
    _same_tree(src, target / src.relative_to("/"))


def test_latest_of_several_sets_needs_set(server: Server, tmp_path: Path) -> None:  # noqa: F811
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "dest"
    _tree(a)
    b.mkdir()
    (b / "only-b.txt").write_bytes(b"b\n")
    first_a = _backup(server, "latest-a", a, dest)
    (a / "a.txt").write_bytes(b"second a\n")
    newest_a = _backup(server, "latest-a", a, dest)
    newest_b = _backup(server, "latest-b", b, dest)

    target = tmp_path / "t"
    res = run(server.env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    assert res.returncode == 2, res.stderr
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error.startswith("opencbs: error: latest is ambiguous: ")
    assert f"'latest-a' ({first_a['backup_set_id']})" in error
    assert f"'latest-b' ({newest_b['backup_set_id']})" in error
    assert hint.startswith("hint: ") and "--set" in hint
    assert not target.exists()  # nothing created for a restore that cannot start

    # by name (looked up on the server), by ID (no server needed), without --destination
    by_name = _restore(
        server.env,
        "latest",
        "--set",
        "latest-a",
        "--destination",
        str(dest),
        "--target",
        str(target),
    )
    assert by_name["snapshot_id"] == newest_a["snapshot_id"]
    _same_tree(a, target / a.relative_to("/"))
    by_id = _restore(
        server.env,
        "latest",
        "--set",
        newest_b["backup_set_id"],
        "--destination",
        str(dest),
        "--target",
        str(tmp_path / "t2"),
    )
    assert by_id["snapshot_id"] == newest_b["snapshot_id"]
    found = _restore(server.env, "latest", "--set", "latest-b", "--target", str(tmp_path / "t3"))
    assert found["snapshot_id"] == newest_b["snapshot_id"]


def test_latest_of_a_set_with_no_snapshot_here(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest, elsewhere = tmp_path / "src", tmp_path / "dest", tmp_path / "elsewhere"
    _tree(src)
    _backup(server, "latest-here", src, dest)
    other = _backup(server, "latest-elsewhere", src, elsewhere)
    target = tmp_path / "t"
    res = run(
        server.env,
        "restore",
        "latest",
        "--set",
        other["backup_set_id"],
        "--destination",
        str(dest),
        "--target",
        str(target),
    )
    assert res.returncode == 4, res.stderr
    error = res.stderr.strip().splitlines()[-2]
    assert error.startswith("opencbs: error: no snapshot of backup set ")
    assert "Traceback" not in res.stderr and not target.exists()


def test_snapshots_show_set_names_and_filter_by_set_and_host(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "dest"
    _tree(a)
    _tree(b)
    job_a = _backup(server, "names-a", a, dest)
    job_b = _backup(server, "names-b", b, dest)
    set_a, set_b = job_a["backup_set_id"], job_b["backup_set_id"]
    moved = _copy_snapshot(dest, job_b["snapshot_id"], hostname=OTHER_HOST)

    rows = _listed(server.env, dest)
    assert [(r["backup_set_name"], r["backup_set_id"], r["hostname"]) for r in rows] == [
        ("names-a", set_a, socket.gethostname()),
        ("names-b", set_b, socket.gethostname()),
        ("names-b", set_b, OTHER_HOST),
    ]
    text = ok(server.env, "snapshots", "--destination", str(dest))
    line_a = next(line for line in text.splitlines() if job_a["job_id"] in line)
    assert "names-a" in line_a and set_a in line_a  # the name, and the ID beside it
    assert text.splitlines()[0].startswith("3 snapshots in ")

    assert [r["id"] for r in _listed(server.env, dest, "--set", "names-a")] == [
        job_a["snapshot_id"]
    ]
    assert len(_listed(server.env, dest, "--set", set_b)) == 2
    assert [r["id"] for r in _listed(server.env, dest, "--host", OTHER_HOST)] == [moved]
    here = _listed(server.env, dest, "--host", socket.gethostname())
    assert {r["id"] for r in here} == {job_a["snapshot_id"], job_b["snapshot_id"]}
    both = _listed(server.env, dest, "--host", socket.gethostname(), "--host", OTHER_HOST)
    assert len(both) == 3
    assert _listed(server.env, dest, "--set", "names-b", "--host", OTHER_HOST)[0]["id"] == moved
    assert _listed(server.env, dest, "--host", "no-such-host") == []
    none = ok(server.env, "snapshots", "--destination", str(dest), "--host", "no-such-host")
    assert none == f"0 snapshots on host no-such-host in {dest}\n"  # no empty table frame

    res = run(server.env, "snapshots", "--destination", str(dest), "--set", "no-such-set")
    assert res.returncode == 4
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error == f"opencbs: error: no snapshot of backup set 'no-such-set' in {dest}"
    assert f"'names-a' ({set_a})" in hint and f"'names-b' ({set_b})" in hint


def test_snapshots_without_a_recorded_name_are_named_by_the_agent(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest, job = _backed_up(server, "before-names", tmp_path)
    # as a job before set names were recorded wrote it: no name in the snapshot
    old = _copy_snapshot(dest, job["snapshot_id"], set_name=None)
    (dest / "snapshots" / job["snapshot_id"]).unlink()
    rows = _listed(server.env, dest)
    assert [(r["id"], r["backup_set_name"]) for r in rows] == [(old, "before-names")]
    assert len(_listed(server.env, dest, "--set", "before-names")) == 1
    # an agent that never accepted the set shows its ID
    stranger = {**server.env, "OPENCBS_DATA_DIR": str(tmp_path / "other-data")}
    assert _listed(stranger, dest)[0]["backup_set_name"] is None
    text = ok(stranger, "snapshots", "--destination", str(dest))
    line = next(line for line in text.splitlines() if old[:8] in line)
    assert line.count(job["backup_set_id"]) == 2  # Set (no name known) and Set ID


def test_verify_says_each_problem_once(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest, _ = _backed_up(server, "verify-once", tmp_path)
    clean = run(server.env, "verify", "--destination", str(dest))
    assert clean.returncode == 0 and clean.stdout.startswith("ok: 1 snapshot, "), clean.stdout
    packs = [p for p in (dest / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)  # file content
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    as_json = run(server.env, "verify", "--destination", str(dest), "--read-data", "--json")
    assert as_json.returncode == 8
    problems = [f"{e['subject']}: {e['message']}" for e in json.loads(as_json.stdout)["errors"]]
    assert len(problems) == 1  # the pack, naming how many of its chunks fail their check
    assert all(pack.name in p for p in problems)
    assert pack.name not in as_json.stderr and "WARNING" not in as_json.stderr
    assert "damaged: 1 problem (listed in the JSON document)" in as_json.stderr

    res = run(server.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert [said.count(p) for p in problems] == [1]
    assert [line for line in res.stdout.splitlines() if line.startswith("damaged: ")] == [
        f"damaged: {p}" for p in problems
    ]
    assert "WARNING" not in res.stderr
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error == f"opencbs: error: the repository at {dest} is damaged: 1 problem (listed above)"
    assert hint.startswith("hint: ")


def test_verify_counts_one_problem_in_the_singular(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest, first = _backed_up(server, "verify-one", tmp_path)
    (src / "a.txt").write_bytes(b"changed\n")
    _backup(server, "verify-one", src, dest)
    (dest / "snapshots" / first["snapshot_id"]).unlink()
    res = run(server.env, "verify", "--destination", str(dest))
    assert res.returncode == 8
    problem, checked = res.stdout.splitlines()
    assert problem == (
        f"damaged: snapshot {first['snapshot_id']}: removed: named by the snapshot list "
        "(generation 3)"
    )
    assert checked.startswith("checked: 1 snapshot, ") and checked.endswith(", 0 chunks read")
    error = res.stderr.strip().splitlines()[-2]
    assert error == f"opencbs: error: the repository at {dest} is damaged: 1 problem (listed above)"


def test_restore_counts_say_one_in_the_singular(server: Server, tmp_path: Path) -> None:  # noqa: F811
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "one.txt").write_bytes(b"x")
    _backup(server, "singular", src, dest)
    target = tmp_path / "t"
    res = run(server.env, "restore", "latest", "--destination", str(dest), "--target", str(target))
    assert res.returncode == 0, res.stderr
    summary = res.stderr.strip().splitlines()[-1]  # the counts: said once, there
    assert ": 1 file, 1 directory, 0 links, 1 byte restored" in summary, res.stderr


def _on_terminal(env: dict[str, str], columns: int, *args: str) -> str:
    """What ``opencbs ARGS`` prints on a pseudo-terminal ``columns`` wide."""
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    child = pexpect.spawn(
        OPENCBS, list(args), env=env, dimensions=(50, columns), encoding="utf-8", timeout=60
    )
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    return str(out)


def test_the_set_id_column_shows_when_the_terminal_is_wide_enough(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, dest, job = _backed_up(server, "wide", tmp_path)
    wide = _on_terminal(server.env, 200, "snapshots", "--destination", str(dest))
    assert "Set ID" in wide and job["backup_set_id"] in wide and "wide" in wide
    narrow = _on_terminal(server.env, 100, "snapshots", "--destination", str(dest))
    assert "Set ID" not in narrow and job["backup_set_id"] not in narrow
    assert "│ wide " in narrow  # the name, in the Set column
