"""Alert rules over the CBS-style API, an opencbs extension (cbs-api.md §15): AddAlertRule,
ListAlertRules, RemoveAlertRule, SendTestAlert, ListAlertDeliveries.

Authenticated as every CBS call (``SysUser``/``SysPwd``, §2). Every role that may call the
API lists; ``READ_ONLY_API`` changes nothing (``PermissionDenied``); a reseller adds, sees,
tests and removes only its own rules and its own backup users' (anything else is "not
found"). The rules themselves: ``opencbs.notify.rules``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import ParamDoc, cbs_call, require_write
from opencbs.api.envelope import ok
from opencbs.api.params import Params
from opencbs.api.state import ServerState
from opencbs.errors import ParameterInvalid
from opencbs.model.alerts import RULE_EVENTS, AlertEvent, Channel, RuleSpec, ScopeKind
from opencbs.notify import rules
from opencbs.notify.channels import SmtpConfig
from opencbs.notify.delivery import ChannelSender, send_test
from opencbs.store.util import now_ms

_EVENTS = ", ".join(e.value for e in RULE_EVENTS)
_RULE_ID = ParamDoc("RuleID", required=True, description="ID of the alert rule.")
_ADD_PARAMS = (
    ParamDoc(
        "LoginName",
        description="A backup user: the rule covers its backup sets. Absent: a system user's rule.",
    ),
    ParamDoc(
        "SystemUserName",
        description="The system user whose rule it is when LoginName is absent (default "
        "SysUser): it covers every backup user that system user sees.",
    ),
    ParamDoc("Event", required=True, description=f"What to notify about: {_EVENTS}."),
    ParamDoc(
        "BackupSetID",
        description="One backup set (required by NO_SUCCESS); absent: every set in scope.",
    ),
    ParamDoc("Hours", description="NO_SUCCESS: hours without a successful job (1 to 8784)."),
    ParamDoc("Channel", required=True, description="EMAIL or WEBHOOK."),
    ParamDoc("Target", required=True, description="The email address, or the webhook's URL."),
)

_RULE_FIELDS = {
    "RuleID": {"type": "string"},
    "ScopeType": {"type": "string", "description": "BACKUP_USER or SYSTEM_USER."},
    "ScopeName": {"type": "string", "description": "The login name or system user's name."},
    "Event": {"type": "string"},
    "BackupSetID": {"type": "string", "description": '"" for every set in scope.'},
    "Hours": {"type": ["integer", "null"]},
    "Channel": {"type": "string"},
    "Target": {"type": "string"},
    "Enabled": {"type": "boolean"},
    "CreatedAt": {"type": "integer", "description": "Epoch ms."},
}
_RULE = {"type": "object", "properties": _RULE_FIELDS}
_NEW_RULE = {
    "type": "object",
    "properties": {
        **_RULE_FIELDS,
        "WebhookSecret": {
            "type": "string",
            "description": "WEBHOOK rules: the HMAC key of X-OpenCBS-Signature, shown only here.",
        },
    },
}
_DELIVERY = {
    "type": "object",
    "properties": {
        "EventID": {"type": "string"},
        "RuleID": {"type": "string"},
        "EventKey": {"type": "string"},
        "Event": {"type": "string"},
        "State": {"type": "string", "description": "PENDING, SENDING, SENT or FAILED."},
        "Attempt": {"type": "integer"},
        "At": {"type": "integer", "description": "Epoch ms."},
        "Ok": {"type": "boolean"},
        "Detail": {"type": "string", "description": "HTTP status, SMTP reply or the error."},
    },
}


def _int(params: Params, name: str, *, low: int, high: int) -> int | None:
    raw = params.optional_str(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ParameterInvalid(name, raw) from None
    if not low <= value <= high:
        raise ParameterInvalid(name, raw, f"{low} to {high}")
    return value


def _choice(params: Params, name: str, choices: tuple[str, ...]) -> str:
    value = params.required_str(name).strip().upper()
    if value not in choices:
        raise ParameterInvalid(name, value, " or ".join(choices))
    return value


def _spec(params: Params, caller: Caller) -> RuleSpec:
    login = params.str_or_empty("LoginName").strip()
    event = AlertEvent(_choice(params, "Event", tuple(e.value for e in RULE_EVENTS)))
    return RuleSpec(
        scope=ScopeKind.BACKUP_USER if login else ScopeKind.SYSTEM_USER,
        scope_name=login or params.str_or_empty("SystemUserName").strip() or caller.name,
        event=event,
        channel=Channel(_choice(params, "Channel", tuple(c.value for c in Channel))),
        target=params.required_str("Target").strip(),
        set_id=_int(params, "BackupSetID", low=-(2**63), high=2**63 - 1),
        hours=_int(params, "Hours", low=-(2**31), high=2**31 - 1),
    )


@cbs_call(
    "AddAlertRule",
    params=_ADD_PARAMS,
    summary="Add an alert rule (opencbs, cbs-api.md §15): a backup user's (its sets) or a system "
    "user's (every backup user it sees); Data is the rule, with WebhookSecret for a webhook "
    "(shown only here). Not for READ_ONLY_API system users.",
    answer=_NEW_RULE,
)
def add_alert_rule(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "AddAlertRule")
    spec = _spec(params, caller)
    with state.db.write() as conn:
        new = rules.add_rule(conn, spec, reseller=caller.scope, at_ms=now_ms())
    data: dict[str, Any] = new.rule.as_json()
    if new.rule.channel is Channel.WEBHOOK:
        data["WebhookSecret"] = new.secret
    return ok(data)


@cbs_call(
    "ListAlertRules",
    params=(ParamDoc("LoginName", description="Only this backup user's rules."),),
    summary="The alert rules the caller sees (opencbs, cbs-api.md §15), by ID; never a secret.",
    answer={"type": "array", "items": _RULE},
)
def list_alert_rules(params: Params, caller: Caller, state: ServerState) -> Response:
    login = params.str_or_empty("LoginName").strip() or None
    with state.db.read() as conn:
        found = rules.list_rules(conn, reseller=caller.scope, login_name=login)
    return ok([r.as_json() for r in found])


def _rule_id(params: Params, name: str = "RuleID") -> int:
    value = _int(params, name, low=1, high=2**31 - 1)
    if value is None:
        params.required_str(name)  # ParameterMissing
        raise ParameterInvalid(name, "")
    return value


@cbs_call(
    "RemoveAlertRule",
    params=(_RULE_ID,),
    summary="Remove an alert rule with its alerts and delivery log (opencbs, cbs-api.md §15); "
    '{"Status":"OK"}. Not for READ_ONLY_API system users.',
)
def remove_alert_rule(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "RemoveAlertRule")
    rule_id = _rule_id(params)
    with state.db.write() as conn:
        rules.remove_rule(conn, rule_id, reseller=caller.scope)
    return ok()


@cbs_call(
    "SendTestAlert",
    params=(_RULE_ID,),
    summary="Send a test alert of a rule to its target now, once (opencbs, cbs-api.md §15): "
    "Data says whether it was delivered and the reply or the error.",
    answer={
        "type": "object",
        "properties": {
            "RuleID": {"type": "string"},
            "EventID": {"type": "string"},
            "Delivered": {"type": "boolean"},
            "Detail": {"type": "string"},
        },
    },
)
def send_test_alert(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, "SendTestAlert")
    rule_id = _rule_id(params)
    smtp = SmtpConfig.from_settings(state.settings) if state.settings else SmtpConfig("")
    done = send_test(state.db, ChannelSender(smtp), rule_id, reseller=caller.scope, now_ms=now_ms())
    return ok(
        {
            "RuleID": str(rule_id),
            "EventID": str(done.event_id),
            "Delivered": done.ok,
            "Detail": done.detail,
        }
    )


@cbs_call(
    "ListAlertDeliveries",
    params=(
        ParamDoc("RuleID", description="Only this rule's attempts."),
        ParamDoc("Limit", description="How many, newest first (1 to 1000; default 100)."),
    ),
    summary="The delivery log of alerts (opencbs, cbs-api.md §15): one record per attempt, "
    "newest first.",
    answer={"type": "array", "items": _DELIVERY},
)
def list_alert_deliveries(params: Params, caller: Caller, state: ServerState) -> Response:
    rule_id = _int(params, "RuleID", low=1, high=2**31 - 1)
    limit = _int(params, "Limit", low=1, high=1000) or 100
    with state.db.read() as conn:
        found = rules.deliveries(conn, reseller=caller.scope, rule_id=rule_id, limit=limit)
    return ok([d.as_json() for d in found])
