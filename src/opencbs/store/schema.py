"""Database schema (SQLAlchemy Core). Migrations in ``migrations/`` create exactly this.

Instants are UTC epoch milliseconds (BIGINT); sizes are bytes. IDs shown by the CBS API
(backup set, destination, user) are 64-bit integers rendered as decimal strings (cbs-api.md §4).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from opencbs.reports.counters import COUNTER_NAMES

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

system_users = Table(
    "system_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("status", String(16), nullable=False, default="ENABLE"),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

backup_users = Table(
    "backup_users",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("login_name", String(255), nullable=False, unique=True),
    # the reseller (system user name) that owns the user; "" for the administrators (§2)
    Column("owner", String(255), nullable=False, default=""),
    Column("password_hash", String(255), nullable=False),
    Column("alias", String(255), nullable=False, default=""),
    Column("email", String(255), nullable=False, default=""),
    Column("client_type", String(32), nullable=False, default="OBM"),
    Column("status", String(16), nullable=False, default="ENABLE"),
    Column("quota", BigInteger, nullable=False, default=0),
    Column("data_size", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    # the last time (epoch ms) the user's agent polled for schedules or run requests
    # (ListUsers ``Online``; migration 0007); NULL: never
    Column("last_seen_ms", BigInteger, nullable=True),
    Index("ix_backup_users_owner", "owner"),
)

backup_sets = Table(
    "backup_sets",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, ForeignKey("backup_users.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("type", String(32), nullable=False, default="FILE"),
    # sources, filters, compression, deduplication (opencbs.model.sets.BackupSetSettings)
    Column("settings", JSON, nullable=False),
    Column("removed", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    # names are unique among a user's sets that are not removed (checked by store.sets)
    Index("ix_backup_sets_user", "user_id"),
)

destinations = Table(
    "destinations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("name", String(255), nullable=False),
    Column("type", String(32), nullable=False),
    Column("settings", JSON, nullable=False),
    Index("ix_destinations_set", "set_id", "position"),
)

_counter_columns = [Column(name, BigInteger, nullable=False, default=0) for name in COUNTER_NAMES]

backup_jobs = Table(
    "backup_jobs",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("destination_id", BigInteger, ForeignKey("destinations.id"), nullable=False),
    Column("job_id", String(19), nullable=False),
    Column("cdp", Boolean, nullable=False, default=False),
    Column("mode", String(1), nullable=False, default="M"),
    Column("status", String(40), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("from_ip", String(64), nullable=False, default=""),
    Column("run_version", String(64), nullable=False, default=""),
    *_counter_columns,
    Column("dedupe_enabled", Boolean, nullable=False, default=True),
    Column("dedupe_original_size", BigInteger, nullable=False, default=0),
    Column("dedupe_saving", BigInteger, nullable=False, default=0),
    Column("success_database", String(32), nullable=False, default=""),
    Column("missed_database", String(32), nullable=False, default=""),
    Column("success_public_folder", String(32), nullable=False, default=""),
    Column("missed_public_folder", String(32), nullable=False, default=""),
    # progress (GetBackupJobProgress, §7)
    Column("current_file_name", Text, nullable=False, default=""),
    Column("file_upload_time", BigInteger, nullable=True),
    Column("current_file_count", BigInteger, nullable=False, default=0),
    Column("total_file_count", BigInteger, nullable=False, default=0),
    Column("uploaded_file_size", BigInteger, nullable=False, default=0),
    Column("total_file_size", BigInteger, nullable=False, default=0),
    # bytes the job wrote to its destination (UploadSize, cbs-api.md §7; migration 0005):
    # NULL for jobs stored before, and jobs of agents that do not send it
    Column("uploaded_bytes", BigInteger, nullable=True),
    # closed by the server for its agent's silence, reopened when the agent speaks again
    # (store.jobs.reopen_if_silent; migration 0006)
    Column("closed_for_silence", Boolean, nullable=False, default=False, server_default=false()),
    # next sequence number of each list (0 = log, 1..6 = new..cpy), and the last sign of life
    Column("next_seq", JSON, nullable=False),
    Column("last_activity", BigInteger, nullable=False),
    UniqueConstraint("set_id", "destination_id", "job_id", "cdp", name="uq_backup_jobs_identity"),
    Index("ix_backup_jobs_start", "start_time"),
    Index("ix_backup_jobs_set_job", "set_id", "job_id"),
    Index("ix_backup_jobs_running", "status", "last_activity"),
)

# One row per report entry. Log entries (list 0): etype is the log type, path the message,
# mtime_ms the timestamp. File entries: etype F/D/L, path the full source path, from_path the
# moved or copied-from path, sizes in bytes. The primary key streams one list of one job in order.
job_entries = Table(
    "job_entries",
    metadata,
    Column("job_pk", Integer, ForeignKey("backup_jobs.pk"), primary_key=True),
    Column("list", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("etype", String(8), nullable=False),
    Column("link_dir", Boolean, nullable=False, default=False),
    Column("path", Text, nullable=False),
    Column("from_path", Text, nullable=True),
    Column("mtime_ms", BigInteger, nullable=True),
    Column("size", BigInteger, nullable=False, default=0),
    Column("unzip_size", BigInteger, nullable=False, default=0),
    sqlite_with_rowid=False,
)

# Batches of entries an agent delivered: a retried batch number is never stored twice.
job_batches = Table(
    "job_batches",
    metadata,
    Column("job_pk", Integer, ForeignKey("backup_jobs.pk"), primary_key=True),
    Column("batch_no", Integer, primary_key=True, autoincrement=False),
    Column("entry_count", Integer, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Failed logins per account and per client address (store/lockouts.py): ``kind`` is
# ``sysuser``, ``user`` (a backup user's login name) or ``address``; ``key`` the name or address,
# known or not. ``failures`` counts the password checks begun in the window that began at
# ``window_start_ms`` (a success resets an account's count); ``locked_until_ms`` ends a lock.
login_failures = Table(
    "login_failures",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("locked_until_ms", BigInteger, nullable=True),
    Index("ix_login_failures_locked", "locked_until_ms"),
)

# Storage measurements of a backup set's destination (store/storage.py), sent by the agent after
# a backup job or a retention run: ``measured_at`` epoch ms; ``stored_size`` the bytes the whole
# repository takes on the destination (after deduplication, compression, encryption);
# ``data_size`` / ``data_count`` the bytes stored for, and the files of, the newest snapshot;
# ``retain_size`` / ``retain_count`` the bytes stored only for older snapshots' file versions
# and those versions (the retention area); ``snapshot_count``. One measurement per destination
# and instant.
storage_stats = Table(
    "storage_stats",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("destination_id", BigInteger, ForeignKey("destinations.id"), nullable=False),
    Column("measured_at", BigInteger, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    Column("data_size", BigInteger, nullable=False),
    Column("data_count", BigInteger, nullable=False),
    Column("retain_size", BigInteger, nullable=False),
    Column("retain_count", BigInteger, nullable=False),
    Column("snapshot_count", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("destination_id", "measured_at", name="uq_storage_stats_measurement"),
    Index("ix_storage_stats_set_time", "set_id", "measured_at"),
)

# Restore jobs (store/restore_jobs.py; cbs-api.md §12): one row per restore an agent reported.
# ``job_id`` is the restore job's ID (its start second in the server's zone), unique within its
# set; ``backup_job_id`` / ``snapshot_id`` what was restored, ``target`` where to (the agent's
# folder, as text), ``overwrite`` how existing files were treated. ``file_count`` / ``file_size``
# the regular files restored and their bytes; the other counts are paths (``kept_count`` left
# as they were, ``failed_count`` refused by the target, ``damaged_count`` damaged in the
# repository). ``logs``: the job's log entries, ``[{"type", "message", "time"}]`` (time epoch
# ms), at most ``model.restores.MAX_RESTORE_LOGS``. Progress columns as backup jobs'.
restore_jobs = Table(
    "restore_jobs",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("destination_id", BigInteger, ForeignKey("destinations.id"), nullable=False),
    Column("job_id", String(19), nullable=False),
    Column("mode", String(1), nullable=False, default="M"),
    Column("status", String(40), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("from_ip", String(64), nullable=False, default=""),
    Column("run_version", String(64), nullable=False, default=""),
    Column("backup_job_id", String(64), nullable=False, default=""),
    Column("snapshot_id", String(64), nullable=False, default=""),
    Column("target", Text, nullable=False, default=""),
    Column("overwrite", String(16), nullable=False, default=""),
    Column("file_count", BigInteger, nullable=False, default=0),
    Column("file_size", BigInteger, nullable=False, default=0),
    Column("dir_count", BigInteger, nullable=False, default=0),
    Column("link_count", BigInteger, nullable=False, default=0),
    Column("kept_count", BigInteger, nullable=False, default=0),
    Column("failed_count", BigInteger, nullable=False, default=0),
    Column("damaged_count", BigInteger, nullable=False, default=0),
    Column("warn_count", BigInteger, nullable=False, default=0),
    Column("error_count", BigInteger, nullable=False, default=0),
    Column("logs", JSON, nullable=False),
    Column("current_file_name", Text, nullable=False, default=""),
    Column("progress_time", BigInteger, nullable=True),
    Column("restored_file_count", BigInteger, nullable=False, default=0),
    Column("total_file_count", BigInteger, nullable=False, default=0),
    Column("restored_size", BigInteger, nullable=False, default=0),
    Column("total_file_size", BigInteger, nullable=False, default=0),
    Column("last_activity", BigInteger, nullable=False),
    UniqueConstraint("set_id", "job_id", name="uq_restore_jobs_identity"),
    Index("ix_restore_jobs_start", "start_time"),
    Index("ix_restore_jobs_running", "status", "last_activity"),
)

# Schedules of backup sets (store/schedules.py; cbs-api.md §13; migration 0007). ``id`` as a
# set's (creation time in epoch ms, bumped until unused); ``settings`` the schedule's JSON form
# (``model.schedules.Schedule``, name and type included); ``next_check_ms`` the next slot the
# missed-backup sweep checks (NULL: none left, e.g. a CUSTOM day past or a disabled schedule),
# advanced by a compare-and-set so that several server processes check each slot once.
schedules = Table(
    "schedules",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("settings", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("next_check_ms", BigInteger, nullable=True),
    Index("ix_schedules_set", "set_id", "position"),
    Index("ix_schedules_next_check", "next_check_ms"),
)

# Slots found missed (the claim of the missed-backup sweep): a row is inserted before the
# ``BS_STOP_MISSED_BACKUP`` jobs of its slot, in the same transaction, so a slot is recorded
# once whatever the number of server processes.
missed_slots = Table(
    "missed_slots",
    metadata,
    Column("schedule_id", BigInteger, primary_key=True, autoincrement=False),
    Column("slot_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("set_id", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

# Backups started from the server (RunBackup.do; cbs-api.md §14): ``status`` PENDING until the
# set's agent takes it (TAKEN, with the job it started), or CANCELLED (``CancelBackup``); at
# most one PENDING request per set. ``requested_by``: the system user's name.
run_requests = Table(
    "run_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("set_id", BigInteger, ForeignKey("backup_sets.id"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("backup_users.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(255), nullable=False, default=""),
    Column("requested_at", BigInteger, nullable=False),
    Column("taken_at", BigInteger, nullable=True),
    Column("job_id", String(19), nullable=True),
    Index("ix_run_requests_user_status", "user_id", "status"),
    Index("ix_run_requests_set_status", "set_id", "status"),
)

# Alert rules (store/alerts.py, opencbs.notify; cbs-api.md §15; migration 0008): ``scope_kind``
# ``backup_user`` (``scope_name`` its login name: its sets) or ``system_user`` (its name: every
# backup user it sees); ``event`` an ``opencbs.model.alerts.AlertEvent``; ``set_id`` one set
# (``NULL``: every set in scope; NO_SUCCESS names one); ``hours`` NO_SUCCESS's silence;
# ``channel`` ``EMAIL`` or ``WEBHOOK`` and ``target`` the address or URL; ``secret`` the
# webhook's HMAC key (shown once, when the rule is created; never served again).
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope_kind", String(16), nullable=False),
    Column("scope_name", String(255), nullable=False),
    Column("event", String(16), nullable=False),
    Column("set_id", BigInteger, nullable=True),
    Column("hours", Integer, nullable=True),
    Column("channel", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("secret", String(128), nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_alert_rules_event", "event", "enabled"),
    Index("ix_alert_rules_scope", "scope_kind", "scope_name"),
)

# The alerts' outbox: one row per alert to send, ``event_key`` unique per rule (``job:<pk>:
# <status>``, ``nosuccess:<set>:<last success ms>``, ``digest:<yyyy-MM-dd>``, ``test:<uuid>``) so
# each is inserted once, whichever process sees it first. ``state`` an
# ``opencbs.model.alerts.DeliveryState``; a sending process claims a row (``claimed_by``, until
# ``claim_until`` epoch ms) so no other sends it meanwhile; ``next_attempt_ms`` when it is due;
# ``payload`` the JSON sent (webhook body; the email is written from it).
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("alert_rules.id"), nullable=False),
    Column("event_key", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claim_until", BigInteger, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True),
    UniqueConstraint("rule_id", "event_key", name="uq_alert_events_key"),
    Index("ix_alert_events_due", "state", "next_attempt_ms"),
)

# The delivery log: one row per attempt to send an alert (``at`` epoch ms, ``ok``, ``detail``
# the HTTP status or SMTP reply or the error; never a secret).
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, ForeignKey("alert_events.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_alert_deliveries_event", "event_id", "attempt"),
)
