"""A destination in a bucket of an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph…),
on boto3. Implements ``Storage`` (issue 13).

Imported only where an S3 destination is opened (never by ``opencbs.destinations``), so a local
destination never loads boto3.

- Object ``name`` is key ``<prefix>/<name>`` (``name`` when the prefix is ``""``); listings give
  names relative to the prefix and skip keys that are not valid object names (``base``).
- ``put`` is one ``PutObject`` up to ``S3Tuning.multipart_threshold`` bytes, a multipart upload
  above it (parts of ``part_size`` bytes, one part copied at a time); any failure aborts the
  upload. With ``journal_dir``, each open multipart upload has a small JSON file there until it
  completes or is aborted, so ``remove_stale_temporaries`` aborts the uploads of a killed
  process at once; uploads older than an hour are aborted whoever started them.
- ``put_if`` is a conditional ``PutObject`` (``If-None-Match: *`` or ``If-Match: <ETag>``); the
  version of an object is its ETag.
- Every failure is a ``DestinationError`` naming the destination, with a hint; botocore's
  exceptions never escape. Bad credentials are :class:`S3CredentialsRejected`.
- Credentials (:class:`S3Credentials`): explicit keys, else a named profile, else boto3's
  default chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, the shared
  credentials file ``~/.aws/credentials`` or ``AWS_SHARED_CREDENTIALS_FILE``, instance roles).
  Secrets are never shown or logged: this module leaves botocore's logger at WARNING unless
  the application configured it, so a ``--debug`` run does not log signed request headers.
- Requests are checksummed only where S3 requires it (``when_required``): several
  S3-compatible servers refuse the streamed CRC trailers boto3 adds otherwise; every object of
  a repository is authenticated by its own encryption anyway.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bexc
import botocore.session
from botocore.config import Config

from opencbs.destinations.base import (
    DestinationError,
    ObjectNotFound,
    PreconditionFailed,
    check_name,
    check_prefix,
)
from opencbs.errors import ExitCode
from opencbs.fileio import write_atomic
from opencbs.model.destinations import S3Location

__all__ = [
    "MIN_PART_SIZE",
    "S3BucketMissing",
    "S3Credentials",
    "S3CredentialsRejected",
    "S3Storage",
    "S3Tuning",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MiB = 1024 * 1024
#: The smallest part S3 accepts in a multipart upload (all parts but the last).
MIN_PART_SIZE = 5 * MiB
#: At most this many parts in one multipart upload (S3's limit).
_MAX_PARTS = 10_000
#: Raw keys of ``check_writable``'s probe: a dot-name, so no listing ever shows it as an object.
_PROBE = ".opencbs-probe-"
_JOURNAL_GLOB = "s3-upload-*.json"

_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "403",
        "Forbidden",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_UNREACHABLE = (
    bexc.EndpointConnectionError,
    bexc.ConnectTimeoutError,
    bexc.ReadTimeoutError,
    bexc.ConnectionClosedError,
    bexc.ConnectionError,
)
_CREDENTIALS_HINT = (
    "Give the agent the access key and secret of an account allowed to use this bucket: "
    "s3_access_key_id and s3_secret_access_key in its config file (or OPENCBS_S3_ACCESS_KEY_ID"
    " / OPENCBS_S3_SECRET_ACCESS_KEY), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a "
    "profile of the shared credentials file (s3_profile or AWS_PROFILE; ~/.aws/credentials)."
)

#: One botocore session for the clients of explicit keys: it loads the service models once
#: (a tenth of a second per client otherwise). Its own credential chain is never used.
_SHARED: list[Any] = []
_SHARED_LOCK = threading.Lock()

# Signed request headers are logged by botocore at DEBUG: keep it quiet unless configured.
for _name in ("botocore", "boto3", "s3transfer"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


class S3CredentialsRejected(DestinationError):
    """The S3 server refused the credentials (unknown access key, wrong secret, access denied),
    or none were found."""

    code = "destination_credentials"
    exit_code = ExitCode.UNAVAILABLE  # the destination cannot be used (README's exit codes)


class S3BucketMissing(DestinationError):
    """The S3 server has no bucket of the destination's name (opencbs never creates one)."""

    code = "destination_bucket_missing"


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """How to sign requests: ``access_key_id`` with ``secret_access_key`` (and
    ``session_token`` for temporary credentials), else the shared-credentials ``profile``, else
    (all ``None``) boto3's default chain. ``repr``/``str`` never show the secret or the token."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class S3Tuning:
    """Limits of the S3 client.

    ``max_attempts``: tries of one request in all (first included), retried on throttling
    (503 SlowDown), 5xx answers, timeouts and lost connections, with boto3's "standard" mode:
    exponential backoff with full jitter, at most 20 s between tries. ``connect_timeout`` and
    ``read_timeout`` (seconds) bound the connection and each socket read. So a request fails
    within about ``max_attempts × (connect_timeout + read_timeout) + (max_attempts - 1) × 20``
    seconds even against a stalled server (430 s with the defaults; a refused connection fails
    in seconds), unless the server keeps trickling bytes. ``multipart_threshold`` and
    ``part_size`` (bytes; a part is at least 5 MiB, S3's minimum): objects above the threshold
    go up in parts. ``max_pool_connections``: HTTP connections kept for the threads sharing one
    storage. ``upload_concurrency``: packs a writer uploads at once (1..8).
    ``retry_seconds``: beyond boto3's quick tries (its backoff for errors other than
    throttling is a fraction of a second), how long one operation keeps being tried again when
    it fails transiently (the server unreachable, a 5xx answer, a connection cut, throttling),
    waiting 1, 2, 4… at most 15 s (jittered) in between: a server restarting or a network
    blip does not fail a backup; after that the operation fails with the last error (0: no
    such retry). Raises ``ValueError`` for values out of range."""

    max_attempts: int = 5
    retry_seconds: float = 60.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    retry_mode: str = "standard"
    max_pool_connections: int = 16
    upload_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("max_attempts must be >= 1 and the timeouts > 0")
        if not 0 <= self.retry_seconds <= 86_400:
            raise ValueError("retry_seconds must be within 0..86400")
        if self.part_size < MIN_PART_SIZE or self.multipart_threshold < 1:
            raise ValueError(f"part_size must be >= {MIN_PART_SIZE} bytes")
        if not 1 <= self.upload_concurrency <= 8:
            raise ValueError("upload_concurrency must be within 1..8")
        if self.max_pool_connections < 10:
            raise ValueError("max_pool_connections must be >= 10")


def _pid_alive(pid: int) -> bool:
    """Whether a process of that ID runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class S3Storage:
    """Objects under ``location`` (bucket and prefix) of an S3-compatible server. Implements
    ``Storage``; thread-safe (one boto3 client per storage, shared by the threads).

    ``credentials``: :class:`S3Credentials` (``None``: boto3's default chain). ``tuning``:
    :class:`S3Tuning`. ``journal_dir``: a folder of this machine for the journal of open
    multipart uploads (module docstring; ``None``: no journal). Creating it makes no request;
    raises ``S3CredentialsRejected`` for a profile that does not exist."""

    def __init__(
        self,
        location: S3Location,
        credentials: S3Credentials | None = None,
        *,
        tuning: S3Tuning | None = None,
        journal_dir: Path | None = None,
    ) -> None:
        self.location = location
        self.tuning = tuning or S3Tuning()
        self.journal_dir = journal_dir
        #: Packs a writer uploads at once (``engine.repo_writer.upload_concurrency``): each
        #: request waits on the network, so several overlap (16 MiB of memory each).
        self.upload_concurrency = self.tuning.upload_concurrency
        #: Set once an operation gave up after ``retry_seconds`` (``_patiently``).
        self._gave_up = threading.Event()
        self._root = f"{location.prefix}/" if location.prefix else ""
        self._client: Any = self._make_client(credentials or S3Credentials())

    def _make_client(self, creds: S3Credentials) -> Any:
        """The boto3 client of this location (path-style addressing for a custom endpoint)."""
        loc, tune = self.location, self.tuning
        try:
            config = Config(
                region_name=loc.region,
                connect_timeout=tune.connect_timeout,
                read_timeout=tune.read_timeout,
                retries={"total_max_attempts": tune.max_attempts, "mode": tune.retry_mode},
                max_pool_connections=tune.max_pool_connections,
                s3={"addressing_style": "path"} if loc.endpoint else {},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            endpoint = loc.endpoint or None
            if creds.access_key_id and creds.secret_access_key:
                with _SHARED_LOCK:
                    if not _SHARED:
                        # Explicit keys: no AWS_PROFILE of the environment applies.
                        no_profile = {"profile": (None, None, None, None)}
                        _SHARED.append(botocore.session.Session(session_vars=no_profile))
                    return _SHARED[0].create_client(
                        "s3",
                        region_name=loc.region,
                        endpoint_url=endpoint,
                        aws_access_key_id=creds.access_key_id,
                        aws_secret_access_key=creds.secret_access_key,
                        aws_session_token=creds.session_token,
                        config=config,
                    )
            # A profile or the default chain: a new session reads the environment now.
            session = boto3.session.Session(profile_name=creds.profile, region_name=loc.region)
            return session.client("s3", endpoint_url=endpoint, config=config)
        except bexc.ProfileNotFound as exc:
            profile = creds.profile or os.environ.get("AWS_PROFILE", "")
            raise S3CredentialsRejected(
                f"No S3 credentials profile {profile!r} for {loc} (the shared credentials "
                "and config files have none of that name)",
                _CREDENTIALS_HINT,
            ) from exc
        except (bexc.BotoCoreError, ValueError) as exc:
            raise DestinationError(
                f"Cannot use the S3 destination {loc}: {_one_line(exc)}",
                "Check the S3 endpoint URL (--s3-endpoint) and region (--s3-region).",
            ) from exc

    def __repr__(self) -> str:
        return f"S3Storage({str(self.location)!r})"

    def __str__(self) -> str:
        """The location, as messages and logs name the destination."""
        return str(self.location)

    # Errors ------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        """The server, as messages name it."""
        return self.location.endpoint or f"AWS S3 ({self.location.region})"

    def _missing_bucket(self) -> DestinationError:
        return S3BucketMissing(
            f"S3 bucket {self.location.bucket} does not exist at {self._where} "
            f"(destination {self.location.url})",
            "Create the bucket first (opencbs never creates one), or correct the bucket name, "
            "the endpoint (--s3-endpoint) or the region (--s3-region).",
        )

    def _translate(self, exc: Exception, action: str, name: str | None) -> DestinationError:
        """The ``DestinationError`` of a boto3 failure while ``action``-ing ``name``."""
        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NOT_FOUND_CODES and name is not None:
                return ObjectNotFound(name)
            if code == "NoSuchBucket":
                return self._missing_bucket()
            if code in _AUTH_CODES or status == 403:
                return S3CredentialsRejected(
                    f"S3 server refused the credentials for {self.location} ({code})",
                    _CREDENTIALS_HINT,
                )
            what = f" {name!r}" if name else ""
            return DestinationError(
                f"S3 {action}{what} failed at {self.location}: {code or status} "
                f"({_one_line(err.get('Message', ''))})",
                "Try again later; if it persists, check the S3 server and its logs.",
            )
        if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            return S3CredentialsRejected(
                f"No S3 credentials found for {self.location}", _CREDENTIALS_HINT
            )
        if isinstance(exc, _UNREACHABLE):
            return DestinationError(
                f"Cannot reach the S3 server at {self._where} ({self.location.url}): "
                f"{_one_line(exc)}",
                "Check the endpoint URL (--s3-endpoint), the network, and that the S3 server "
                "is running.",
            )
        return DestinationError(
            f"S3 {action} failed at {self.location}: {_one_line(exc)}",
            "Check the S3 destination's settings and the agent's S3 credentials.",
        )

    def _patiently(self, action: str, call: Callable[[], _T]) -> _T:
        """``call()``, tried again while it fails transiently (:func:`_transient`), for at
        most ``tuning.retry_seconds`` in all (``S3Tuning``); the last failure propagates."""
        deadline = time.monotonic() + self.tuning.retry_seconds
        delay = 1.0
        while True:
            try:
                answer = call()
                self._gave_up.clear()
                return answer
            except (bexc.BotoCoreError, bexc.ClientError) as exc:
                left = deadline - time.monotonic()
                if not _transient(exc) or self._gave_up.is_set():
                    raise
                if left <= 0:
                    # the server stayed away for a whole retry_seconds: the other operations
                    # of this storage (uploads in flight) fail at once instead of each
                    # waiting as long again
                    self._gave_up.set()
                    raise
                pause = min(delay * random.uniform(0.5, 1.0), left)
                # said once per operation (a person sees why a job waits), then only in --debug
                level = logging.INFO if delay == 1.0 else logging.DEBUG
                log.log(
                    level,
                    "S3 %s at %s failed (%s); trying again for up to %.0f s",
                    action,
                    self,
                    _one_line(exc),
                    left,
                )
                time.sleep(pause)
                delay = min(delay * 2, _MAX_PAUSE)

    @contextlib.contextmanager
    def _errors(self, action: str, name: str | None = None) -> Iterator[None]:
        """Translate boto3's exceptions raised inside the block (``_translate``)."""
        try:
            yield
        except (bexc.BotoCoreError, bexc.ClientError) as exc:
            raise self._translate(exc, action, name) from exc

    # Reading -----------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self._root + check_name(name)

    def get(self, name: str) -> bytes:
        """See ``Storage.get``."""
        return self.get_versioned(name)[0]

    def get_versioned(self, name: str) -> tuple[bytes, str]:
        """See ``Storage.get_versioned`` (the version is the object's ETag)."""
        key = self._key(name)

        def read() -> tuple[bytes, str]:
            answer = self._client.get_object(Bucket=self.location.bucket, Key=key)
            return answer["Body"].read(), str(answer["ETag"])

        with self._errors("read", name):
            return self._patiently("read", read)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """See ``Storage.get_range`` (one ranged ``GetObject``)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        key = self._key(name)
        if length == 0:
            size = self._size(name, key)
            data = b""
        else:
            try:
                with self._errors("read", name):
                    data = self._patiently(
                        "read",
                        lambda: self._client.get_object(
                            Bucket=self.location.bucket,
                            Key=key,
                            Range=f"bytes={offset}-{offset + length - 1}",
                        )["Body"].read(),
                    )
            except DestinationError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, bexc.ClientError) and _status(cause) == 416):
                    raise
                data = b""
            size = offset + len(data)
        if size < offset + length or len(data) != length:
            raise DestinationError(
                f"Object {name!r} is shorter than {offset + length} bytes",
                hint="The destination may be damaged; run a verify.",
            )
        return data

    def _size(self, name: str, key: str) -> int:
        """The size in bytes of the object ``name`` (``HeadObject``); raises ``ObjectNotFound``."""
        with self._errors("check", name):
            answer = self._patiently(
                "check", lambda: self._client.head_object(Bucket=self.location.bucket, Key=key)
            )
            return int(answer["ContentLength"])

    def exists(self, name: str) -> bool:
        """See ``Storage.exists``."""
        try:
            self._size(name, self._key(name))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        """See ``Storage.list``."""
        return (name for name, _size in self.list_sizes(prefix))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """See ``Storage.list_sizes`` (``ListObjectsV2``, a page of 1000 keys at a time, as
        the caller iterates)."""
        check_prefix(prefix)
        return self._listed(self._root + prefix)

    def _pages(self, key_prefix: str) -> Iterator[dict[str, Any]]:
        """The pages of ``ListObjectsV2`` under ``key_prefix``, each page tried again while it
        fails transiently."""
        token: str | None = None
        while True:
            more = {"ContinuationToken": token} if token else {}
            page: dict[str, Any] = self._patiently(
                "list",
                functools.partial(
                    self._client.list_objects_v2,
                    Bucket=self.location.bucket,
                    Prefix=key_prefix,
                    **more,
                ),
            )
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _listed(self, key_prefix: str) -> Iterator[tuple[str, int]]:
        skip = len(self._root)
        with self._errors("list", key_prefix or "/"):
            for page in self._pages(key_prefix):
                for item in page.get("Contents", ()):
                    name = item["Key"][skip:]
                    try:
                        check_name(name)
                    except DestinationError:
                        continue
                    yield name, int(item["Size"])

    def is_empty(self) -> bool:
        """Whether no key at all is stored under the prefix (``check_writable``'s probes
        aside): the only place a new repository may be created. Raises ``DestinationError``."""
        with self._errors("list", "/"):
            for page in self._pages(self._root):
                for item in page.get("Contents", ()):
                    if not item["Key"][len(self._root) :].startswith(_PROBE):
                        return False
        return True

    # Writing -----------------------------------------------------------------------------

    def put(self, name: str, data: bytes | memoryview) -> None:
        """See ``Storage.put`` (one ``PutObject``, or a multipart upload above
        ``multipart_threshold`` bytes: S3 shows an object only once it is complete)."""
        key = self._key(name)
        if len(data) > self.tuning.multipart_threshold:
            self._put_multipart(name, key, memoryview(data))
            return
        view = memoryview(data)
        with self._errors("write", name):
            self._patiently(
                "write",
                lambda: self._client.put_object(
                    Bucket=self.location.bucket, Key=key, Body=_ViewReader(view)
                ),
            )

    def put_if(self, name: str, data: bytes | memoryview, *, version: str | None) -> str:
        """See ``Storage.put_if``: a ``PutObject`` with ``If-None-Match: *`` (``version``
        ``None``) or ``If-Match: <version>``; returns the new ETag. Raises
        ``PreconditionFailed`` (HTTP 412, or 409 for a conditional write racing another)."""
        key = self._key(name)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        body = bytes(data)
        try:
            # tried again too: a write that went through with its answer lost is refused the
            # second time (412), and the caller reads the object again (record_snapshots)
            with self._errors("write", name):
                answer = self._patiently(
                    "write",
                    lambda: self._client.put_object(
                        Bucket=self.location.bucket, Key=key, Body=body, **condition
                    ),
                )
        except DestinationError as exc:
            cause = exc.__cause__
            if isinstance(cause, bexc.ClientError) and (
                _code(cause) in _PRECONDITION_CODES or _status(cause) == 412
            ):
                raise PreconditionFailed(name) from cause
            if version is not None and isinstance(exc, ObjectNotFound):
                raise PreconditionFailed(name) from cause
            raise
        return str(answer["ETag"])

    def _put_multipart(self, name: str, key: str, view: memoryview) -> None:
        """Upload ``view`` in parts; abort the upload (best effort) on any failure."""
        bucket = self.location.bucket
        part_size = max(self.tuning.part_size, -(-len(view) // _MAX_PARTS))
        # journaled before it exists: a process killed while the server creates the upload
        # leaves a journal naming its key, and the next job finds the upload by that key
        journal = self._journal_write(None, key, None)
        try:
            with self._errors("write", name):
                upload_id = self._patiently(
                    "write", lambda: self._client.create_multipart_upload(Bucket=bucket, Key=key)
                )["UploadId"]
        except BaseException:
            self._journal_remove(journal)
            raise
        self._journal_write(journal, key, upload_id)
        try:
            with self._errors("write", name):
                parts = []
                for number, start in enumerate(range(0, len(view), part_size), start=1):
                    part = view[start : start + part_size]
                    answer = self._patiently(
                        "write",
                        functools.partial(
                            self._client.upload_part,
                            Bucket=bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=_ViewReader(part),
                        ),
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if self._abort(key, upload_id):
                self._journal_remove(journal)
            # else the journal stays: once this process is gone, the next job or verify of
            # this agent aborts the upload (remove_stale_temporaries)
            raise
        self._journal_remove(journal)

    def _abort(self, key: str, upload_id: str) -> bool:
        """Abort one multipart upload (best effort); returns whether the server did."""
        try:
            self._client.abort_multipart_upload(
                Bucket=self.location.bucket, Key=key, UploadId=upload_id
            )
        except (bexc.BotoCoreError, bexc.ClientError) as exc:
            log.warning(
                "could not abort the S3 upload of %s in %s (%s); the next backup or verify "
                "aborts it",
                key,
                self,
                _one_line(exc),
            )
            return False
        return True

    @staticmethod
    def _journal_remove(path: Path | None) -> None:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _journal_write(self, path: Path | None, key: str, upload_id: str | None) -> Path | None:
        """Write (``path`` ``None``: a new one) the journal file of a multipart upload of
        ``key``, its ``upload_id`` once known; ``None`` without a journal (or when it cannot be
        written: logged; the age rule of ``remove_stale_temporaries`` then catches the
        upload)."""
        if self.journal_dir is None:
            return None
        path = path or self.journal_dir / f"s3-upload-{secrets.token_hex(8)}.json"
        doc = {
            "bucket": self.location.bucket,
            "endpoint": self.location.endpoint,
            "key": key,
            "upload_id": upload_id,
            "pid": os.getpid(),
            "started": int(time.time()),
        }
        try:
            self.journal_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, json.dumps(doc).encode("utf-8"), fsync=False)
        except OSError as exc:
            log.warning("cannot write the S3 upload journal %s: %s", path, exc)
            return None
        return path

    def delete(self, name: str) -> None:
        """See ``Storage.delete`` (S3 deletes are idempotent)."""
        key = self._key(name)
        with self._errors("delete", name):
            self._patiently(
                "delete", lambda: self._client.delete_object(Bucket=self.location.bucket, Key=key)
            )

    # Upkeep ------------------------------------------------------------------------------

    def remove_stale_temporaries(self, older_than: float = 3600.0) -> int:
        """Abort the multipart uploads nobody will finish; returns how many were aborted:
        every upload of this bucket (and endpoint) in the journal whose process is gone
        (any age; its journal file is removed), and every upload under the prefix started
        more than ``older_than`` seconds ago (a live ``put`` of a pack takes far less than
        the default hour). Raises ``DestinationError`` when the uploads cannot be listed."""
        done: set[str] = set()
        for upload_id in self._abort_orphans():
            done.add(upload_id)
        limit = time.time() - older_than
        with self._errors("clean up", "/"):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.location.bucket, Prefix=self._root
            )
            for page in pages:
                for up in page.get("Uploads", ()):
                    if up["UploadId"] in done or up["Initiated"].timestamp() >= limit:
                        continue
                    if self._abort(up["Key"], up["UploadId"]):
                        done.add(up["UploadId"])
        return len(done)

    def _abort_orphans(self) -> Iterator[str]:
        """Abort the journaled uploads of dead processes; yields their upload IDs."""
        if self.journal_dir is None or not self.journal_dir.is_dir():
            return
        for path in sorted(self.journal_dir.glob(_JOURNAL_GLOB)):
            try:
                doc = json.loads(path.read_bytes())
                ours = (doc["bucket"], doc["endpoint"]) == (
                    self.location.bucket,
                    self.location.endpoint,
                )
                if not ours or _pid_alive(int(doc["pid"])):
                    continue
                key, started = str(doc["key"]), float(doc["started"])
                known = doc["upload_id"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the unreadable S3 upload journal %s: %s", path, exc)
                continue
            ids = (str(known),) if known else self._uploads_of(key, since=started - 300)
            for upload_id in ids:
                try:
                    self._client.abort_multipart_upload(
                        Bucket=self.location.bucket, Key=key, UploadId=upload_id
                    )
                    yield upload_id
                except bexc.ClientError as exc:
                    if _code(exc) not in ("NoSuchUpload", "404"):
                        raise self._translate(exc, "clean up", key) from exc
                except bexc.BotoCoreError as exc:
                    raise self._translate(exc, "clean up", key) from exc
            self._journal_remove(path)

    def _uploads_of(self, key: str, *, since: float) -> tuple[str, ...]:
        """The IDs of the multipart uploads of exactly ``key`` started at or after ``since``
        (epoch seconds): those of a journal written before its upload's ID was known."""
        with self._errors("clean up", key):
            found = self._client.list_multipart_uploads(Bucket=self.location.bucket, Prefix=key)
        return tuple(
            str(up["UploadId"])
            for up in found.get("Uploads", ())
            if up["Key"] == key and up["Initiated"].timestamp() >= since
        )

    def check_writable(self) -> None:
        """Check that objects can be stored here: write a probe key (``<prefix>/.opencbs-
        probe-<random>``, never listed as an object) and delete it. Raises
        ``DestinationError`` saying what failed: the bucket does not exist, the server is
        unreachable, or :class:`S3CredentialsRejected`."""
        key = f"{self._root}{_PROBE}{secrets.token_hex(8)}"
        with self._errors("write a probe in"):
            self._client.put_object(Bucket=self.location.bucket, Key=key, Body=b"")
            self._client.delete_object(Bucket=self.location.bucket, Key=key)


#: Longest pause between two tries of ``S3Storage._patiently`` (seconds).
_MAX_PAUSE = 15.0
#: Error codes of answers that say "try again": the server busy, throttling, a timeout.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestTimeTooSkewed",
    }
)


class _ViewReader(io.RawIOBase):
    """A seekable, read-only file over a ``memoryview``: the body of a request read without
    copying the pack (16 MiB) first; boto3 seeks back to send it again on a retry."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


def _transient(exc: Exception) -> bool:
    """Whether a boto3 failure may pass by itself: the server unreachable or the connection
    cut, a 5xx answer, throttling or a timeout (not a refusal: 4xx)."""
    if isinstance(exc, bexc.ClientError):
        status = _status(exc)
        return _code(exc) in _TRANSIENT_CODES or (status is not None and status >= 500)
    if isinstance(exc, bexc.SSLError):
        return False  # TLS refused (https to an http server, a bad certificate): no passing fault
    return isinstance(exc, _UNREACHABLE + (bexc.ResponseStreamingError,))


def _code(exc: bexc.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: bexc.ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None
