"""The S3 destination's own behaviour, on real servers (SeaweedFS with SigV4, and moto):
multipart uploads and their abort and journal, stale uploads cleaned up, credentials from the
standard places, and every failure a ``DestinationError`` naming the destination. The Storage
contract itself is test_destinations.py's, run on both servers too."""

from __future__ import annotations

import http.server
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import botocore.exceptions as bexc
import pytest

from opencbs.destinations import DestinationError, ObjectNotFound
from opencbs.destinations.s3 import (
    MIN_PART_SIZE,
    S3Credentials,
    S3CredentialsRejected,
    S3Storage,
    S3Tuning,
)
from opencbs.model.destinations import S3Location
from tests import s3server
from tests.s3server import MotoS3, SeaweedS3

s3_server = s3server.s3_server
moto_server = s3server.moto_server
BUCKET = "s3-specific"
Server = SeaweedS3 | MotoS3
#: Multipart from 5 MiB on, in 5 MiB parts (S3's smallest): an 11 MiB object has 3 parts.
SMALL_PARTS = S3Tuning(
    retry_seconds=0, max_attempts=2, multipart_threshold=MIN_PART_SIZE, part_size=MIN_PART_SIZE
)


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue(
        "s3_server" if request.param == "seaweedfs" else "moto_server"
    )
    found.ensure_bucket(BUCKET)
    return found


def _location(server: Server, bucket: str = BUCKET) -> S3Location:
    return S3Location.checked(bucket, f"p-{secrets.token_hex(5)}/repo", server.endpoint, "")


def _storage(server: Server, **kwargs: Any) -> S3Storage:
    kwargs.setdefault("tuning", SMALL_PARTS)
    location = kwargs.pop("location", None) or _location(server)
    return S3Storage(location, S3Credentials(server.access_key, server.secret_key), **kwargs)


def _uploads(server: Server, prefix: str = "") -> list[dict[str, Any]]:
    answer = server.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return list(answer.get("Uploads", []))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_large_object_goes_up_in_parts_and_reads_back(server: Server, tmp_path: Path) -> None:
    storage = _storage(server, journal_dir=tmp_path / "journal")
    data = os.urandom(11 * 1024 * 1024)
    storage.put("data/ab/pack", memoryview(data))
    assert storage.get("data/ab/pack") == data
    assert storage.get_range("data/ab/pack", MIN_PART_SIZE - 3, 6) == data[MIN_PART_SIZE - 3 :][:6]
    assert list(storage.list_sizes("data/")) == [("data/ab/pack", len(data))]
    _data, etag = storage.get_versioned("data/ab/pack")
    assert etag.strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert _uploads(server, storage.location.prefix) == []
    assert list((tmp_path / "journal").iterdir()) == []


def test_a_failed_multipart_upload_is_aborted(server: Server, tmp_path: Path) -> None:
    storage = _storage(server, journal_dir=tmp_path / "journal")
    journaled: list[dict[str, Any]] = []

    def fail_second_part(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 2:
            journaled.extend(json.loads(p.read_bytes()) for p in (tmp_path / "journal").iterdir())
            raise bexc.ConnectionClosedError(endpoint_url=server.endpoint)

    storage._client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    storage.put("small", b"single put")
    with pytest.raises(DestinationError) as info:
        storage.put("data/pack", os.urandom(11 * 1024 * 1024))
    assert storage.location.url in info.value.message and server.endpoint in info.value.message
    assert not isinstance(info.value, bexc.BotoCoreError)
    assert _uploads(server, storage.location.prefix) == []
    assert not storage.exists("data/pack")
    [entry] = journaled  # the journal named the open upload while it ran, then went
    assert entry["key"] == f"{storage.location.prefix}/data/pack"
    assert entry["pid"] == os.getpid() and entry["bucket"] == BUCKET
    assert list((tmp_path / "journal").iterdir()) == []


def test_stale_uploads_are_aborted(server: Server, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    storage = _storage(server, journal_dir=journal)
    prefix = storage.location.prefix
    raw = server.client()

    def open_upload(key: str) -> str:
        return str(raw.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"])

    orphan = open_upload(f"{prefix}/data/orphan")  # its process was killed
    fresh = open_upload(f"{prefix}/data/fresh")  # a live put elsewhere, not journaled here
    outside = open_upload(f"elsewhere-{secrets.token_hex(4)}/x")
    for name, upload_id, key, pid in [
        ("dead", orphan, f"{prefix}/data/orphan", _dead_pid()),
        ("alive", fresh, f"{prefix}/data/fresh", os.getpid()),
    ]:
        doc = {"bucket": BUCKET, "endpoint": server.endpoint, "key": key, "upload_id": upload_id}
        doc |= {"pid": pid, "started": 0}
        (journal / f"s3-upload-{name}.json").write_text(json.dumps(doc))
    if isinstance(server, MotoS3):
        # moto says every upload was initiated on 2010-11-10: all are an hour old.
        assert storage.remove_stale_temporaries() == 2
        assert _uploads(server, prefix) == []
        fresh = open_upload(f"{prefix}/data/fresh")
    else:
        assert storage.remove_stale_temporaries() == 1
    assert {u["UploadId"] for u in _uploads(server, prefix)} == {fresh}
    assert sorted(p.name for p in journal.iterdir()) == ["s3-upload-alive.json"]
    # Older than the limit (here: any age), whoever started it; only under the prefix.
    assert storage.remove_stale_temporaries(older_than=-60) == 1
    assert _uploads(server, prefix) == []
    assert outside in {u["UploadId"] for u in _uploads(server)}
    raw.abort_multipart_upload(Bucket=BUCKET, Key=_uploads(server)[0]["Key"], UploadId=outside)


def test_an_upload_killed_before_its_id_was_journaled_is_found_by_its_key(
    s3_server: SeaweedS3, tmp_path: Path
) -> None:
    """A process killed while the server created its upload left a journal with no upload ID:
    the upload is found by its key (started after the journal) and aborted."""
    journal = tmp_path / "journal"
    journal.mkdir()
    s3_server.ensure_bucket(BUCKET)
    storage = _storage(s3_server, journal_dir=journal)
    key = f"{storage.location.prefix}/data/killed-early"
    doc = {"bucket": BUCKET, "endpoint": s3_server.endpoint, "key": key, "upload_id": None}
    doc |= {"pid": _dead_pid(), "started": int(time.time())}
    (journal / "s3-upload-early.json").write_text(json.dumps(doc))
    raw = s3_server.client()
    raw.create_multipart_upload(Bucket=BUCKET, Key=key)
    other = raw.create_multipart_upload(Bucket=BUCKET, Key=key + "-other")["UploadId"]
    assert storage.remove_stale_temporaries() == 1
    assert {u["UploadId"] for u in _uploads(s3_server, storage.location.prefix)} == {other}
    assert list(journal.iterdir()) == []
    raw.abort_multipart_upload(Bucket=BUCKET, Key=key + "-other", UploadId=other)


def test_is_empty_and_check_writable(server: Server) -> None:
    storage = _storage(server)
    assert storage.is_empty()
    storage.check_writable()
    assert storage.is_empty()  # the probe is gone
    server.client().put_object(Bucket=BUCKET, Key=f"{storage.location.prefix}/.hidden", Body=b"")
    assert not storage.is_empty()  # someone else's key, even one that is no object name
    assert list(storage.list()) == []


def test_a_missing_bucket_is_named(server: Server) -> None:
    storage = _storage(server, location=_location(server, "no-such-bucket-here"))
    for call in (storage.check_writable, lambda: storage.get("x"), lambda: storage.put("x", b"")):
        with pytest.raises(DestinationError) as info:
            call()
        assert not isinstance(info.value, ObjectNotFound)
        assert "bucket no-such-bucket-here does not exist" in info.value.message
        assert server.endpoint in info.value.message and info.value.hint


def test_a_wrong_secret_is_refused_by_seaweedfs(s3_server: SeaweedS3) -> None:
    """(moto accepts any signature: this one runs on SeaweedFS only.)"""
    s3_server.ensure_bucket(BUCKET)
    location = _location(s3_server)
    storage = S3Storage(location, S3Credentials(s3_server.access_key, "not-the-secret"))
    for call in (storage.check_writable, lambda: storage.get("x"), lambda: list(storage.list())):
        with pytest.raises(S3CredentialsRejected) as info:
            call()
        assert info.value.code == "destination_credentials"
        assert f"refused the credentials for {location}" in info.value.message
        assert "AWS_SECRET_ACCESS_KEY" in info.value.hint
        assert "not-the-secret" not in info.value.message


def test_an_unreachable_server_is_named() -> None:
    port = s3server.free_ports(1)[0]
    location = S3Location.checked("bucket", "p", f"http://127.0.0.1:{port}", "")
    storage = S3Storage(
        location, S3Credentials("k", "s"), tuning=S3Tuning(retry_seconds=0, max_attempts=1)
    )
    for call in (storage.check_writable, lambda: storage.get("x"), storage.is_empty):
        with pytest.raises(DestinationError) as info:
            call()
        assert "Cannot reach the S3 server at" in info.value.message
        assert str(location.url) in info.value.message and "--s3-endpoint" in info.value.hint


def test_credentials_from_the_environment_and_a_profile(
    s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_server.ensure_bucket(BUCKET)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    shared = tmp_path / "credentials"
    shared.write_text(
        f"[backup]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    S3Storage(_location(s3_server), S3Credentials(profile="backup")).check_writable()
    monkeypatch.setenv("AWS_PROFILE", "backup")
    S3Storage(_location(s3_server)).check_writable()  # the default chain: AWS_PROFILE
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    S3Storage(_location(s3_server)).check_writable()  # the default chain: environment
    with pytest.raises(S3CredentialsRejected, match="profile 'nope'"):
        S3Storage(_location(s3_server), S3Credentials(profile="nope"))
    monkeypatch.setenv("AWS_PROFILE", "nope")  # explicit keys do not care
    S3Storage(
        _location(s3_server), S3Credentials(s3_server.access_key, s3_server.secret_key)
    ).check_writable()
    monkeypatch.delenv("AWS_PROFILE")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(S3CredentialsRejected, match="No S3 credentials found"):
        S3Storage(_location(s3_server)).check_writable()


def test_secrets_are_never_shown_or_logged(
    s3_server: SeaweedS3, caplog: pytest.LogCaptureFixture
) -> None:
    s3_server.ensure_bucket(BUCKET)
    creds = S3Credentials(s3_server.access_key, s3_server.secret_key, "session-token-value")
    assert s3_server.secret_key not in repr(creds) + str(creds)
    assert "session-token-value" not in repr(creds)
    caplog.set_level(logging.DEBUG)
    storage = _storage(s3_server)
    storage.put("x", b"1")
    assert storage.get("x") == b"1"
    assert s3_server.secret_key not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("botocore")]
    assert logging.getLogger("botocore").getEffectiveLevel() >= logging.WARNING


def test_a_killed_server_is_unreachable_then_serves_again_after_restart(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "weed")
    server.start()
    try:
        server.make_bucket("restart")
        location = S3Location.checked("restart", "r", server.endpoint, "")
        creds = S3Credentials(server.access_key, server.secret_key)
        storage = S3Storage(
            location, creds, tuning=S3Tuning(retry_seconds=0, max_attempts=1, connect_timeout=2)
        )
        storage.put("kept", b"survives a crash")
        server.kill()
        with pytest.raises(DestinationError, match="Cannot reach the S3 server"):
            storage.get("kept")
        server.start()
        # just started, SeaweedFS answers 500 until its volume server has reported: the
        # patient retry (retry_seconds) waits that out
        patient = S3Storage(location, creds, tuning=S3Tuning(retry_seconds=30))
        assert patient.get("kept") == b"survives a crash"
    finally:
        server.stop()


class _SlowDown(http.server.BaseHTTPRequestHandler):
    """An S3 server that always answers 503 SlowDown (throttled), counting requests."""

    requests = 0

    def _answer(self) -> None:
        type(self).requests += 1
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *_: Any) -> None:
        pass


def test_throttling_is_retried_then_reported_in_one_line() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowDown)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        location = S3Location.checked("bucket", "p", endpoint, "")
        storage = S3Storage(
            location, S3Credentials("k", "s"), tuning=S3Tuning(retry_seconds=0, max_attempts=3)
        )
        with pytest.raises(DestinationError) as info:
            storage.get("x")
        assert _SlowDown.requests == 3
        assert str(location) in info.value.message and "SlowDown" in info.value.message
        assert "\n" not in info.value.message and info.value.hint
    finally:
        server.shutdown()
        server.server_close()


class _BusyThenServes(http.server.BaseHTTPRequestHandler):
    """An S3 server that answers 503 SlowDown to its first ``busy`` requests, then the object
    (a GET) for good: a server restarting or throttling for a while."""

    requests = 0
    busy = 4

    def do_GET(self) -> None:
        type(self).requests += 1
        if type(self).requests <= type(self).busy:
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"
            self.send_response(503)
        else:
            body = b"the object"
            self.send_response(200)
            self.send_header("ETag", '"e"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_busy_server_is_tried_again_for_retry_seconds() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenServes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        location = S3Location.checked("bucket", "p", endpoint, "")
        # boto3's own tries (2) end before the server serves again; the patient retry does not
        patient = S3Tuning(retry_seconds=30, max_attempts=2)
        storage = S3Storage(location, S3Credentials("k", "s"), tuning=patient)
        assert storage.get("x") == b"the object"
        assert _BusyThenServes.requests == 5
    finally:
        server.shutdown()
        server.server_close()


def test_tls_refused_is_not_waited_for_and_a_server_gone_fails_the_rest_at_once() -> None:
    from opencbs.destinations import s3

    assert not s3._transient(bexc.SSLError(endpoint_url="https://h", error="wrong version"))
    assert s3._transient(bexc.EndpointConnectionError(endpoint_url="http://h"))
    port = s3server.free_ports(1)[0]
    location = S3Location.checked("bucket", "p", f"http://127.0.0.1:{port}", "")
    patient = S3Tuning(retry_seconds=2, max_attempts=1, connect_timeout=1)
    storage = S3Storage(location, S3Credentials("k", "s"), tuning=patient)
    started = time.monotonic()
    with pytest.raises(DestinationError, match="Cannot reach"):
        storage.get("a")  # waits its retry_seconds
    assert time.monotonic() - started >= 1.5
    started = time.monotonic()
    with pytest.raises(DestinationError, match="Cannot reach"):
        storage.get("b")  # the server stayed away a whole retry_seconds: no second wait
    assert time.monotonic() - started < 1.0


def test_an_upload_whose_abort_failed_stays_journaled_until_its_process_is_gone(
    s3_server: SeaweedS3, tmp_path: Path
) -> None:
    """The review of issue 13: the journal entry went even when the abort failed (the server
    down), so only the one-hour rule could catch the upload."""
    s3_server.ensure_bucket(BUCKET)
    journal = tmp_path / "journal"
    storage = _storage(s3_server, journal_dir=journal)

    def cut(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber", 0) == 2 or "PartNumber" not in params:
            raise bexc.ConnectionClosedError(endpoint_url=s3_server.endpoint)

    events = storage._client.meta.events
    events.register("before-parameter-build.s3.UploadPart", cut)
    events.register("before-parameter-build.s3.AbortMultipartUpload", cut)
    with pytest.raises(DestinationError):
        storage.put("data/pack", os.urandom(11 * 1024 * 1024))
    [left] = _uploads(s3_server, storage.location.prefix)
    [path] = journal.iterdir()
    assert json.loads(path.read_bytes())["upload_id"] == left["UploadId"]
    fresh = _storage(s3_server, journal_dir=journal, location=storage.location)
    assert fresh.remove_stale_temporaries() == 0  # its process (this one) still runs
    doc = json.loads(path.read_bytes()) | {"pid": _dead_pid()}
    path.write_text(json.dumps(doc))
    assert fresh.remove_stale_temporaries() == 1
    assert _uploads(s3_server, storage.location.prefix) == [] and not path.exists()
