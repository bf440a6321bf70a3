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


def test_redacts_secret_names_however_encoded() -> None:
    for name in (
        "Sys%50wd",
        "%53ysPwd",
        "%53%79%73%50%77%64",
        "Sys%2550wd",
        "SYSPWD",
        "sYsPwD",
        "Sys+Pwd",
        "Sys%20Pwd",
        "sys_pwd",
        "PassWord",
        "Pass%77ord",
        "%70assword",
    ):
        target = f"/obs/api/json/X.do?SysUser=a&{name}=s3cr%65t+x&B=1"
        assert redact_target(target) == f"/obs/api/json/X.do?SysUser=a&{name}=***&B=1", name
    assert redact_target("http://h:1/x?a=1&Sys%50wd=v") == "http://h:1/x?a=1&Sys%50wd=***"
    assert redact_target("/x?SysUser=SysPwd&B=SysPwd") == "/x?SysUser=SysPwd&B=SysPwd"
