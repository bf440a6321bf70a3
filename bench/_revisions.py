"""Measuring another revision beside the working tree (``--rev`` of ``bench/agent.py`` and
``bench/hostile.py``): its ``src`` exported once with ``git archive``, and the working tree's
own commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_revision(rev: str, work: Path, tool: str) -> tuple[Path, str]:
    """``git archive REV src`` under ``work/src/<commit>/`` (once); returns that ``src`` folder
    (for PYTHONPATH) and the short commit. Raises ``SystemExit`` naming ``tool`` (the bench's
    path) for an unknown revision."""
    res = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev + "^{commit}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(
            f"{tool}: unknown revision {rev!r}\n"
            "hint: give a commit, tag or branch of this repository"
        )
    commit = res.stdout.strip()
    dest = work / "src" / commit
    if not (dest / "src" / "opencbs").is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src", commit


def git_rev() -> tuple[str, bool]:
    """The working tree's short commit, and whether ``src/`` has uncommitted changes."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head, bool(dirty)
