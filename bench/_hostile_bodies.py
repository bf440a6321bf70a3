"""Hostile-load cases about request bodies, nesting and secrets (cases 1, 2, 3, 7, 8 of
``bench/hostile.py``; not a public entry). Every request goes to 127.0.0.1, bounded in size and
time."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
from _hostile_env import (
    JOB_START_MS,
    MONITOR,
    OWNER,
    OWNER_PWD,
    Fixture,
    Recorder,
    RssSampler,
    Sent,
    Server,
    attacker_address,
    client,
    report_entries,
    stream_request,
)

UNAUTH_BODY = 60 * 10**6
CHUNKED_BODY = 300 * 10**6
GOAL_RSS_MIB = 64.0
MAX_BATCH_ENTRIES = 10_000
NEST_DEPTH = 320


@dataclass(frozen=True)
class Ctx:
    """What a case works with: the running server, the fixture, the case's recorder, the
    database URL of the case's copy."""

    server: Server
    fx: Fixture
    rec: Recorder
    url: str


def _basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def _head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def batch_body(size: int, *, path_len: int, entries: int | None = None) -> Iterator[bytes]:
    """A batch body ``{"entries": [...]}`` of exactly ``size`` bytes (padded with spaces),
    in chunks of about 1 MiB: the same block of entries repeated (``entries`` of them when
    given, else as many as fit)."""
    one = [json.dumps(e, separators=(",", ":")) for e in report_entries(64, 7, path_len)]
    block = ",".join(one).encode()
    per_block = len(one)
    opening, closing = b'{"entries":[', b"]}"
    room = size - len(opening) - len(closing)
    yield opening
    made = written = 0
    pending = b""
    while True:
        want = per_block if entries is None else min(per_block, entries - made)
        if want <= 0:
            break
        part = block if want == per_block else ",".join(one[:want]).encode()
        piece = (b"," if made else b"") + part
        if written + len(pending) + len(piece) > room:
            break
        pending += piece
        made += want
        if len(pending) >= 1 << 20:
            yield pending
            written, pending = written + len(pending), b""
    yield pending
    written += len(pending)
    pad = room - written
    while pad > 0:
        n = min(pad, 1 << 20)
        yield b" " * n
        pad -= n
    yield closing


def _send_batch(ctx: Ctx, path: str, auth: str | None, size: int, body: Iterator[bytes]) -> Sent:
    headers = {"Content-Type": "application/json", "Content-Length": str(size)}
    if auth is not None:
        headers["Authorization"] = auth
    head = _head("PUT", path, ctx.server.port, headers)
    return stream_request(ctx.server.port, head, body, limit_s=30, source=attacker_address(0))


def _answer(rec: Recorder, sent: Sent) -> None:
    rec.status(sent.status if sent.status is not None else "none")
    rec.add(
        "answer",
        sent.status,
        f"{sent.status or 'none'} after {sent.sent / 1e6:.0f} MB sent in {sent.seconds:.1f} s "
        f"({sent.stopped}) {sent.excerpt}",
    )


def _unauth_put(ctx: Ctx, auth: str | None, size: int) -> tuple[Sent, float]:
    """A batch PUT of ``size`` bytes with ``auth`` (None: no Authorization header); its result
    and the server's RSS growth meanwhile (MiB)."""
    path = f"{ctx.fx.jobs_path}/{ctx.fx.job_id}/batches/0"
    with RssSampler(ctx.server.pid) as rss:
        sent = _send_batch(ctx, path, auth, size, batch_body(size, path_len=200))
        time.sleep(1.0)
    ctx.rec.status(sent.status if sent.status is not None else "none")
    return sent, rss.growth_mib()


def case_unauth_batch(ctx: Ctx) -> None:
    """1. Unauthenticated PUTs of a batch (entries with 200-character paths, Content-Length
    declared), in turn: a 2 KB one with wrong Basic credentials (the cost of one password
    check: argon2 at its memory cost), 60 MB without credentials, 60 MB with wrong
    credentials → the server's RSS growth: < 64 MiB without credentials, and < 64 MiB beyond
    the password check with wrong ones."""
    wrong = _basic(OWNER, "wrong-password")
    small, check = _unauth_put(ctx, wrong, 2_000)
    bare, bare_mib = _unauth_put(ctx, None, UNAUTH_BODY)
    big, big_mib = _unauth_put(ctx, wrong, UNAUTH_BODY)
    ctx.rec.add(
        "answers: 2 KB wrong / 60 MB none / 60 MB wrong",
        big.status,
        f"{small.status or 'none'} / {bare.status or 'none'} / {big.status or 'none'} "
        f"(60 MB wrong: {big.sent / 1e6:.0f} MB sent in {big.seconds:.1f} s, {big.stopped}) "
        + big.excerpt,
    )
    ctx.rec.add(
        "RSS growth MiB, 2 KB, wrong password (the check)", round(check, 1), f"{check:+.0f}"
    )
    ctx.rec.add(
        "RSS growth MiB, 60 MB, no credentials",
        round(bare_mib, 1),
        f"{bare_mib:+.0f}",
        goal=f"< {GOAL_RSS_MIB:.0f}",
        passed=bare_mib < GOAL_RSS_MIB,
    )
    extra = big_mib - check
    ctx.rec.add(
        "RSS growth MiB, 60 MB, wrong password, beyond the check",
        round(extra, 1),
        f"{extra:+.0f} ({big_mib:+.0f} in all)",
        goal=f"< {GOAL_RSS_MIB:.0f}",
        passed=extra < GOAL_RSS_MIB,
    )


def _chunked(total: int) -> Iterator[bytes]:
    """``total`` bytes of a JSON-looking body in 1 MiB chunks of chunked transfer coding."""
    pad = b"A" * (1 << 20)
    first = b'{"SysUser":"hostile","Pad":"' + pad[28:]
    sent = 0
    while sent < total:
        data = first if sent == 0 else pad
        yield f"{len(data):x}\r\n".encode() + data + b"\r\n"
        sent += len(data)
    yield b"0\r\n\r\n"


def case_chunked_cbs(ctx: Ctx) -> None:
    """2. A 300 MB chunked CBS body (no Content-Length) to GetBackupJobReportSummary, sent
    until the server answers or closes (at most 20 s) → the server's RSS growth."""
    head = _head(
        "POST",
        "/obs/api/json/GetBackupJobReportSummary.do",
        ctx.server.port,
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    with RssSampler(ctx.server.pid) as rss:
        sent = stream_request(
            ctx.server.port, head, _chunked(CHUNKED_BODY), limit_s=20, source=attacker_address(1)
        )
        time.sleep(1.0)
    _answer(ctx.rec, sent)
    rss.record(ctx.rec, goal_mib=GOAL_RSS_MIB)


def _start_job(ctx: Ctx) -> str:
    with client() as c:
        r = c.post(
            ctx.server.base + ctx.fx.jobs_path,
            json={"start_time": JOB_START_MS + 3_600_000, "run_version": "hostile"},
            auth=(OWNER, OWNER_PWD),
        )
    ctx.rec.status(r.status_code)
    if r.status_code != 201:
        raise RuntimeError(f"starting a job: {r.status_code} {r.text[:200]}")
    return str(r.json()["job_id"])


def case_auth_max_batch(ctx: Ctx) -> None:
    """3. An authenticated batch of the most entries (10,000) with ~5,800-character paths
    (~60 MB); on 413 the paths are halved and it is sent again (3 tries) → RSS growth
    (reported; the < 64 MiB goal is for unauthenticated requests)."""
    job = _start_job(ctx)
    path = f"{ctx.fx.jobs_path}/{job}/batches/0"
    path_len, tries = 5_800, []
    with RssSampler(ctx.server.pid) as rss:
        for _ in range(3):
            size = MAX_BATCH_ENTRIES * (path_len + 150)
            body = batch_body(size, path_len=path_len, entries=MAX_BATCH_ENTRIES)
            sent = _send_batch(ctx, path, _basic(OWNER, OWNER_PWD), size, body)
            ctx.rec.status(sent.status if sent.status is not None else "none")
            tries.append(f"{size / 1e6:.0f} MB → {sent.status or 'none'}")
            if sent.status != 413:
                break
            path_len //= 2
        time.sleep(1.0)
    ctx.rec.add("answers (body → status)", sent.status, "; ".join(tries))
    rss.record(ctx.rec)


SECRET_VARIANTS = {
    "SysPwd": "SysPwd",
    "Sys%50wd": "Sys%50wd",
    "%53%79%73%50%77%64": "%53%79%73%50%77%64",
    "Pass%77ord (AuthUser)": "Pass%77ord",
}


def case_secret_in_log(ctx: Ctx) -> None:
    """7. GET requests carrying a unique secret as ``SysPwd`` spelled plainly and
    percent-encoded (``Sys%50wd``, every letter encoded) and as AuthUser's
    ``Pass%77ord`` → which secrets appear in the server's log (stderr)."""
    leaked = []
    with client() as c:
        for i, (label, key) in enumerate(SECRET_VARIANTS.items()):
            secret = f"HOSTILE-SECRET-{i}-{time.time_ns()}"
            call = "AuthUser" if "Pass" in key else "GetBackupJobReportSummary"
            query = f"SysUser={MONITOR}&{key}={secret}&LoginName={OWNER}"
            r = c.get(f"{ctx.server.base}/obs/api/json/{call}.do?{query}")
            ctx.rec.status(r.status_code)
            time.sleep(0.3)
            if secret in ctx.server.log_text():
                leaked.append(label)
    ctx.rec.add(
        "secrets in the server log",
        len(leaked),
        f"{len(leaked)}/{len(SECRET_VARIANTS)}" + (f" ({', '.join(leaked)})" if leaked else ""),
        goal="0",
        passed=not leaked,
    )


def _status(rec: Recorder, send: Callable[[httpx.Client], httpx.Response]) -> int | str:
    """The status of one request on a new connection ("closed" when the server dropped it,
    "timeout" after 20 s), counted in ``rec``."""
    try:
        with client(timeout=20) as c:
            code: int | str = send(c).status_code
    except httpx.TimeoutException:
        code = "timeout"
    except httpx.TransportError:
        code = "closed"
    rec.status(code)
    return code


def case_deep_nesting(ctx: Ctx) -> None:
    """8. PATCH a destination's settings nested 320 deep over the agent API, then list the
    sets → status codes (goal: the PATCH refused with a 4xx, the listing 200)."""
    nested = '{"n":' * NEST_DEPTH + "1" + "}" * NEST_DEPTH
    body = '{"settings":{"deep":' + nested + "}}"
    base = f"{ctx.server.base}/api/agent/v1/backup-sets"
    auth = (OWNER, OWNER_PWD)
    patch = _status(
        ctx.rec,
        lambda c: c.patch(
            f"{base}/{ctx.fx.set_id}/destinations/{ctx.fx.dest_id}",
            content=body,
            headers={"Content-Type": "application/json"},
            auth=auth,
        ),
    )
    listing = _status(ctx.rec, lambda c: c.get(base, auth=auth))
    ctx.rec.add(
        f"PATCH nested {NEST_DEPTH} deep",
        patch,
        str(patch),
        goal="4xx",
        passed=isinstance(patch, int) and 400 <= patch < 500,
    )
    ok = listing == 200
    ctx.rec.add("then list sets", listing, str(listing), goal="200", passed=ok)
