"""The systemd units of the unattended agent (``contrib/systemd``): each runs ``opencbs agent
run``, restarts it on failure only, reloads with SIGHUP and sends SIGTERM to the agent alone
(it stops its job cleanly itself); the system unit runs as the dedicated user ``opencbs``. When
``systemd-analyze`` is there, it verifies the system unit too (``ExecStart`` pointed at this
venv's ``opencbs``)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SYSTEM = UNITS / "opencbs-agent.service"
USER = UNITS / "user" / "opencbs-agent.service"


def _service(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser["Service"]


@pytest.mark.parametrize("path", [SYSTEM, USER], ids=["system", "user"])
def test_unit_runs_the_agent_and_handles_its_signals(path: Path) -> None:
    service = _service(path)
    assert service["ExecStart"].endswith("/opencbs agent run")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"


def test_system_unit_runs_as_a_dedicated_user() -> None:
    service = _service(SYSTEM)
    assert service["User"] == "opencbs"
    assert "Environment=OPENCBS_CONFIG=/etc/opencbs/agent.toml" in SYSTEM.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_system_unit(tmp_path: Path) -> None:
    opencbs = Path(sys.executable).with_name("opencbs")
    unit = tmp_path / "opencbs-agent.service"
    unit.write_text(SYSTEM.read_text().replace("/usr/local/bin/opencbs", str(opencbs)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "opencbs-agent.service" in line and "User=" not in line
    ]
    assert not problems, done.stdout + done.stderr
