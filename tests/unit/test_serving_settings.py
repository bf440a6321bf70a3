"""The settings of a server facing the network (timeouts, connections, TLS, proxies, pool) and
the agent's CA file: defaults, layers, refusals; the TLS context and the agent's verification
built from them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from opencbs.agent.client import tls_verify
from opencbs.api.serve import tls_context, trusted_proxies, uvicorn_config
from opencbs.errors import ConfigError
from opencbs.settings import load_settings


def test_defaults() -> None:
    s = load_settings()
    assert (s.header_timeout, s.body_timeout, s.keepalive_timeout, s.max_connections) == (
        10.0,
        30.0,
        5.0,
        1000,
    )
    assert (s.tls_certificate, s.tls_key, s.trusted_proxies, s.ca_file) == ("", "", "", "")
    assert (s.db_pool_size, s.db_max_overflow, s.db_pool_timeout) == (8, 8, 10.0)


def test_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nheader_timeout = 4\ndb_pool_size = 20\n[agent]\nca_file = "/x"\n')
    monkeypatch.setenv("OPENCBS_BODY_TIMEOUT", "12.5")
    monkeypatch.setenv("OPENCBS_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/24")
    s = load_settings({"keepalive_timeout": 3}, config=config)
    assert (s.header_timeout, s.body_timeout, s.keepalive_timeout) == (4.0, 12.5, 3.0)
    assert (s.db_pool_size, s.ca_file) == (20, "/x")
    assert trusted_proxies(s.trusted_proxies) == ["10.0.0.1", "192.168.0.0/24"]


@pytest.mark.parametrize(
    ("name", "value", "flag"),
    [
        ("header_timeout", "0", "--header-timeout"),
        ("body_timeout", "-1", "--body-timeout"),
        ("max_connections", "0", "--max-connections"),
        ("db_pool_size", "0", "OPENCBS_DB_POOL_SIZE"),
        ("db_max_overflow", "-1", "OPENCBS_DB_MAX_OVERFLOW"),
        ("trusted_proxies", "10.0.0.1,proxy.example", "--trusted-proxies"),
    ],
)
def test_bad_values_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, flag: str
) -> None:
    monkeypatch.setenv("OPENCBS_" + name.upper(), value)
    with pytest.raises(ConfigError, match=f"invalid setting {name}") as err:
        load_settings()
    assert flag in err.value.hint


def test_uvicorn_gets_the_bounds() -> None:
    s = load_settings({"header_timeout": 3, "body_timeout": 4, "max_connections": 50})
    config = uvicorn_config(lambda *a: None, s, tls=None, log_level="INFO")  # type: ignore[arg-type]
    config.load()
    protocol = config.http_protocol_class
    assert (protocol.header_timeout, protocol.body_timeout) == (3, 4)  # type: ignore[attr-defined]
    assert (config.limit_concurrency, config.timeout_keep_alive) == (50, 5.0)
    assert config.proxy_headers is False and config.ssl is None


def test_tls_context_and_agent_verification(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_pem = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    assert tls_context("", "") is None
    context = tls_context(str(cert), str(key))
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls_verify("") is True
    verify = tls_verify(str(ca_pem))
    assert isinstance(verify, ssl.SSLContext) and verify.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="cannot use the CA file"):
        tls_verify(str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cannot use the CA file"):
        tls_verify(str(key))  # a key, no certificate


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="encrypted"):
        tls_context(str(cert), str(key))
