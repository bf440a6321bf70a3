"""A locked, suspended or API-less account never has its real password checked: the answer
costs what a wrong password costs, so timing cannot confirm a guess (cbs-api.md §2)."""

from __future__ import annotations

import pytest

from opencbs.api import auth
from opencbs.api.state import ServerState
from opencbs.errors import CredentialsRejected
from opencbs.reports.vocabulary import AccountStatus, SystemRole
from opencbs.store import users
from opencbs.store.lockouts import LockKind


@pytest.mark.parametrize("how", ["locked", "suspended", "read_only_admin"])
def test_refused_accounts_never_check_the_real_password(
    state: ServerState, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    role = SystemRole.READ_ONLY_ADMIN if how == "read_only_admin" else SystemRole.ADMIN
    with state.db.write() as conn:
        users.add_system_user(conn, "victim", "right-password", role)
    if how == "locked":
        for _ in range(state.auth_cache.policy.account_failures):
            with pytest.raises(CredentialsRejected):
                auth.authenticate_system(state.db, state.auth_cache, "victim", "wrong")
    elif how == "suspended":
        with state.db.write() as conn:
            users.set_system_status(conn, "victim", AccountStatus.SUSPENDED)
    with state.db.read() as conn:
        user = users.get_system_user(conn, "victim")
    assert user is not None
    checked: list[str] = []
    real_verify = auth.verify_password

    def spy(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", spy)
    for _ in range(2):
        with pytest.raises(CredentialsRejected):
            auth.authenticate_system(state.db, state.auth_cache, "victim", "right-password")
    assert checked and user.password_hash not in checked  # only the dummy hash, every time
    assert not state.auth_cache.hit(LockKind.SYSUSER, user.password_hash, "right-password")
