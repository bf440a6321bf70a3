"""CBS calls about backup sets (cbs-api.md §7, §10, §13): ListBackupSets, GetBackupSet and
UpdateBackupSet (v1 and ``2/``), and a set's retention policy in CBS form (``RetentionPolicy``);
its schedules and time zone (``ScheduleList``, ``TimeZone``) are ``api.cbs_schedules``'s.

Choices where the contract leaves room (written down here and in each call's summary):

- ``ListAll`` (ListBackupSets) defaults to false: removed sets are listed only when true.
- GetBackupSet's sources and filters: ``SelectedSource`` (paths), ``Filter``
  (``{"Include": [patterns], "Exclude": [patterns]}``); compression ``CompressType`` and
  ``CompressLevel``; ``Deduplication`` (bool); ``Removed`` (bool); ``RetentionPolicy`` (an
  opencbs extension, below); ``ScheduleList`` and ``TimeZone`` (cbs-api.md §13). Destination
  locations and credentials are never shown: ``DestinationList`` items are ``{"Id", "Name",
  "Type"}``. ``2/GetBackupSet.do`` answers the same object.
- ``RetentionPolicy`` is ``model.sets.Retention`` under CBS names: ``{"Type": "SIMPLE",
  "RetentionDays": n}`` or ``{"Type": "SIMPLE", "RetentionJobs": n}`` (1..365);
  ``{"Type": "ADVANCED", "KeepLast", "KeepHourly", "KeepDaily", "KeepWeekly", "KeepMonthly",
  "KeepYearly": n (0: rule off), "KeepWithin": "30d" or ""}``; both with
  ``"SpaceFreeUpEnabled"`` (bool: run the policy after each backup job, the vendor's term).
- UpdateBackupSet changes the retention policy, the schedules and their zone (so far):
  ``RetentionPolicy`` replaces the set's whole policy (a key left out takes its default:
  ``SpaceFreeUpEnabled`` true, a ``Keep…`` rule 0); ``ScheduleList`` and ``TimeZone`` as
  ``api.cbs_schedules`` says. Every other setting GetBackupSet shows may be sent back unchanged
  (a client that sends the whole set it read); a different value, or a vendor setting opencbs
  does not keep (``ShadowCopyEnabled`` …), answers ``ParameterNotChangeable``. Only roles that
  may change state call it (``READ_ONLY_API``: ``PermissionDenied``); a reseller reaches only
  its own users' sets (another's user is "not found", §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from opencbs.api.auth import Caller
from opencbs.api.cbs import (
    LOGIN,
    OWNER,
    SET_ID,
    ParamDoc,
    backup_set,
    backup_user,
    cbs_call,
    require_write,
)
from opencbs.api.cbs_schedules import (
    SCHEDULE_LIST_PARAM,
    TIME_ZONE_PARAM,
    apply_schedule_settings,
    read_schedule_list,
    read_time_zone,
    schedule_settings,
)
from opencbs.api.envelope import ok
from opencbs.api.params import Params, shown_value
from opencbs.api.schedule_form import SCHEDULE_SCHEMA
from opencbs.api.state import ServerState
from opencbs.errors import InvalidInput, ParameterInvalid, ParameterNotChangeable
from opencbs.model.retention import Duration
from opencbs.model.sets import MAX_KEEP_COUNT, MAX_SIMPLE_RETENTION, Retention
from opencbs.store import sets
from opencbs.store.sets import BackupSet
from opencbs.store.users import BackupUser

# --- RetentionPolicy ---------------------------------------------------------------------------

POLICY = "RetentionPolicy"
#: The ``Keep…`` counts of an ADVANCED policy: CBS key -> ``Retention`` attribute.
KEEP_KEYS: dict[str, str] = {
    "KeepLast": "keep_last",
    "KeepHourly": "keep_hourly",
    "KeepDaily": "keep_daily",
    "KeepWeekly": "keep_weekly",
    "KeepMonthly": "keep_monthly",
    "KeepYearly": "keep_yearly",
}
#: Largest ``Keep…`` count taken (``model.sets``'s).
MAX_KEEP = MAX_KEEP_COUNT
_SIMPLE_KEYS = ("RetentionDays", "RetentionJobs")
_KNOWN = ("Type", *_SIMPLE_KEYS, *KEEP_KEYS, "KeepWithin", "SpaceFreeUpEnabled")


def retention_policy(retention: Retention) -> dict[str, Any]:
    """``retention`` in CBS form (module docstring): ``Type``, ``RetentionDays`` or
    ``RetentionJobs`` (SIMPLE) or the ``Keep…`` rules (ADVANCED; ``KeepWithin`` ``""`` when
    off), then ``SpaceFreeUpEnabled``."""
    if retention.mode == "SIMPLE":
        policy: dict[str, Any] = {"Type": "SIMPLE"}
        if retention.days is not None:
            policy["RetentionDays"] = retention.days
        else:
            policy["RetentionJobs"] = retention.jobs
    else:
        policy = {"Type": "ADVANCED"}
        policy.update({cbs: getattr(retention, attr) for cbs, attr in KEEP_KEYS.items()})
        policy["KeepWithin"] = retention.keep_within or ""
    policy["SpaceFreeUpEnabled"] = retention.after_backup
    return policy


def _key(name: str) -> str:
    return f"{POLICY}.{name}"


def _count(p: Params, name: str, high: int) -> int | None:
    """The whole number ``RetentionPolicy.name`` (a JSON number without fraction, or its
    decimal text), ``None`` when absent, null or ``""``. Raises ``ParameterInvalid`` for
    anything else or a number outside 0..``high``."""
    key = _key(name)
    value = p.values.get(key)
    if value is None or value == "":
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    if number is None:
        raise ParameterInvalid(key, shown_value(value), "a whole number")
    if not 0 <= number <= high:
        low = 1 if name in _SIMPLE_KEYS else 0  # a SIMPLE count of 0 is read as not given
        raise ParameterInvalid(key, shown_value(value), f"{low} to {high}")
    return number


def _policy_type(p: Params) -> str:
    raw = p.required_str(_key("Type"))
    kind = raw.strip().upper()
    if kind not in ("SIMPLE", "ADVANCED"):
        raise ParameterInvalid(_key("Type"), raw, "SIMPLE or ADVANCED")
    return kind


def _simple(p: Params, shown: str) -> dict[str, Any]:
    """The ``Retention`` keys of a SIMPLE policy: one of ``RetentionDays`` / ``RetentionJobs``
    (1..365; 0 counts as not given); a ``Keep…`` rule above 0 or a ``KeepWithin`` is refused."""
    for name in KEEP_KEYS:
        if _count(p, name, MAX_KEEP):
            raise ParameterInvalid(
                _key(name), shown_value(p.values[_key(name)]), "ADVANCED policies only"
            )
    if p.str_or_empty(_key("KeepWithin")):
        raise ParameterInvalid(
            _key("KeepWithin"), shown_value(p.values[_key("KeepWithin")]), "ADVANCED policies only"
        )
    days = _count(p, "RetentionDays", MAX_SIMPLE_RETENTION) or None
    jobs = _count(p, "RetentionJobs", MAX_SIMPLE_RETENTION) or None
    if days is not None and jobs is not None:
        raise ParameterInvalid(POLICY, shown, "RetentionDays or RetentionJobs, not both")
    if days is None and jobs is None:
        raise ParameterInvalid(
            POLICY,
            shown,
            f"a SIMPLE policy keeps RetentionDays or RetentionJobs: 1 to {MAX_SIMPLE_RETENTION}",
        )
    return {"mode": "SIMPLE", "days": days, "jobs": jobs}


def _advanced(p: Params, shown: str) -> dict[str, Any]:
    """The ``Retention`` keys of an ADVANCED policy: the ``Keep…`` counts (absent: 0) and
    ``KeepWithin``; at least one rule on. ``RetentionDays`` / ``RetentionJobs`` above 0 are
    refused."""
    for name in _SIMPLE_KEYS:
        if _count(p, name, MAX_SIMPLE_RETENTION):
            raise ParameterInvalid(
                _key(name), shown_value(p.values[_key(name)]), "SIMPLE policies only"
            )
    keeps = {attr: _count(p, cbs, MAX_KEEP) or 0 for cbs, attr in KEEP_KEYS.items()}
    within = p.str_or_empty(_key("KeepWithin")).strip() or None
    if within is not None:
        try:
            within = str(Duration.parse(within))
        except InvalidInput:
            raise ParameterInvalid(
                _key("KeepWithin"),
                within,
                'restic\'s --keep-within form: 30d, 12h, 1y2m3d4h (y, m, d, h); "" for none',
            ) from None
    if not any(keeps.values()) and within is None:
        raise ParameterInvalid(
            POLICY, shown, "an ADVANCED policy needs a Keep… rule above 0 or a KeepWithin"
        )
    return {"mode": "ADVANCED", **keeps, "keep_within": within}


def parse_retention_policy(given: Mapping[str, Any]) -> Retention:
    """The ``Retention`` of a ``RetentionPolicy`` object in CBS form (module docstring).

    Raises ``ParameterMissing`` (no ``Type``) or ``ParameterInvalid`` naming the key
    (``RetentionPolicy.RetentionDays``, or ``RetentionPolicy`` itself for a rule about the
    whole) with why, for an unknown key, a value of the wrong kind or out of range, or a
    policy without exactly the rules its type needs (cbs-api.md §10)."""
    shown = shown_value(dict(given))
    unknown = [k for k in given if k not in _KNOWN]
    if unknown:
        raise ParameterInvalid(
            _key(str(unknown[0])),
            shown_value(given[unknown[0]]),
            f"unknown key; known: {', '.join(_KNOWN)}",
        )
    p = Params({_key(k): v for k, v in given.items()})
    keys = _simple(p, shown) if _policy_type(p) == "SIMPLE" else _advanced(p, shown)
    keys["after_backup"] = p.boolean(_key("SpaceFreeUpEnabled"), default=True)
    try:
        return Retention.model_validate(keys)
    except (ValidationError, InvalidInput) as exc:  # a rule of the model not checked above
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc.message
        raise ParameterInvalid(POLICY, shown, " ".join(str(detail).split())) from None


#: The JSON schema of ``RetentionPolicy`` (GetBackupSet's answer, UpdateBackupSet's input).
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The retention policy (an opencbs extension, cbs-api.md §10): SIMPLE with "
    "RetentionDays or RetentionJobs (1..365), or ADVANCED with Keep… rules (0: off) and "
    'KeepWithin ("30d", "" for none); SpaceFreeUpEnabled: run it after each backup job.',
    "properties": {
        "Type": {"type": "string", "enum": ["SIMPLE", "ADVANCED"]},
        "RetentionDays": {"type": "integer", "minimum": 1, "maximum": MAX_SIMPLE_RETENTION},
        "RetentionJobs": {"type": "integer", "minimum": 1, "maximum": MAX_SIMPLE_RETENTION},
        **{k: {"type": "integer", "minimum": 0, "maximum": MAX_KEEP} for k in KEEP_KEYS},
        "KeepWithin": {"type": "string", "description": 'e.g. "30d", "1y2m3d4h"; "" none'},
        "SpaceFreeUpEnabled": {"type": "boolean"},
    },
    "required": ["Type", "SpaceFreeUpEnabled"],
}


# --- answer schemas ---------------------------------------------------------------------------

_STR = {"type": "string"}
_ID = {"type": "string", "description": "Decimal ID as a string."}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


_SETS_ANSWER = {
    "type": "array",
    "items": _obj(
        {
            "ID": _ID,
            "Name": _STR,
            "Type": {"type": "string", "description": "FILE for file sets."},
        }
    ),
}

_SET_ANSWER = _obj(
    {
        "ID": _ID,
        "Name": _STR,
        "Type": _STR,
        "Owner": {
            "type": "string",
            "description": 'Owner (reseller) of the backup user; "" for the administrators.',
        },
        "Removed": {"type": "boolean"},
        "CompressType": {"type": "string", "description": "Compression, e.g. ZSTD."},
        "CompressLevel": {"type": "integer"},
        "Deduplication": {"type": "boolean"},
        "SelectedSource": {"type": "array", "items": _STR, "description": "Source paths."},
        "Filter": _obj(
            {
                "Include": {"type": "array", "items": _STR},
                "Exclude": {"type": "array", "items": _STR},
            }
        ),
        "DestinationList": {
            "type": "array",
            "items": _obj({"Id": _ID, "Name": _STR, "Type": _STR}),
        },
        "RetentionPolicy": POLICY_SCHEMA,
        "ScheduleList": {"type": "array", "items": SCHEDULE_SCHEMA},
        "TimeZone": {
            "type": "string",
            "description": "IANA zone of the set's schedules (the server's when the set has "
            "none; cbs-api.md §13).",
        },
    }
)

# --- ListBackupSets, GetBackupSet --------------------------------------------------------------

_LIST_ALL = ParamDoc(
    "ListAll", type="boolean", description="Include removed backup sets (default false)."
)


@cbs_call(
    "ListBackupSets",
    params=(LOGIN, OWNER, _LIST_ALL),
    summary="The backup sets of a user: ID, Name, Type (cbs-api.md §7); removed sets only "
    "when ListAll is true.",
    answer=_SETS_ANSWER,
)
def list_backup_sets(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    list_all = params.boolean("ListAll")
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        user_sets = sets.list_sets(conn, user.id, include_removed=list_all)
    return ok([{"ID": str(s.id), "Name": s.name, "Type": s.type} for s in user_sets])


def set_settings(bset: BackupSet, user: BackupUser) -> dict[str, Any]:
    """The GetBackupSet object of ``bset`` (keys in the module docstring; cbs-api.md §7)."""
    settings = bset.settings
    return {
        "ID": str(bset.id),
        "Name": bset.name,
        "Type": bset.type,
        "Owner": user.owner,
        "Removed": bool(bset.removed),
        "CompressType": settings.compression.type,
        "CompressLevel": settings.compression.level,
        "Deduplication": settings.deduplication,
        "SelectedSource": list(settings.sources),
        "Filter": {
            "Include": list(settings.filters.include),
            "Exclude": list(settings.filters.exclude),
        },
        "DestinationList": [
            {"Id": str(d.id), "Name": d.name, "Type": d.type} for d in bset.destinations
        ],
        "RetentionPolicy": retention_policy(settings.retention),
    }


@cbs_call(
    "GetBackupSet",
    params=(LOGIN, OWNER, SET_ID),
    summary="The settings of a backup set: sources (SelectedSource), filters (Filter), "
    "compression, deduplication, DestinationList, RetentionPolicy, ScheduleList and "
    "TimeZone (cbs-api.md §7, §10, §13). "
    "v1 and 2/ answer the same object.",
    answer=_SET_ANSWER,
    v2=True,
)
def get_backup_set(params: Params, caller: Caller, state: ServerState) -> Response:
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    with state.db.read() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        shown = set_settings(bset, user) | schedule_settings(conn, bset, state.tz)
    return ok(shown)


# --- UpdateBackupSet ---------------------------------------------------------------------------

#: Settings of the vendor's UpdateBackupSet that opencbs does not keep: refused whatever their
#: value (null or "" counts as not given).
VENDOR_SETTINGS = (
    "RecycleBinSettings",
    "ReadOnly",
    "ShadowCopyEnabled",
    "DeleteTempFile",
    "LogRetentionDays",
    "FollowLink",
    "LanDomain",
    "LanUsername",
    "LanPassword",
    "WorkingDir",
    "UploadPermission",
    "ReminderSettings",
    "InFileDeltaSettings",
    "LocalCopySettings",
)
#: Keys of GetBackupSet's answer that UpdateBackupSet cannot change yet: accepted when equal to
#: what GetBackupSet shows (a set read and sent back whole), refused otherwise.
SHOWN_SETTINGS = (
    "Name",
    "Type",
    "Removed",
    "CompressType",
    "CompressLevel",
    "Deduplication",
    "SelectedSource",
    "Filter",
    "DestinationList",
)
_CALL = "UpdateBackupSet"
_CHANGEABLE = "RetentionPolicy, ScheduleList and TimeZone"

_POLICY_PARAM = ParamDoc(
    POLICY,
    type="object",
    description="The new retention policy (cbs-api.md §10), a JSON object (or its JSON text in "
    'a form or query): {"Type": "SIMPLE", "RetentionDays": 7, "SpaceFreeUpEnabled": true}, '
    '{"Type": "SIMPLE", "RetentionJobs": 10, …} or {"Type": "ADVANCED", "KeepDaily": 7, '
    '"KeepWithin": "30d", …}. It replaces the whole policy.',
)


def _same(given: Any, current: Any, name: str) -> bool:
    """Whether parameter ``name`` was given with the value GetBackupSet shows (``current``);
    booleans and numbers compare as CBS parameters are read (``"true"``, ``"3"``)."""
    if given == current and type(given) is type(current):
        return True
    if isinstance(current, bool):
        try:
            return Params({name: given}).boolean(name) is current
        except ParameterInvalid:
            return False
    if isinstance(current, int) and not isinstance(given, bool):
        return str(given).strip() == str(current)
    return False


def refuse_other_changes(params: Params, shown: Mapping[str, Any]) -> None:
    """Raise ``ParameterNotChangeable`` for the first setting parameter UpdateBackupSet
    cannot change yet: one of ``VENDOR_SETTINGS`` given (not null or ``""``), or one of
    ``SHOWN_SETTINGS`` given with a value other than ``shown`` (the set's GetBackupSet
    object)."""
    for name in VENDOR_SETTINGS:
        if params.values.get(name) not in (None, ""):
            raise ParameterNotChangeable(name, _CALL, _CHANGEABLE)
    for name in SHOWN_SETTINGS:
        if name in params.values and not _same(params.values[name], shown[name], name):
            raise ParameterNotChangeable(name, _CALL, _CHANGEABLE)


@cbs_call(
    _CALL,
    params=(LOGIN, OWNER, SET_ID, _POLICY_PARAM, SCHEDULE_LIST_PARAM, TIME_ZONE_PARAM),
    summary="Change a backup set's retention policy (RetentionPolicy, cbs-api.md §10), "
    "schedules (ScheduleList: the whole list) and their time zone (TimeZone, §13); "
    '{"Status":"OK"}. Other settings cannot be changed by this call yet: sent unchanged '
    "(as GetBackupSet shows them) they are accepted, otherwise refused naming the parameter. "
    "Not for READ_ONLY_API system users.",
    v2=True,
)
def update_backup_set(params: Params, caller: Caller, state: ServerState) -> Response:
    require_write(caller, _CALL)
    params.required_str("LoginName")
    params.required_str("BackupSetID")
    given = params.json_object(POLICY)
    policy = parse_retention_policy(given) if given is not None else None
    items = read_schedule_list(params)
    time_zone = read_time_zone(params)
    with state.db.write() as conn:
        user = backup_user(conn, params, caller)
        bset = backup_set(conn, params, user)
        refuse_other_changes(params, set_settings(bset, user))
        if policy is not None:
            sets.update_set(
                conn, user.id, bset.id, settings={"retention": policy.model_dump(mode="json")}
            )
        apply_schedule_settings(conn, bset, items=items, time_zone=time_zone, server_zone=state.tz)
    return ok()
