"""The error hierarchy of opencbs.

Every error a user can meet is one class with a stable ``code``, a ``message``, an optional
``hint`` and its :class:`ExitCode`. The CBS envelope mapping lives in ``opencbs.api.envelope``;
the exit codes and their meanings are the table :class:`ExitCode` here (the README's table is
checked against it by ``tests/unit/test_exit_codes.py``), applied in ``opencbs.cli.main``.
Messages of the CBS errors are part of the contract
(cbs-api.md §3) and are built here, with the vendor's typographic quotes ‘ ’.
"""

from __future__ import annotations

from enum import IntEnum


def quoted(value: object) -> str:
    """Quote a name as the vendor does: ‘name’ (U+2018, U+2019)."""
    return f"\u2018{value}\u2019"


class ExitCode(IntEnum):
    """The exit codes of the ``opencbs`` command, each with its one meaning (``meaning``, the
    text of the README's table). Every error class names one; commands return one."""

    SUCCESS = 0
    ERROR = 1
    INVALID = 2
    CREDENTIALS = 3
    NOT_FOUND = 4
    CONFLICT = 5
    DATABASE = 6
    UNAVAILABLE = 7
    REFUSED = 8
    JOB_FAILED = 9
    INCOMPLETE = 10
    INTERNAL = 70
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        """What the code means, as the README's table says it."""
        return _MEANINGS[self]


_MEANINGS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "success",
    ExitCode.ERROR: "other error",
    ExitCode.INVALID: "invalid input, parameter or setting; command-line usage error",
    ExitCode.CREDENTIALS: "credentials rejected",
    ExitCode.NOT_FOUND: "not found (backup user, set, destination, job)",
    ExitCode.CONFLICT: "conflict (exists already)",
    ExitCode.DATABASE: "database unreachable or refusing",
    ExitCode.UNAVAILABLE: (
        "something the command needs, other than the database, cannot be reached or used: the "
        "server, a destination or its repository, the restore target, the agent's data_dir "
        "(a job report that could be neither delivered nor kept there is lost)"
    ),
    ExitCode.REFUSED: (
        "refused or damaged: the server refused an agent request, or the repository is "
        "damaged (`verify` found problems)"
    ),
    ExitCode.JOB_FAILED: (
        "a backup job ended `BS_STOP_BY_SYSTEM_ERROR` (the destination failed, the walk of the "
        "sources did, or none of the sources could be read) or `BS_STOP_BY_QUOTA_EXCEEDED`"
    ),
    ExitCode.INCOMPLETE: (
        "completed with some paths not restored: `restore` wrote everything else and named "
        "each path the target refused on stderr (`opencbs: warning: cannot restore …`)"
    ),
    ExitCode.INTERNAL: "internal error (a bug: run again with `--debug` and report it)",
    ExitCode.INTERRUPTED: (
        "interrupted; a backup job stopped by Ctrl-C or SIGTERM (`BS_STOP_BY_USER`) or at its "
        "schedule's stop time (`BS_STOP_BY_SCHEDULER`)"
    ),
}


class OpenCBSError(Exception):
    """Base of every opencbs error.

    Attributes: ``code`` (stable identifier), ``message`` (one line), ``hint`` (what to do).
    """

    code = "error"
    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class CredentialsRejected(OpenCBSError):
    """Unknown system user, wrong password, role not allowed, suspended or locked (§2, §3)."""

    code = "credentials"
    exit_code: ExitCode = ExitCode.CREDENTIALS

    def __init__(self) -> None:
        super().__init__("Incorrect system username/password")


class ParameterMissing(OpenCBSError):
    """A required parameter is missing or empty (§3)."""

    code = "parameter_missing"
    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, name: str) -> None:
        super().__init__(f"[Error] Parameter {name} is null / empty!")
        self.name = name


class ParameterInvalid(OpenCBSError):
    """A parameter is present but malformed (bad date, bad boolean) (§3). ``name`` may name a
    key inside an object parameter (``RetentionPolicy.RetentionDays``); ``why``, when given,
    is said after the value in parentheses (``(1 to 365)``)."""

    code = "parameter_invalid"
    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, name: str, value: object, why: str = "") -> None:
        text = value if isinstance(value, str) else repr(value)
        if len(text) > 200:
            text = text[:200] + "…"
        reason = f" ({why})" if why else ""
        super().__init__(f"[Error] Parameter {name} is invalid: {quoted(text)}{reason}")
        self.name = name


class ParameterNotChangeable(OpenCBSError):
    """A setting parameter a call cannot change yet, given with a value other than the current
    one (UpdateBackupSet changes only ``RetentionPolicy``, ``ScheduleList`` and ``TimeZone`` so
    far; cbs-api.md §10, §13)."""

    code = "parameter_not_changeable"
    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, name: str, call: str, changeable: str) -> None:
        super().__init__(
            f"[Error] Parameter {name} cannot be changed by {call} yet (it changes "
            f"{changeable} only)"
        )
        self.name = name


class PermissionDenied(OpenCBSError):
    """A system user whose role may not call a call that changes state (``READ_ONLY_API``:
    read calls only; cbs-api.md §2, §3). Its password was right, so this says so."""

    code = "permission_denied"
    exit_code: ExitCode = ExitCode.CREDENTIALS

    def __init__(self, name: str, role: str, call: str) -> None:
        super().__init__(
            f"[Error] System user {quoted(name)} (role {role}) may not call {call}: it "
            "changes settings"
        )


class NotFound(OpenCBSError):
    """Base for "not found" answers."""

    code = "not_found"
    exit_code: ExitCode = ExitCode.NOT_FOUND


class BackupUserNotFound(NotFound):
    """Unknown backup user, or one outside the caller's scope (§2, §3)."""

    code = "user_not_found"

    def __init__(self, login_name: str) -> None:
        super().__init__(f"[UserCacheManager.NoSuchUserExpt] User {quoted(login_name)} not found.")


class BackupSetNotFound(NotFound):
    """Unknown backup set of that backup user (§3)."""

    code = "set_not_found"

    def __init__(self, set_id: str) -> None:
        super().__init__(f"Backup set {quoted(set_id)} not found.")


class DestinationNotFound(NotFound):
    """Unknown destination of that backup set (§3)."""

    code = "destination_not_found"

    def __init__(self, destination_id: str) -> None:
        super().__init__(f"Destination {quoted(destination_id)} not found.")


class BackupJobNotFound(NotFound):
    """Unknown backup job (§3)."""

    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Backup job {quoted(job_id)} not found.")


class NoJobOnDay(NotFound):
    """No backup job started on the requested day (ListBackupJobStatus, §3)."""

    code = "no_job_on_day"

    def __init__(self) -> None:
        super().__init__("[Error] No Backup Job on that day")


class BodyNotObject(OpenCBSError):
    """The request body is neither a JSON object nor a form (§3)."""

    code = "body_not_object"
    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self) -> None:
        super().__init__("[Error] Request body is not a JSON object")


class UnknownApi(OpenCBSError):
    """An unknown call name under the API path (§3; HTTP 404)."""

    code = "unknown_api"

    def __init__(self, name: str) -> None:
        super().__init__(f"[Error] Unknown API {quoted(name)}")


class MethodNotAllowed(OpenCBSError):
    """A known call asked with a method other than POST or GET (HTTP 405)."""

    code = "method_not_allowed"

    def __init__(self, method: str, name: str) -> None:
        super().__init__(
            f"[Error] Method {method} is not allowed for {quoted(name)}; use POST or GET"
        )


class AuthUserRejected(OpenCBSError):
    """A backup user's password was rejected (AuthUser, agent API)."""

    code = "user_credentials"
    exit_code: ExitCode = ExitCode.CREDENTIALS

    def __init__(self) -> None:
        super().__init__("Incorrect username/password")


class Conflict(OpenCBSError):
    """The request conflicts with what is stored (duplicate name or job, finished job)."""

    code = "conflict"
    exit_code: ExitCode = ExitCode.CONFLICT


class InvalidInput(OpenCBSError):
    """Input outside the CBS calls (CLI, agent API) that cannot be used as given."""

    code = "invalid_input"
    exit_code: ExitCode = ExitCode.INVALID


class StoreError(OpenCBSError):
    """The database could not be reached or refused an operation."""

    code = "store"
    exit_code: ExitCode = ExitCode.DATABASE


class ConfigError(OpenCBSError):
    """A setting or the config file is invalid."""

    code = "config"
    exit_code: ExitCode = ExitCode.INVALID


class ServerBusy(OpenCBSError):
    """Too many logins at once: no password-hashing slot freed in time (HTTP 429 with
    ``Retry-After: retry_after`` seconds, for the CBS calls inside the CBS envelope)."""

    code = "busy"
    exit_code: ExitCode = ExitCode.UNAVAILABLE

    def __init__(self, retry_after: int = 2) -> None:
        super().__init__(
            "[Error] Too many login attempts, try again later",
            f"retry after {retry_after} s",
        )
        self.retry_after = retry_after


class AlertRuleNotFound(NotFound):
    """Unknown alert rule, or one outside the caller's scope (cbs-api.md §15)."""

    code = "alert_rule_not_found"

    def __init__(self, rule_id: str) -> None:
        super().__init__(f"Alert rule {quoted(rule_id)} not found.")


class AlertNotDelivered(OpenCBSError):
    """A test alert that its target did not accept: the SMTP server or the webhook refused it,
    or could not be reached (``detail`` says which; cbs-api.md §15)."""

    code = "alert_not_delivered"
    exit_code: ExitCode = ExitCode.UNAVAILABLE

    def __init__(self, rule_id: int, detail: str) -> None:
        super().__init__(
            f"test alert of rule {rule_id} not delivered: {detail}",
            "check the rule's target and the SMTP settings (README: Alerts); "
            "`opencbs alert deliveries` lists every attempt",
        )
        self.detail = detail
