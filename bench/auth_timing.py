"""How long AuthUser takes to answer each kind of credential failure (a timing oracle shows as
one case far faster than "wrong password"). In-process (TestClient) over SQLite in a temporary
folder; median of ``--repeat`` answers per case. Run: ``.venv/bin/python bench/auth_timing.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from opencbs.api.app import create_app
from opencbs.api.auth import VerifiedCache
from opencbs.api.state import ServerState
from opencbs.reports.vocabulary import SystemRole
from opencbs.store import users
from opencbs.store.db import Database
from opencbs.store.lockouts import LockoutPolicy
from opencbs.store.migrate import upgrade

#: case -> (caller, LoginName, Password, Owner)
CASES = {
    "right password (cached)": ("admin", "bob", "bob-secret", ""),
    "unknown user": ("admin", "nobody", "bob-secret", ""),
    "wrong password": ("admin", "bob", "wrong", ""),
    "suspended, right password": ("admin", "sus", "sus-secret", ""),
    "out of scope, right password": ("res1", "bob", "bob-secret", ""),
    "Owner mismatch, right password": ("admin", "bob", "bob-secret", "res1"),
}


def _state(folder: str) -> ServerState:
    db = Database(f"sqlite:///{folder}/auth.db")
    upgrade(db)
    with db.write() as c:
        for name, role in (("admin", SystemRole.ADMIN), ("res1", SystemRole.RESELLER)):
            users.add_system_user(c, name, f"{name}-secret", role)
        users.add_system_user(c, "res2", "res2-secret", SystemRole.RESELLER)
        users.add_backup_user(c, "bob", "bob-secret", owner="res2")
        users.add_backup_user(c, "sus", "sus-secret", owner="res2")
        c.execute(
            users.backup_users.update()
            .where(users.backup_users.c.login_name == "sus")
            .values(status="SUSPENDED")
        )
    # no lockout during the measure: every case is answered as itself
    policy = LockoutPolicy(account_failures=10**6, address_failures=10**6)
    return ServerState(
        db=db, tz=ZoneInfo("UTC"), sweep_interval=3600, auth_cache=VerifiedCache(policy=policy)
    )


def _body(caller: str, login: str, password: str, owner: str) -> dict[str, Any]:
    body = {
        "SysUser": caller,
        "SysPwd": f"{caller}-secret",
        "LoginName": login,
        "Password": password,
    }
    return {**body, "Owner": owner} if owner else body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder, TestClient(create_app(_state(folder))) as c:
        c.post("/obs/api/json/AuthUser.do", json=_body(*CASES["right password (cached)"]))
        c.post("/obs/api/json/AuthUser.do", json=_body(*CASES["out of scope, right password"]))
        print(f"{'case':34s} {'median':>9s} {'min':>9s} {'max':>9s}  answer")
        for name, case in CASES.items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                answer = c.post("/obs/api/json/AuthUser.do", json=_body(*case)).json()
                times.append((time.perf_counter() - start) * 1000)
            shown = answer.get("Message", answer["Status"])
            print(
                f"{name:34s} {statistics.median(times):7.1f}ms {min(times):7.1f}ms "
                f"{max(times):7.1f}ms  {shown}"
            )


if __name__ == "__main__":
    main()
