"""Run one backup job in a process of its own and print its outcome as one JSON line.

The scenario tests (``test_backup_scenarios.py``) run this script when the agent must not be
the test's process — as an unprivileged user (``setpriv --reuid=65534 …``), so that a file of
mode 000 is really unreadable even when the tests run as root.

Usage::

    OPENCBS_E2E_PASSWORD=<backup user's password> OPENCBS_E2E_REPO_PASSWORD=<repository's> \\
    python agent_driver.py URL LOGIN SET_ID DESTINATION_ID DESTINATION_PATH START_TIME_MS

``START_TIME_MS`` (epoch ms) names the job (cbs-api.md §4). The repository must exist at
``DESTINATION_PATH`` (``run_backup`` creates one with the slow default KDF otherwise).

Output (stdout): ``{"status", "set_id", "destination_id", "job_id", "snapshot_id", "counts",
"warnings", "errors", "message"}``; ``counts`` maps each file list (``new`` … ``cpy``) to its
number of entries. Exit code 0 whenever a job ran (whatever its status); 2 for bad arguments;
an error reaching the server ends the process with a traceback on stderr (a test's failure).
"""

from __future__ import annotations

import json
import os
import sys

from opencbs.agent.client import AgentClient
from opencbs.agent.job import JobOptions, run_backup
from opencbs.destinations.local import LocalStorage


def main(argv: list[str]) -> int:
    """Parse ``argv`` (without the program name), run the job, print the outcome."""
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    url, login, set_id, destination_id, dest_path, start_ms = argv
    password = os.environ["OPENCBS_E2E_PASSWORD"]
    repo_password = os.environ["OPENCBS_E2E_REPO_PASSWORD"]
    storage = LocalStorage(dest_path, fsync=False)
    with AgentClient(url, login, password) as client:
        outcome = run_backup(
            JobOptions(
                client=client,
                set_id=set_id,
                destination_id=destination_id,
                storage=storage,
                password=repo_password,
                start_time_ms=int(start_ms),
            )
        )
    print(
        json.dumps(
            {
                "status": outcome.status.value,
                "set_id": outcome.ref.set_id,
                "destination_id": outcome.ref.destination_id,
                "job_id": outcome.ref.job_id,
                "snapshot_id": outcome.snapshot_id,
                "counts": {kind.key: n for kind, n in outcome.counts.items()},
                "warnings": outcome.warnings,
                "errors": outcome.errors,
                "message": outcome.message,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
