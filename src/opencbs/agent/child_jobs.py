"""The unattended agent's jobs, each a child process of its own (``opencbs backup --set ID
--mode S|R [--stop-at MS] [--retention-after|--no-retention-after] --json``, built by the
caller), so a job's memory and a crash stay apart from the agent (spec of issue 16, "The
agent's job for a slot").

A :class:`ChildJob` starts the process in a session of its own (a Ctrl-C at the agent's
terminal does not reach it; the agent stops it, :meth:`ChildJob.stop`: SIGTERM, which ends
the job cleanly, ``BS_STOP_BY_USER``; ``cli.backup_run.cancel_on_signals``), writes the
backup user's password to its stdin (``--password-stdin``: never on a command line), logs
its stderr line by line (its notes, warnings and errors at INFO/WARNING; its progress lines
at DEBUG) and reads its ``--json`` outcome from stdout: the job statuses (one per
destination) and, for a failure, why. When it ends, :class:`JobEnd` goes to ``on_end``.

Which ends are tried again (:func:`retryable`): exit code 7 (the server or a destination
could not be reached or used), 9 (a job failed: ``BS_STOP_BY_SYSTEM_ERROR``), 1 and 70
(another error), or the process killed by a signal. Not: 0, 130 (stopped: by the agent or a
schedule's stop time), 5 (a job of the set runs already, e.g. a manual ``opencbs backup``:
the slot is skipped), nor the errors another try cannot mend (2 settings, 3 credentials,
4 a set the server no longer has, 8 refused).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from opencbs.errors import ExitCode
from opencbs.reports.vocabulary import JobMode

__all__ = ["ChildJob", "JobEnd", "JobRequest", "deliver_spooled", "retryable"]

log = logging.getLogger(__name__)

_RETRY_CODES = frozenset({ExitCode.ERROR, ExitCode.UNAVAILABLE, ExitCode.JOB_FAILED})
_RETRY_CODES_ALSO = frozenset({ExitCode.INTERNAL})


@dataclass(frozen=True)
class JobRequest:
    """A job the agent runs: of set ``set_id`` (named ``set_name``), ``mode`` S (a schedule's
    slot ``slot_ms``, epoch ms; ``catch_up`` when missed) or R (``run_request_id``), stopping
    at ``stop_ms`` (epoch ms; ``None``: when done), with the retention policy after it or not
    (``retention_after``; ``None``: as the set says); ``attempt`` 0 first, n the n-th retry."""

    set_id: str
    set_name: str
    mode: JobMode
    slot_ms: int | None = None
    stop_ms: int | None = None
    retention_after: bool | None = None
    attempt: int = 0
    catch_up: bool = False
    run_request_id: int | None = None
    slots: Mapping[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the log names the job: ``backup set NAME (ID), mode S``."""
        extra = f", retry {self.attempt}" if self.attempt else ""
        extra += ", caught up" if self.catch_up else ""
        extra += f", run request {self.run_request_id}" if self.run_request_id else ""
        return f"backup set {self.set_name!r} ({self.set_id}), mode {self.mode.value}{extra}"


@dataclass(frozen=True)
class JobEnd:
    """How a job's process ended: its ``exit_code`` (negative: the signal that killed it),
    the ``statuses`` of its jobs (one per destination; empty when it ended before any),
    ``message`` (why it failed, as the outcome or the last error line says), and when
    (``ended_at``, epoch ms)."""

    request: JobRequest
    exit_code: int
    statuses: tuple[str, ...]
    message: str
    ended_at: int


def retryable(exit_code: int) -> bool:
    """Whether a job that ended with ``exit_code`` is tried again (module docstring)."""
    return exit_code < 0 or exit_code in _RETRY_CODES or exit_code in _RETRY_CODES_ALSO


def _statuses(document: Any) -> tuple[tuple[str, ...], str]:
    """The statuses and the first failure message of a ``backup --json`` document."""
    if not isinstance(document, dict):
        return (), ""
    jobs = document.get("jobs") if "jobs" in document else [document]
    statuses: list[str] = []
    message = ""
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, dict):
            continue
        if "status" in job:
            statuses.append(str(job["status"]))
        said = str(job.get("error") or job.get("message") or "")
        message = message or said
    return tuple(statuses), message


class ChildJob:
    """One job's process (module docstring): ``argv`` to run, ``stdin`` to write to it (the
    password line), ``on_end`` called with its :class:`JobEnd` on a thread of its own;
    ``env``: its environment (``None``: the agent's)."""

    def __init__(
        self,
        request: JobRequest,
        argv: Sequence[str],
        stdin: bytes,
        on_end: Callable[[JobEnd], None],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.request = request
        self.env = env
        self.argv = list(argv)
        self.stdin = stdin
        self.on_end = on_end
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0
        self._last_error = ""
        self._stopped = False

    def start(self) -> None:
        """Start the process. Raises ``OSError`` when it cannot be started."""
        self.started_at = int(time.time() * 1000)
        proc = self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=None if self.env is None else dict(self.env),
        )
        log.info("job started (pid %s): %s", proc.pid, self.request.label)
        assert proc.stdin is not None and proc.stderr is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(self.stdin)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """Ask the job to stop cleanly (SIGTERM: ``BS_STOP_BY_USER``), once."""
        proc = self.proc
        if proc is None or proc.poll() is not None or self._stopped:
            return
        self._stopped = True
        log.info("stopping the job (pid %s): %s", proc.pid, self.request.label)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                if line.startswith(("opencbs: error", "opencbs: warning")):
                    self._last_error = line.removeprefix("opencbs: ")
                    log.warning("[%s] %s", self.request.set_name, line)
                elif line.startswith(("opencbs:", "hint:")):
                    log.info("[%s] %s", self.request.set_name, line)
                else:
                    log.debug("[%s] %s", self.request.set_name, line)

    def _wait(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        with proc.stdout:
            out = proc.stdout.read()
        code = proc.wait()
        try:
            document = json.loads(out) if out.strip() else None
        except ValueError:
            document = None
        statuses, message = _statuses(document)
        end = JobEnd(
            self.request,
            code,
            statuses,
            message or (self._last_error if code else ""),
            int(time.time() * 1000),
        )
        try:
            self.on_end(end)
        except Exception:  # a bug in the daemon's callback: said, never silent
            log.exception("after the job of %s", self.request.label)


def deliver_spooled(
    argv: Sequence[str], stdin: bytes, *, env: Mapping[str, str] | None = None
) -> int:
    """Run ``opencbs agent flush`` (``argv``; ``stdin`` the password line) to deliver the
    reports the agent's jobs spooled while the server could not be reached, and log what came
    of it; its exit code (0 all delivered, 7 the server still away, 8 some refused). At most
    five minutes; a flush still running then is killed (the reports stay spooled)."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("spooled job reports not delivered: %s", exc)
        return ExitCode.UNAVAILABLE
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    if done.returncode == 0:
        log.info("spooled job reports delivered")
    else:
        why = said[-1] if said else f"exit code {done.returncode}"
        log.warning("spooled job reports not all delivered: %s", why)
    return done.returncode
