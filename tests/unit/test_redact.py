"""Secrets in request targets never reach the access log."""

from __future__ import annotations

import logging

from opencbs.api.redact import RedactSecrets, redact_target


def test_redacts_passwords_in_query_strings() -> None:
    assert redact_target("/obs/api/json/X.do?SysUser=a&SysPwd=s3cret&B=1") == (
        "/obs/api/json/X.do?SysUser=a&SysPwd=***&B=1"
    )
    assert redact_target("/x?Password=p%20w&LoginName=u") == "/x?Password=***&LoginName=u"
    assert redact_target("/x?SysPwd=") == "/x?SysPwd=***"
    assert redact_target("/x?NotSysPwd=v&SysPwdX=v") == "/x?NotSysPwd=v&SysPwdX=v"
    assert redact_target("/plain") == "/plain"


def test_filter_rewrites_uvicorn_access_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/obs/api/json/A.do?SysPwd=topsecret", "1.1", 200),
        None,
    )
    assert RedactSecrets().filter(record)
    assert "topsecret" not in record.getMessage() and "SysPwd=***" in record.getMessage()
