"""The server facing the network, as a real ``opencbs serve`` process spoken to over real
sockets: read timeouts (slow headers, stalled bodies, idle connections), the server's own pages
(``/``, ``/healthz``, ``/readyz``, ``/docs`` served offline), trusted reverse proxies, and
TLS (``--tls-certificate`` / ``--tls-key``, the agent's ``--ca-file``).

Bounds here are generous: each says "within the timeout plus a few seconds", never "fast".
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import trustme

from tests.e2e.serving import OPENCBS, free_port, isolated_env, ok, run

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLACK = 4.0  # seconds allowed beyond a timeout (a loaded 2-core machine)


@dataclass(frozen=True)
class Running:
    url: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], **client: object) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError("server exited: " + proc.stderr.read().decode())
        try:
            httpx.get(url + "/healthz", timeout=1, **client)  # type: ignore[arg-type]
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start within 30 s")


def _start(env: dict[str, str], *args: str, scheme: str = "http", **client: object) -> Running:
    port = free_port()
    proc = subprocess.Popen(
        [OPENCBS, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, **client)
    except BaseException:
        _stop(proc)
        raise
    return Running(url, port, env, proc)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop the server; its stderr (the log)."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.stderr is not None
    log = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    env = isolated_env(tmp_path_factory.mktemp("serving"))
    running = _start(
        env,
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--keepalive-timeout",
        "2",
    )
    try:
        yield running
    finally:
        _stop(running.proc)


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reads whatever it answers first); fails if it
    is still open after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection is still open after {seconds} s")
    return time.monotonic() - start


def _health_answer(sock: socket.socket) -> bytes:
    """The whole answer to one ``GET /healthz`` on a kept-alive connection."""
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    return answer


# --- read timeouts -------------------------------------------------------------------------


def test_headers_sent_one_byte_a_second_are_cut_off(server: Running) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 40 + b"\r\n\r\n"
    start = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(1.0)
            try:
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass  # still open: one more byte next second
        assert closed, "the server waited for the whole slow request"
    assert time.monotonic() - start < HEADER_TIMEOUT + SLACK


def test_a_connection_that_sends_nothing_is_closed(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert _closed_within(sock, HEADER_TIMEOUT + SLACK) >= HEADER_TIMEOUT - 0.5


def test_an_idle_keepalive_connection_is_closed_and_a_slow_next_request_cut(
    server: Running,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        for _ in range(3):  # requests on one connection, a pause between them
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _health_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(1.0)
        assert _closed_within(sock, 2 + SLACK) >= 0.5  # the keep-alive timeout (2 s)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert _health_answer(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /hea")  # the next request begins, then stalls
        assert _closed_within(sock, HEADER_TIMEOUT + SLACK) < HEADER_TIMEOUT + SLACK


def test_headers_beyond_the_size_bound_are_refused_with_431(server: Running) -> None:
    rss_before = psutil.Process(server.proc.pid).memory_info().rss
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            while sent < 64 << 20:  # would be 64 MiB of headers
                sock.sendall(line * 64)
                sent += len(line) * 64
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    grown = psutil.Process(server.proc.pid).memory_info().rss - rss_before
    assert sent < 64 << 20, "the server kept reading"
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB"
    if answer:  # (a reset can reach us before the answer does)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200


def test_a_stalled_body_is_dropped_with_408(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /obs/api/json/AuthSystemUser.do HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"SysUser": '
        )
        sock.settimeout(BODY_TIMEOUT + SLACK)
        start = time.monotonic()
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < BODY_TIMEOUT + SLACK
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_slow_body_that_keeps_coming_is_served(server: Running) -> None:
    """The body timeout is an idle timeout: pieces 1 s apart, longer in all than the timeout."""
    body = b'{"SysUser": "nobody", "SysPwd": "wrong"}'
    pieces = [body[i : i + 10] for i in range(0, len(body), 10)]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /obs/api/json/AuthSystemUser.do HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for piece in pieces:
            time.sleep(1.0)
            sock.sendall(piece)
        sock.settimeout(30)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert len(pieces) * 1.0 > BODY_TIMEOUT
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b'"Status":"Error"' in answer  # the CBS answer to wrong credentials


def test_the_server_still_answers_after_the_slow_clients(server: Running) -> None:
    r = httpx.post(
        server.url + "/obs/api/json/AuthSystemUser.do",
        json={"SysUser": "nobody", "SysPwd": "x"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["Status"] == "Error"


# --- the server's own pages ------------------------------------------------------------------


def test_home_page_names_the_apis_and_docs(server: Running) -> None:
    r = httpx.get(server.url + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for text in ("opencbs", "/obs/api/json/", "/api/agent/v1/", "/docs", "/openapi.json"):
        assert text in r.text, text


def test_healthz_and_readyz(server: Running) -> None:
    health = httpx.get(server.url + "/healthz", timeout=30)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = httpx.get(server.url + "/readyz", timeout=30)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_docs_are_served_from_the_server_itself(server: Running) -> None:
    page = httpx.get(server.url + "/docs", timeout=30)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""", page.text)
    found = [a or b for a, b in urls]
    assert len(found) >= 4, found  # css, icon, script, the schema
    assert not re.search(r"https?://", page.text), "the docs page names another host"
    for url in found:
        assert url.startswith("/"), url
        r = httpx.get(server.url + url, timeout=30)
        assert r.status_code == 200 and r.content, url
    assert "/docs/static/swagger-ui-bundle.js" in found


# --- reverse proxies ------------------------------------------------------------------------


def test_forwarded_address_believed_only_from_trusted_proxies(
    tmp_path: Path, server: Running
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    env = isolated_env(tmp_path)
    trusting = _start(env, "--trusted-proxies", "127.0.0.1")
    try:
        assert httpx.get(trusting.url + "/healthz", headers=forwarded, timeout=30).is_success
    finally:
        log = _stop(trusting.proc)
    assert '203.0.113.7:0 - "GET /healthz' in log or '203.0.113.7 - "GET /healthz' in log, log
    untrusting = _start(env)
    try:
        assert httpx.get(untrusting.url + "/healthz", headers=forwarded, timeout=30).is_success
    finally:
        log = _stop(untrusting.proc)
    assert "203.0.113.7" not in log, log


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    other = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(root / "key.pem"))
    other.private_key_pem.write_to_path(str(root / "other-key.pem"))
    return Pki(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "other-key.pem")


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, *texts: str) -> None:
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("opencbs: error: "), lines
    assert lines[1].startswith("hint: "), lines
    for text in texts:
        assert text in res.stderr, (text, res.stderr)


def test_tls_server_and_agent_with_its_ca_file(tmp_path: Path, pki: Pki) -> None:
    env = isolated_env(tmp_path / "server")
    ok(env, "user", "add", "alice", "--password-stdin", stdin="alice-pw\n")
    verify = ssl.create_default_context(cafile=str(pki.ca))
    running = _start(
        env,
        "--tls-certificate",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        scheme="https",
        verify=verify,
    )
    try:
        assert httpx.get(running.url + "/readyz", verify=verify, timeout=30).is_success
        with pytest.raises(httpx.TransportError):  # not plain HTTP any more
            httpx.get(running.url.replace("https:", "http:") + "/healthz", timeout=5)
        src, dest = tmp_path / "src", tmp_path / "dest"
        src.mkdir()
        (src / "a.txt").write_text("alpha\n")
        agent = {
            **isolated_env(tmp_path / "agent"),
            "OPENCBS_SERVER_URL": running.url,
            "OPENCBS_LOGIN_NAME": "alice",
            "OPENCBS_PASSWORD": "alice-pw",
            "OPENCBS_ENCRYPTION_PASSWORD": "repo-secret",
        }
        backup = ["backup", "--set", "docs", "--source", str(src), "--destination", str(dest)]
        # without the CA: the server's certificate cannot be verified; a first backup stops
        _one_line_error(
            run(agent, *backup), 7, "cannot verify the TLS certificate", "--ca-file", "ca_file"
        )
        # with it (flag, then environment): the backup reports to the server over TLS
        done = run(agent, *backup, "--ca-file", str(pki.ca))
        assert done.returncode == 0, done.stderr
        again = run({**agent, "OPENCBS_CA_FILE": str(pki.ca)}, "backup", "--set", "docs")
        assert again.returncode == 0, again.stderr
        assert "spooled" not in done.stderr + again.stderr
        sets = httpx.get(
            running.url + "/api/agent/v1/backup-sets",
            auth=("alice", "alice-pw"),
            verify=verify,
            timeout=30,
        ).json()
        assert [s["name"] for s in sets] == ["docs"]
        _one_line_error(
            run(agent, *backup, "--ca-file", str(tmp_path / "missing.pem")), 2, "CA file"
        )
    finally:
        log = _stop(running.proc)
    assert f"serving on https://127.0.0.1:{running.port}" in log, log


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing-cert", "cannot read the tls_certificate file"),
        ("missing-key", "cannot read the tls_key file"),
        ("mismatch", "the key does not match the certificate"),
        ("only-cert", "tls_certificate is set but tls_key is not"),
        ("not-pem", "holds no PEM certificate"),
        ("key-not-pem", "holds no PEM private key"),
    ],
)
def test_unusable_tls_files_stop_serve_before_it_serves(
    tmp_path: Path, pki: Pki, which: str, message: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    files = {
        "missing-cert": [
            "--tls-certificate",
            str(tmp_path / "nope.pem"),
            "--tls-key",
            str(pki.key),
        ],
        "missing-key": ["--tls-certificate", str(pki.cert), "--tls-key", str(tmp_path / "no.pem")],
        "mismatch": ["--tls-certificate", str(pki.cert), "--tls-key", str(pki.other_key)],
        "only-cert": ["--tls-certificate", str(pki.cert)],
        "not-pem": ["--tls-certificate", str(junk), "--tls-key", str(junk)],
        "key-not-pem": ["--tls-certificate", str(pki.cert), "--tls-key", str(pki.cert)],
    }[which]
    env = isolated_env(tmp_path)
    res = run(env, "serve", "--port", str(free_port()), *files)
    _one_line_error(res, 2, message)
    assert not (tmp_path / "data" / "opencbs.db").exists()  # stopped before the database


def test_beyond_max_connections_requests_get_503_at_once(tmp_path: Path) -> None:
    running = _start(isolated_env(tmp_path), "--max-connections", "3")
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(3)]
        try:
            time.sleep(0.5)  # accepted by the server
            busy = httpx.get(running.url + "/healthz", timeout=30)
            assert busy.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 10
        while (r := httpx.get(running.url + "/healthz", timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, "still refused 10 s after the others left"
            time.sleep(0.2)
        assert r.status_code == 200
    finally:
        _stop(running.proc)


def _connect_from(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_one_address_cannot_hold_every_connection(tmp_path: Path) -> None:
    """One client holding idle connections used to get every other client 503 (max_connections
    reached): now it may hold max_connections_per_address; more are reset at once, and the
    other addresses, probes included, are served."""
    running = _start(
        isolated_env(tmp_path), "--max-connections", "8", "--max-connections-per-address", "4"
    )
    try:
        hog = [_connect_from(running.port, "127.0.0.2") for _ in range(4)]
        try:
            time.sleep(0.5)  # accepted by the server
            extra = _connect_from(running.port, "127.0.0.2")
            assert _closed_within(extra, 5) < 5  # reset at once
            extra.close()
            r = httpx.get(running.url + "/healthz", timeout=10)
            assert r.status_code == 200  # another address (127.0.0.1) is served
        finally:
            for sock in hog:
                sock.close()
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
            deadline = time.monotonic() + 10
            while True:  # once its connections close, the address is served again
                try:
                    if c.get(running.url + "/healthz", timeout=10).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the address is still refused"
                time.sleep(0.2)
    finally:
        log = _stop(running.proc)
    assert log.count("client 127.0.0.2 holds 4 connections: further ones are refused") == 1
