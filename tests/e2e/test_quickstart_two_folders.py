"""``opencbs quickstart`` run for two folders (two sets of the backup user ``quickstart``): the
``agent.toml`` it writes names the set of the folder it backed up last (``backup_set``), so the
README's by-hand commands work against a real ``opencbs serve``; and what quickstart backs up
leaves out ``PATH/.venv`` and the contents of a folder tagged ``CACHEDIR.TAG``."""

from __future__ import annotations

import json
import signal
import tomllib
from pathlib import Path

from tests.e2e.serving import free_port, run, serving
from tests.e2e.test_quickstart import _curl, _env, _quickstart, _report, _tree

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def _with_caches_and_venv(tree: Path) -> None:
    """Add to ``tree`` a tagged cache folder, a folder whose tag lacks the signature, and a
    virtual environment ``.venv``."""
    (tree / "cache" / "sub").mkdir(parents=True)
    (tree / "cache" / "CACHEDIR.TAG").write_bytes(SIGNATURE + b"\n# pip's cache\n")
    (tree / "cache" / "blob.bin").write_bytes(b"cached" * 100)
    (tree / "cache" / "sub" / "more.bin").write_bytes(b"more")
    (tree / "untagged").mkdir()
    (tree / "untagged" / "CACHEDIR.TAG").write_bytes(b"not the signature\n")
    (tree / "untagged" / "kept.txt").write_bytes(b"kept")
    (tree / ".venv" / "lib").mkdir(parents=True)
    (tree / ".venv" / "pyvenv.cfg").write_bytes(b"home = /usr/bin\n")
    (tree / ".venv" / "lib" / "site.py").write_bytes(b"# installed\n")


def test_by_hand_commands_after_quickstart_of_two_folders(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    _tree(first)
    _with_caches_and_venv(first)
    _tree(second)
    port = free_port()
    data_dir = tmp_path / "home" / ".local" / "share" / "opencbs"
    agent_toml = data_dir / "agent.toml"

    url, body = _curl(_quickstart(env, first, port))
    first_set = body["BackupSetID"]
    assert tomllib.loads(agent_toml.read_text())["agent"]["backup_set"] == first_set
    _, body2 = _curl(_quickstart(env, second, port))
    second_set = body2["BackupSetID"]
    assert second_set != first_set
    # the rerun for another folder names that folder's set
    assert tomllib.loads(agent_toml.read_text())["agent"]["backup_set"] == second_set

    with serving(env, port=port, stop=signal.SIGTERM):
        # what the first folder's job stored: no .venv, the cache folder and its tag only
        data = _report(url, body)
        names = {e["Name"] for e in data["new"]}
        assert str(first / "cache" / "CACHEDIR.TAG") in names
        assert str(first / "untagged" / "kept.txt") in names
        assert str(first / "a.txt") in names
        assert not {n for n in names if "/.venv" in n}, names
        assert not {n for n in names if n.startswith(str(first / "cache") + "/")} - {
            str(first / "cache" / "CACHEDIR.TAG")
        }, names

        # README: opencbs --config <data_dir>/agent.toml backup --verbose
        res = run(env, "--config", str(agent_toml), "backup", "--verbose", "--json")
        assert res.returncode == 0, (res.stdout, res.stderr)
        outcome = json.loads(res.stdout)
        assert outcome["backup_set_id"] == second_set
        # --set still picks another set
        res = run(env, "--config", str(agent_toml), "backup", "--set", first_set, "--json")
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert json.loads(res.stdout)["backup_set_id"] == first_set

        # README: opencbs --config … snapshots --destination <data_dir>/destinations/<set id>
        res = run(
            env,
            "--config",
            str(agent_toml),
            "snapshots",
            "--destination",
            str(data_dir / "destinations" / second_set),
            "--json",
        )
        assert res.returncode == 0, (res.stdout, res.stderr)
        rows = json.loads(res.stdout)
        assert len(rows) == 2 and {r["backup_set_id"] for r in rows} == {second_set}
