"""Alerts delivered for real (cbs-api.md §15), on SQLite and PostgreSQL: a local HTTP receiver
and an SMTP sink (aiosmtpd) each get exactly one alert; a receiver that answers 500 twice gets
it on the third attempt, the log showing three; the hooks in the agent's finish and the
stale-job sweep queue alerts; the API's calls and who may make them; ``opencbs alert``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from opencbs import security
from opencbs.agent.client import AgentClient
from opencbs.api.app import sweep_once
from opencbs.api.state import ServerState
from opencbs.cli.main import main
from opencbs.model.alerts import AlertEvent, Channel, RuleSpec, ScopeKind
from opencbs.model.jobs import JobRef
from opencbs.notify import alerts as notify_alerts
from opencbs.notify import rules, run_once
from opencbs.notify.delivery import DeliveryPolicy
from opencbs.reports.vocabulary import JobStatus, SystemRole
from opencbs.settings import Settings
from opencbs.store import alerts, jobs, sets, users
from opencbs.store.db import Database
from opencbs.store.schema import alert_events
from opencbs.store.util import now_ms
from tests.alert_support import (
    UTC,
    UserSet,
    finished_job,
    smtp_sink,
    user_with_set,
    webhook_receiver,
)
from tests.conftest import ADMIN

API = "/obs/api/json"
HOUR = 3_600_000


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def _settings(**kw: Any) -> Settings:
    return Settings(timezone="UTC", **kw)


def _add(db: Database, us: UserSet, channel: Channel, target: str) -> tuple[int, str]:
    spec = RuleSpec(ScopeKind.BACKUP_USER, us.login, AlertEvent.ERROR, channel, target)
    with db.write() as conn:
        new = rules.add_rule(conn, spec, reseller=None, at_ms=now_ms())
    return new.rule.id, new.secret


def _failed_job(db: Database, us: UserSet) -> int:
    with db.write() as conn:
        pk = finished_job(conn, us, JobStatus.STOP_BY_SYSTEM_ERROR, start_ms=now_ms() - HOUR)
        notify_alerts.job_ended(conn, pk, at_ms=now_ms())
    return pk


def test_webhook_gets_exactly_one_signed_alert(db: Database) -> None:
    with db.write() as conn:
        us = user_with_set(conn, "alice")
    with webhook_receiver() as receiver:
        rule_id, secret = _add(db, us, Channel.WEBHOOK, receiver.url)
        pk = _failed_job(db, us)
        with db.write() as conn:  # seen again (another process, the sweep): nothing more
            notify_alerts.job_ended(conn, pk, at_ms=now_ms())
        t = now_ms()
        first = run_once(db, _settings(), now_ms=t)
        again = run_once(db, _settings(), now_ms=t + HOUR)
    assert [d.ok for d in first.delivered] == [True] and again.delivered == []
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.signed_with(secret) and not got.signed_with(secret + "x")
    assert got.headers["X-OpenCBS-Event"] == "ERROR"
    assert got.headers["X-OpenCBS-Delivery"] == str(first.delivered[0].event_id)
    assert got.headers["Content-Type"] == "application/json"
    body = got.json()
    assert body["event"] == "ERROR" and body["rule_id"] == str(rule_id)
    assert body["alert_id"] == got.headers["X-OpenCBS-Delivery"]
    assert body["login_name"] == "alice" and body["backup_set_id"] == str(us.set_id)
    assert body["backup_set_name"] == "docs" and body["status"] == "BS_STOP_BY_SYSTEM_ERROR"
    assert isinstance(body["start_time"], int) and isinstance(body["end_time"], int)
    assert body["summary"].startswith("ERROR: backup job ")


def test_smtp_sink_gets_exactly_one_email(db: Database) -> None:
    with db.write() as conn:
        us = user_with_set(conn, "alice")
    with smtp_sink() as sink:
        _add(db, us, Channel.EMAIL, "ops@example.com")
        _failed_job(db, us)
        settings = _settings(
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_security="none",
            alert_from="backup@example.com",
        )
        t = now_ms()
        first = run_once(db, settings, now_ms=t)
        again = run_once(db, settings, now_ms=t + HOUR)
    assert [d.ok for d in first.delivered] == [True] and again.delivered == []
    assert first.delivered[0].detail.startswith("SMTP 250")
    assert sink.envelopes == [("backup@example.com", ["ops@example.com"])]
    (message,) = sink.messages
    assert message["Subject"].startswith("[opencbs] ERROR: backup job ")
    assert "BS_STOP_BY_SYSTEM_ERROR" in message.get_payload()


def test_email_unreachable_server_is_a_failed_attempt(db: Database) -> None:
    with db.write() as conn:
        us = user_with_set(conn, "alice")
    _add(db, us, Channel.EMAIL, "ops@example.com")
    _failed_job(db, us)
    settings = _settings(smtp_host="127.0.0.1", smtp_port=9, smtp_security="none",
                         smtp_user="u", smtp_password="hunter2-secret")  # fmt: skip
    done = run_once(db, settings, now_ms=now_ms()).delivered
    assert [d.ok for d in done] == [False] and "hunter2" not in done[0].detail
    assert "Connection" in done[0].detail or "refused" in done[0].detail.lower()


def test_retried_until_the_receiver_accepts(db: Database) -> None:
    with db.write() as conn:
        us = user_with_set(conn, "alice")
    policy = DeliveryPolicy(first_delay_s=30)
    with webhook_receiver(statuses=[500, 500]) as receiver:
        rule_id, _secret = _add(db, us, Channel.WEBHOOK, receiver.url)
        _failed_job(db, us)
        t = now_ms()
        rounds = [
            run_once(db, _settings(), now_ms=at, policy=policy).delivered
            for at in (t, t + 10_000, t + 30_000, t + 60_000, t + 90_000, t + 10 * HOUR)
        ]
    assert [[d.ok for d in r] for r in rounds] == [[False], [], [False], [], [True], []]
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert len({r.headers["X-OpenCBS-Delivery"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    with db.read() as conn:
        log = rules.deliveries(conn, reseller=None, rule_id=rule_id)
    assert [(d.attempt, d.ok, d.detail) for d in log] == [
        (3, True, "HTTP 200"),
        (2, False, "HTTP 500"),
        (1, False, "HTTP 500"),
    ]
    assert {d.state for d in log} == {"SENT"}


# --- the hooks: the agent's finish and the stale-job sweep ----------------------------------


def _outbox_keys(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.execute(select(alert_events.c.event_key)).scalars())


def test_agent_finish_queues_the_alert(client: TestClient, state: ServerState) -> None:
    with state.db.write() as conn:
        us = user_with_set(conn, "alice")
    _add(state.db, us, Channel.WEBHOOK, "http://127.0.0.1:9/hook")
    with AgentClient(
        "http://testserver", "alice", "alice-password", transport=client._transport
    ) as agent:
        started = agent.start_job(str(us.set_id), str(us.dest_id))
        ref = JobRef(str(us.set_id), str(us.dest_id), started.job_id)
        assert _outbox_keys(state.db) == []  # nothing while it runs
        agent.finish_job(ref, JobStatus.STOP_BY_SYSTEM_ERROR)
        agent.finish_job(ref, JobStatus.STOP_BY_SYSTEM_ERROR)  # a retried finish: no second
    keys = _outbox_keys(state.db)
    assert (
        len(keys) == 1
        and keys[0].startswith("job:")
        and keys[0].endswith(":BS_STOP_BY_SYSTEM_ERROR")
    )


def test_stale_job_sweep_queues_the_alert(state: ServerState) -> None:
    with state.db.write() as conn:
        us = user_with_set(conn, "alice")
        bset = sets.get_set(conn, us.user_id, us.set_id)
        job = jobs.start_job(conn, bset, us.dest_id, tz=UTC)
    _add(state.db, us, Channel.WEBHOOK, "http://127.0.0.1:9/hook")
    state.job_idle_timeout = 0.001
    state.started_ms = 0
    time.sleep(0.01)
    assert sweep_once(state) == [job.job_id]
    assert _outbox_keys(state.db) == [f"job:{job.pk}:BS_BACKUP_NOT_FINISHED"]


# --- the API and the command line -----------------------------------------------------------


def _call(client: TestClient, name: str, who: tuple[str, str], **params: Any) -> dict[str, Any]:
    answer = client.post(f"{API}/{name}.do", json={"SysUser": who[0], "SysPwd": who[1], **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_api_calls_and_roles(client: TestClient, state: ServerState) -> None:
    with state.db.write() as conn:
        users.add_system_user(conn, "viewer", "viewer-password", SystemRole.READ_ONLY_API)
        a = user_with_set(conn, "a1", owner="res1")
        user_with_set(conn, "b1", owner="res2")
    res1 = ("res1", "res1-password")
    viewer = ("viewer", "viewer-password")
    with webhook_receiver() as receiver:
        added = _call(client, "AddAlertRule", ADMIN, LoginName="a1", Event="error",
                      Channel="WEBHOOK", Target=receiver.url)  # fmt: skip
        assert added["Status"] == "OK", added
        rule = added["Data"]
        assert len(rule["WebhookSecret"]) == 64 and rule["ScopeName"] == "a1"
        listed = _call(client, "ListAlertRules", viewer)["Data"]
        assert [r["RuleID"] for r in listed] == [rule["RuleID"]]
        assert "WebhookSecret" not in listed[0]
        refused = _call(client, "AddAlertRule", viewer, LoginName="a1", Event="ERROR",
                        Channel="EMAIL", Target="x@example.com")  # fmt: skip
        assert refused["Status"] == "Error" and "may not call AddAlertRule" in refused["Message"]
        other = _call(client, "AddAlertRule", res1, LoginName="b1", Event="ERROR",
                      Channel="EMAIL", Target="x@example.com")  # fmt: skip
        assert other["Status"] == "Error" and "not found" in other["Message"]
        own = _call(client, "AddAlertRule", res1, Event="NO_SUCCESS", BackupSetID=str(a.set_id),
                    Hours="26", Channel="EMAIL", Target="x@example.com")  # fmt: skip
        assert own["Status"] == "OK" and own["Data"]["ScopeName"] == "res1"
        assert "WebhookSecret" not in own["Data"]
        bad = _call(client, "AddAlertRule", res1, Event="NO_SUCCESS", Channel="EMAIL",
                    Target="x@example.com")  # fmt: skip
        assert bad["Status"] == "Error" and "needs a backup set" in bad["Message"]
        tested = _call(client, "SendTestAlert", ADMIN, RuleID=rule["RuleID"])
        assert tested["Data"]["Delivered"] is True and tested["Data"]["Detail"] == "HTTP 200"
        assert receiver.received[0].json()["event"] == "TEST"
        assert receiver.received[0].signed_with(rule["WebhookSecret"])
    log = _call(client, "ListAlertDeliveries", viewer, RuleID=rule["RuleID"])["Data"]
    assert [(d["Event"], d["Ok"], d["Attempt"]) for d in log] == [("TEST", True, 1)]
    theirs = _call(client, "AddAlertRule", ADMIN, LoginName="b1", Event="DIGEST",
                   Channel="EMAIL", Target="y@example.com")["Data"]  # fmt: skip
    hidden = _call(client, "RemoveAlertRule", res1, RuleID=theirs["RuleID"])
    assert hidden["Status"] == "Error" and "not found" in hidden["Message"]
    assert [r["RuleID"] for r in _call(client, "ListAlertRules", res1)["Data"]] == [
        rule["RuleID"], own["Data"]["RuleID"],
    ]  # fmt: skip
    assert _call(client, "RemoveAlertRule", res1, RuleID=rule["RuleID"])["Status"] == "OK"
    assert [r["RuleID"] for r in _call(client, "ListAlertRules", ADMIN)["Data"]] == [
        own["Data"]["RuleID"], theirs["RuleID"],
    ]  # fmt: skip


def test_command_line(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with db.write() as conn:
        user_with_set(conn, "alice")
    base = ["--database-url", db.url]
    with webhook_receiver(statuses=[503]) as receiver:
        assert main(["alert", "add", *base, "--user", "alice", "--event", "missed",
                     "--webhook", receiver.url]) == 0  # fmt: skip
        rule_id = capsys.readouterr().out.strip()
        assert main(["alert", "test", *base, rule_id]) == 7  # the receiver said 503
        err = capsys.readouterr().err
        assert f"test alert of rule {rule_id} not delivered: HTTP 503" in err
        assert main(["alert", "test", *base, rule_id]) == 0
        assert capsys.readouterr().out == f"test alert of rule {rule_id} delivered: HTTP 200\n"
    assert main(["alert", "deliveries", *base, "--json"]) == 0
    assert '"Detail": "HTTP 503"' in capsys.readouterr().out
    assert main(["alert", "remove", *base, rule_id]) == 0
    assert main(["alert", "remove", *base, rule_id]) == 4
    with db.read() as conn:
        assert alerts.list_rules(conn) == []


def test_the_server_sends_queued_alerts_by_itself(state: ServerState) -> None:
    from opencbs.api.app import create_app

    state.settings = _settings()
    state.alert_interval = 0.1
    with state.db.write() as conn:
        us = user_with_set(conn, "alice")
    with webhook_receiver() as receiver, TestClient(create_app(state)):
        _add(state.db, us, Channel.WEBHOOK, receiver.url)
        _failed_job(state.db, us)
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more rounds: nothing more arrives
    assert len(receiver.received) == 1
    assert receiver.received[0].json()["status"] == "BS_STOP_BY_SYSTEM_ERROR"
