"""The login lockout (store/lockouts.py, api/auth.py) on SQLite and PostgreSQL: at most the
configured number of passwords verified per account under parallel guessing, the per-address
throttle, the cache's place in both, the admin API and CLI, bounded hashing (429), the logs.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from opencbs.api import auth
from opencbs.api.app import create_app
from opencbs.api.auth import VerifiedCache
from opencbs.api.state import ServerState
from opencbs.cli.main import main
from opencbs.errors import AuthUserRejected, CredentialsRejected
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.security import HashSlots, dummy_hash
from opencbs.store import lockouts, users
from opencbs.store.db import Database
from opencbs.store.lockouts import LockKind, LockoutPolicy
from opencbs.store.util import now_ms
from tests.conftest import ADMIN, UTC

AUTH_SYSTEM = "/obs/api/json/AuthSystemUser.do"
AUTH_USER = "/obs/api/json/AuthUser.do"
CRED = "Incorrect system username/password"


def _state(db: Database, policy: LockoutPolicy, slots: HashSlots | None = None) -> ServerState:
    with db.write() as conn:
        users.add_system_user(conn, ADMIN[0], ADMIN[1], SystemRole.ADMIN)
    cache = VerifiedCache(policy=policy, slots=slots or HashSlots(4, wait_seconds=120))
    return ServerState(db=db, tz=UTC, sweep_interval=3600, auth_cache=cache)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes every argon2 verification of ``api.auth`` was asked to check."""
    checked: list[str] = []
    lock = threading.Lock()
    real = auth.verify_password

    def verify(password_hash: str, password: str) -> bool:
        with lock:
            checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", verify)
    return checked


def _locked(db: Database) -> list[tuple[LockKind, str]]:
    with db.read() as conn:
        return [(x.kind, x.key) for x in lockouts.list_lockouts(conn, now_ms())]


def _sys(state: ServerState, name: str, password: str, client: str = "10.0.0.1") -> bool:
    try:
        auth.authenticate_system(state.db, state.auth_cache, name, password, client=client)
    except CredentialsRejected:
        return False
    return True


def test_fifty_parallel_guessers_get_the_limit_verified(db: Database, spy: list[str]) -> None:
    policy = LockoutPolicy(account_failures=5, address_failures=1000)
    state = _state(db, policy)
    with db.write() as conn:
        victim = users.add_system_user(conn, "victim", "right-password", SystemRole.ADMIN)
    with ThreadPoolExecutor(50) as pool:
        results = list(
            pool.map(lambda i: _sys(state, "victim", f"guess-{i}", f"10.0.1.{i}"), range(50))
        )
    assert not any(results)
    assert len(spy) == 50  # every refusal cost one verification too
    assert spy.count(victim.password_hash) <= policy.account_failures
    assert spy.count(victim.password_hash) >= 1
    assert _locked(db) == [(LockKind.SYSUSER, "victim")]
    assert not _sys(state, "victim", "right-password")  # locked: even the right one
    assert spy.count(victim.password_hash) <= policy.account_failures


def test_unknown_backup_users_lock_like_known_ones(db: Database, spy: list[str]) -> None:
    state = _state(db, LockoutPolicy(account_failures=3, address_failures=1000))
    with db.write() as conn:
        users.add_backup_user(conn, "alice", "alice-pw")
    for name in ("alice", "nobody"):
        for _ in range(3):
            with pytest.raises(AuthUserRejected):
                auth.authenticate_backup_user(
                    state.db, state.auth_cache, name, "wrong", client="10.0.0.2"
                )
    assert _locked(db) == [(LockKind.USER, "alice"), (LockKind.USER, "nobody")]
    with pytest.raises(AuthUserRejected):
        auth.authenticate_backup_user(state.db, state.auth_cache, "alice", "alice-pw")
    assert len(spy) == 7 and spy[-1] == dummy_hash()


def test_guesses_between_logins_add_up(db: Database, spy: list[str]) -> None:
    """A success gives back its own attempt but does not start the count over: an attacker
    who guesses between a user's logins still gets at most the limit per window (issue 11)."""
    state = _state(db, LockoutPolicy(account_failures=3, address_failures=1000))
    with db.read() as conn:
        admin = users.get_system_user(conn, ADMIN[0])
    assert admin is not None
    for _ in range(2):
        assert not _sys(state, ADMIN[0], "wrong")
    assert _sys(state, ADMIN[0], ADMIN[1])  # verified (not cached yet): its attempt given back
    assert _sys(state, ADMIN[0], ADMIN[1])  # cached: counts nothing
    assert _locked(db) == []
    assert not _sys(state, ADMIN[0], "wrong")  # the third wrong one in the window: locked
    assert _locked(db) == [(LockKind.SYSUSER, ADMIN[0])]
    real = spy.count(admin.password_hash)
    assert not _sys(state, ADMIN[0], ADMIN[1])  # locked: even the right (cached) password
    assert spy.count(admin.password_hash) == real  # and it was not checked
    assert real == 4  # three wrong, one right: never more than the limit of wrong ones


def test_address_throttle_spares_cached_credentials_not_locked_accounts(
    db: Database, spy: list[str]
) -> None:
    state = _state(db, LockoutPolicy(account_failures=3, address_failures=4))
    with db.write() as conn:
        users.add_system_user(conn, "monitor", "monitor-pw", SystemRole.API_ONLY)
    nat = "192.0.2.7"
    assert _sys(state, "monitor", "monitor-pw", nat)  # verified, now in the cache
    for i in range(4):  # four names, none locked: the address is
        assert not _sys(state, f"guess{i}", "x", nat)
    assert (LockKind.ADDRESS, nat) in _locked(db)
    before = len(spy)
    assert not _sys(state, ADMIN[0], ADMIN[1], nat)  # right, but not verified: refused
    assert spy[before:] == [dummy_hash()]
    assert _sys(state, ADMIN[0], ADMIN[1], "192.0.2.8")  # another address
    assert _sys(state, "monitor", "monitor-pw", nat)  # the cached credential still passes
    for _ in range(3):
        assert not _sys(state, "monitor", "wrong", "198.51.100.1")
    assert not _sys(state, "monitor", "monitor-pw", "198.51.100.2")  # account locked: refused


def test_lockouts_and_unlocks_are_logged_with_name_and_address(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    state = _state(db, LockoutPolicy(account_failures=2, address_failures=1000))
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        assert not _sys(state, "system", "stale-password", "203.0.113.5")
    locks = [r.getMessage() for r in caplog.records if "login lockout:" in r.getMessage()]
    assert len(locks) == 1
    assert "sysuser 'system'" in locks[0] and "203.0.113.5" in locks[0]
    assert "stale-password" not in caplog.text
    with db.write() as conn:
        assert lockouts.clear(conn, LockKind.SYSUSER, "system", by="the test")
    assert "login lockout cleared: sysuser 'system', by the test" in caplog.text
    assert _sys(state, ADMIN[0], ADMIN[1])


def test_password_change_unlocks(db: Database) -> None:
    state = _state(db, LockoutPolicy(account_failures=1, address_failures=1000))
    assert not _sys(state, ADMIN[0], "wrong")
    assert not _sys(state, ADMIN[0], ADMIN[1])
    with db.write() as conn:
        users.set_system_password(conn, ADMIN[0], "new-password")
    assert _sys(state, ADMIN[0], "new-password")


@pytest.mark.parametrize("case", ["unknown", "wrong", "suspended", "locked", "out_of_scope"])
def test_every_auth_user_failure_costs_one_verification(
    db: Database, spy: list[str], case: str
) -> None:
    state = _state(db, LockoutPolicy(account_failures=1, address_failures=1000))
    with db.write() as conn:
        users.add_system_user(conn, "res1", "res1-secret", SystemRole.RESELLER)
        users.add_system_user(conn, "res2", "res2-secret", SystemRole.RESELLER)
        users.add_backup_user(conn, "bob", "bob-secret", owner="res2")
    if case == "locked":
        with pytest.raises(AuthUserRejected):
            auth.authenticate_backup_user(state.db, state.auth_cache, "bob", "wrong")
    if case == "suspended":
        with db.write() as conn:
            conn.execute(users.backup_users.update().values(status=AccountStatus.SUSPENDED.value))
    caller, login, password = {
        "unknown": ("res2", "nobody", "bob-secret"),
        "wrong": ("res2", "bob", "wrong"),
        "out_of_scope": ("res1", "bob", "bob-secret"),
    }.get(case, ("res2", "bob", "bob-secret"))
    body = {
        "SysUser": caller,
        "SysPwd": f"{caller}-secret",
        "LoginName": login,
        "Password": password,
    }
    with TestClient(create_app(state)) as client:
        client.post(AUTH_SYSTEM, json={"SysUser": caller, "SysPwd": f"{caller}-secret"})
        spy.clear()  # the caller's own credential is cached now
        r = client.post(AUTH_USER, json=body)
    assert r.status_code == 200
    assert r.json() == {
        "Status": "Error",
        "Message": "Incorrect username/password",
        "ExptType": "com.ahsay.obs.core.dbs.DbsException",
    }
    assert len(spy) == 1
    if case != "wrong":
        assert spy == [dummy_hash()]


def _basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def admin_client(db: Database) -> Iterator[tuple[TestClient, ServerState]]:
    state = _state(db, LockoutPolicy(account_failures=2, address_failures=1000))
    with TestClient(create_app(state)) as client:
        yield client, state


def test_admin_api_lists_and_unlocks(
    admin_client: tuple[TestClient, ServerState], caplog: pytest.LogCaptureFixture
) -> None:
    client, state = admin_client
    with state.db.write() as conn:
        users.add_backup_user(conn, "carol", "carol-pw")
        users.add_system_user(conn, "viewer", "viewer-pw", SystemRole.READ_ONLY_ADMIN)
    for _ in range(2):
        r = client.get("/api/agent/v1/backup-sets", headers=_basic("carol", "nope"))
        assert r.status_code == 401
    assert (
        client.get("/api/agent/v1/backup-sets", headers=_basic("carol", "carol-pw")).status_code
        == 401
    )
    r = client.get("/api/admin/v1/lockouts", headers=_basic(*ADMIN))
    assert r.status_code == 200
    [lock] = r.json()["lockouts"]
    assert (lock["kind"], lock["key"], lock["failures"]) == ("user", "carol", 3)
    assert lock["locked_until_ms"] > now_ms()
    for headers in (_basic("viewer", "viewer-pw"), _basic(*ADMIN[:1], "x"), {}):
        r = client.get("/api/admin/v1/lockouts", headers=headers)
        assert r.status_code == 401 and set(r.json()) == {"error", "message", "hint"}
    caplog.set_level(logging.WARNING)
    r = client.delete("/api/admin/v1/lockouts/user/carol", headers=_basic(*ADMIN))
    assert r.status_code == 200 and r.json() == {"cleared": {"kind": "user", "key": "carol"}}
    assert "login lockout cleared: user 'carol', by admin 'system' from testclient" in caplog.text
    assert (
        client.get("/api/agent/v1/backup-sets", headers=_basic("carol", "carol-pw")).status_code
        == 200
    )
    r = client.delete("/api/admin/v1/lockouts/user/carol", headers=_basic(*ADMIN))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.delete("/api/admin/v1/lockouts/bogus/carol", headers=_basic(*ADMIN))
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"


def test_address_throttle_over_http_uses_the_client_address(db: Database) -> None:
    state = _state(db, LockoutPolicy(account_failures=100, address_failures=3))
    with TestClient(create_app(state)) as client:
        for i in range(3):
            r = client.post(AUTH_SYSTEM, json={"SysUser": f"u{i}", "SysPwd": "x"})
            assert r.json()["Message"] == CRED
        r = client.post(AUTH_SYSTEM, json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1]})
        assert r.json()["Message"] == CRED
    assert _locked(db) == [(LockKind.ADDRESS, "testclient")]


def test_no_hashing_slot_is_429_try_later(db: Database) -> None:
    slots = HashSlots(1, wait_seconds=0.05)
    state = _state(db, LockoutPolicy(), slots)
    with db.write() as conn:
        users.add_backup_user(conn, "dave", "dave-secret")
    with TestClient(create_app(state)) as client:
        assert slots.acquire()  # every slot taken
        try:
            r = client.post(AUTH_SYSTEM, json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1]})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json() == {
                "Status": "Error",
                "Message": "[Error] Too many login attempts, try again later",
                "ExptType": "com.ahsay.obs.core.dbs.DbsException",
            }
            r = client.get("/api/agent/v1/backup-sets", headers=_basic("dave", "dave-secret"))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"] == "busy"
        finally:
            slots.release()
        r = client.post(AUTH_SYSTEM, json={"SysUser": ADMIN[0], "SysPwd": ADMIN[1]})
        assert r.json() == {"Status": "OK"}
    assert _locked(db) == []  # a busy answer counted no failure


def test_cli_lists_and_clears(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = _state(db, LockoutPolicy(account_failures=1, address_failures=1))
    with db.write() as conn:
        users.add_system_user(conn, "frozen", "frozen-pw", SystemRole.ADMIN)
        users.set_system_status(conn, "frozen", AccountStatus.LOCKED)
    assert not _sys(state, ADMIN[0], "wrong", "10.9.9.9")
    monkeypatch.setenv("OPENCBS_DATABASE_URL", db.url)
    capsys.readouterr()
    assert main(["lockout", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(x["kind"], x["key"]) for x in listed] == [
        ("address", "10.9.9.9"),
        ("sysuser", "frozen"),
        ("sysuser", "system"),
    ]
    assert listed[1]["locked_until_ms"] is None
    assert main(["lockout", "list"]) == 0
    assert "10.9.9.9" in capsys.readouterr().out
    caplog.set_level(logging.WARNING)
    for args in (["--sysuser", "system"], ["--sysuser", "frozen"], ["--address", "10.9.9.9"]):
        assert main(["lockout", "clear", *args]) == 0
    assert "by the command line" in caplog.text
    assert _locked(db) == []
    assert _sys(state, "frozen", "frozen-pw")
    capsys.readouterr()
    assert main(["lockout", "clear", "--user", "nobody"]) == 4
    assert main(["lockout", "clear", "--user", "a", "--address", "b"]) == 2
    assert main(["lockout", "clear", "--address", "not-an-ip"]) == 2
    err = capsys.readouterr().err
    assert "opencbs: error: no lockout of user 'nobody'" in err and "hint:" in err


def test_an_old_hash_is_replaced_at_the_next_login(db: Database) -> None:
    """A password hashed with other argon2 parameters (RFC 9106's 64 MiB profile, as earlier
    versions stored) still logs in and is then stored with ours (security.needs_rehash)."""
    from argon2 import PasswordHasher

    from opencbs.security import needs_rehash

    state = _state(db, LockoutPolicy())
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=2).hash("old-params")
    with db.write() as conn:
        users.add_backup_user(conn, "legacy", "placeholder")
        assert users.replace_password_hash(
            conn,
            system=False,
            name="legacy",
            old_hash=users.find_backup_user(conn, "legacy").password_hash,  # type: ignore[union-attr]
            new_hash=old,
        )
    assert needs_rehash(old)
    got = auth.authenticate_backup_user(db, state.auth_cache, "legacy", "old-params")
    with db.read() as conn:
        stored = users.find_backup_user(conn, "legacy")
    assert stored is not None and stored.password_hash != old
    assert not needs_rehash(stored.password_hash)
    assert got.login_name == "legacy"
    # the new hash verifies the same password, and a wrong one still fails
    auth.authenticate_backup_user(db, state.auth_cache, "legacy", "old-params")
    with pytest.raises(AuthUserRejected):
        auth.authenticate_backup_user(db, state.auth_cache, "legacy", "wrong")


def test_a_name_with_a_slash_is_unlocked_over_the_api_and_401s_carry_a_challenge(
    admin_client: tuple[TestClient, ServerState],
) -> None:
    """Lock keys are login names, which may hold ``/``: the admin API's path takes them
    (``a%2Fb``); every 401 of the agent and admin APIs names its scheme (WWW-Authenticate),
    which clients such as .NET's wait for before they send credentials."""
    client, state = admin_client
    for _ in range(3):
        r = client.get("/api/agent/v1/backup-sets", headers=_basic("a/b", "nope"))
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic realm=")
    r = client.get("/api/admin/v1/lockouts")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    listed = client.get("/api/admin/v1/lockouts", headers=_basic(*ADMIN)).json()["lockouts"]
    assert ("user", "a/b") in {(x["kind"], x["key"]) for x in listed}
    r = client.delete("/api/admin/v1/lockouts/user/a%2Fb", headers=_basic(*ADMIN))
    assert r.status_code == 200 and r.json() == {"cleared": {"kind": "user", "key": "a/b"}}
