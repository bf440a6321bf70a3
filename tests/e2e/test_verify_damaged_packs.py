"""``opencbs verify`` through the real CLI, as processes against a real ``opencbs serve`` (issue
12): a damaged pack is one ``damaged:`` line naming the pack, how many of its chunks are damaged
and what uses them (a flipped byte, found by ``--read-data``; a cut-short pack, found from its
size even without ``--read-data``); the error counts damaged objects; ``--json`` keeps each
damaged chunk under its pack."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.serving import ok, run
from tests.e2e.test_agent_cli import Server, server  # noqa: F401 (server: the module's fixture)


def _backed_up(srv: Server, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A source of three random files backed up to a new destination; returns the
    destination and its largest pack (the files' content)."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(400_000))
    ok(srv.env, "backup", "--set", name, "--source", str(src), "--destination", str(dest))
    packs = [p for p in (dest / "data").rglob("*") if p.is_file()]
    return dest, max(packs, key=lambda p: p.stat().st_size)


def _damaged_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("damaged: ")]


def test_a_flipped_byte_is_one_line_naming_the_pack(server: Server, tmp_path: Path) -> None:  # noqa: F811
    dest, pack = _backed_up(server, tmp_path, "verify-flip")
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    res = run(server.env, "verify", "--destination", str(dest), "--read-data")
    assert res.returncode == 8, res.stdout + res.stderr
    [line] = _damaged_lines(res.stdout)
    assert line.startswith(f"damaged: data/{pack.name[:2]}/{pack.name}: ")
    assert "pack bytes do not match the pack ID; 1 of " in line
    assert line.endswith(" chunks damaged, used by " + line.rsplit(" used by ", 1)[1])
    assert ".bin in 1 snapshot" in line  # the one file it damages, named
    error = res.stderr.strip().splitlines()[-2]
    assert error == f"opencbs: error: the repository at {dest} is damaged: 1 problem (listed above)"

    as_json = run(server.env, "verify", "--destination", str(dest), "--read-data", "--json")
    [problem] = json.loads(as_json.stdout)["errors"]
    assert problem["subject"] == f"data/{pack.name[:2]}/{pack.name}"
    assert problem["message"] == line.split(": ", 2)[2]
    [chunk] = problem["chunks"]
    assert len(chunk["id"]) == 64 and chunk["id"] not in chunk["message"]
    assert chunk["id"] not in line  # the line counts chunks; the JSON names them
    assert problem["use"]["chunks"] == 1 and problem["use"]["files"] == 1


def test_a_cut_short_pack_is_found_without_reading_data(server: Server, tmp_path: Path) -> None:  # noqa: F811
    dest, pack = _backed_up(server, tmp_path, "verify-cut")
    whole = pack.read_bytes()
    pack.write_bytes(whole[: len(whole) // 2])

    for more in ([], ["--read-data"]):
        res = run(server.env, "verify", "--destination", str(dest), *more)
        assert res.returncode == 8, res.stdout + res.stderr
        [line] = _damaged_lines(res.stdout)
        assert line.startswith(
            f"damaged: data/{pack.name[:2]}/{pack.name}: cut short: {len(whole) // 2:,} bytes "
            f"where its index needs {len(whole):,}; "
        ), line
        assert " chunks damaged, used by " in line and " in 1 snapshot" in line
        assert res.stdout.count(pack.name) == 1
        error = res.stderr.strip().splitlines()[-2]
        assert error.endswith(" is damaged: 1 problem (listed above)")
