"""The agent's commands start without the server's libraries (SQLAlchemy, Alembic, FastAPI).

Each check runs the real CLI in a fresh interpreter (``python -m opencbs.cli.main``) and reads
``sys.modules`` at exit, so a module-level import anywhere on the command's path shows up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SERVER_LIBS = ("sqlalchemy", "alembic", "fastapi")

_PROBE = """
import atexit, json, sys
watched = set(json.loads(sys.argv[1]))
def _report():
    loaded = sorted({m.split(".")[0] for m in sys.modules} & watched)
    sys.__stderr__.write("\\nLOADED=" + json.dumps(loaded) + "\\n")
atexit.register(_report)
from opencbs.cli.main import main
sys.argv = ["opencbs", *sys.argv[2:]]
sys.exit(main())
"""


def _loaded(args: list[str], libs: tuple[str, ...]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(libs)), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr
    return list(json.loads(line[-1][len("LOADED=") :]))


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "--help"],
        ["restore", "--help"],
        ["agent", "flush", "--help"],
        ["agent", "run", "--help"],
    ],
)
def test_agent_commands_do_not_import_server_libraries(args: list[str]) -> None:
    assert _loaded(args, _SERVER_LIBS) == []


def test_probe_sees_loaded_modules() -> None:
    # The probe reports what the command did load (so an empty answer above means something).
    assert _loaded(["backup", "--help"], ("click", "sqlalchemy")) == ["click"]
