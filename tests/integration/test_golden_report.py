"""The vendor's example job comes back from GetBackupJobReport exactly (cbs-api.md §5)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import ADMIN, VENDOR_EXAMPLE, VendorJob

# Every key of cbs-api.md §5, in order.
REPORT_KEYS = [
    "ID",
    "FromIp",
    "SuccessDatabase",
    "MissedDatabase",
    "SuccessPublicFolder",
    "MissedPublicFolder",
    "Logs",
    "NumOfNewFiles",
    "NumOfNewDirCount",
    "NumOfNewLinkDirCount",
    "NumOfNewLinkFileCount",
    "NumOfDeletedDirCount",
    "NumOfDeletedLinkFileCount",
    "TotalNewFilesSize",
    "TotalUnzipNewFilesSize",
    "NewFilesZipRatio",
    "NumOfUpdatedFiles",
    "TotalUpdatedFilesSize",
    "TotalUnzipUpdatedFilesSize",
    "UpdatedFilesZipRatio",
    "UpdatedFilesZipRation",
    "NumOfUpdatedPermissionFiles",
    "TotalUpdatedPermissionFilesSize",
    "TotalUnzipUpdatedPermissionFilesSize",
    "UpdatedPermissionFilesZipRatio",
    "NumOfDeletedFiles",
    "TotalDeletedFilesSize",
    "TotalUnzipDeletedFilesSize",
    "DeletedFilesZipRatio",
    "NumOfMovedFiles",
    "TotalMovedFilesSize",
    "TotalUnzipMovedFilesSize",
    "MovedFilesZipRatio",
    "NumOfCopiedFiles",
    "TotalCopiedSize",
    "TotalUnzipCopiedFilesSize",
    "CopiedFilesZipRatio",
    "StartTime",
    "EndTime",
    "BackupJobStatus",
    "NumOfWarnEntries",
    "NumOfErrorEntries",
    "DedupeEnabled",
    "DedupeOriginalSize",
    "DedupeSaving",
    "info",
    "new",
    "upd",
    "pmt",
    "del",
    "mov",
    "cpy",
]

ARRAYS = {"Logs", "info", "new", "upd", "pmt", "del", "mov", "cpy"}


def _request(job: VendorJob) -> dict[str, str]:
    return {
        "SysUser": ADMIN[0],
        "SysPwd": ADMIN[1],
        "LoginName": job.login_name,
        "Owner": "",
        "BackupSetID": job.set_id,
        "DestinationID": job.destination_id,
        "BackupJobID": job.job_id,
        "Cdp": "false",
    }


def test_vendor_example_comes_back_exactly(client: TestClient, vendor_job: VendorJob) -> None:
    expected = json.loads(VENDOR_EXAMPLE.read_text())["Data"]
    r = client.post("/obs/api/json/GetBackupJobReport.do", json=_request(vendor_job))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert body["Status"] == "OK"
    data = body["Data"]
    assert list(data) == REPORT_KEYS
    assert data["NewFilesZipRatio"] == "33%"
    for key, value in expected.items():
        if key == "MovedFilesZipRatio":
            # the vendor's page prints "05", a typo; the rule of §4 gives "0%"
            assert data[key] == "0%"
            continue
        assert data[key] == value, key
    assert data["UpdatedFilesZipRation"] == data["UpdatedFilesZipRatio"] == "0%"
    assert data["info"] == data["Logs"] == expected["Logs"]
    for key in ARRAYS - {"Logs", "info"}:
        assert data[key] == []


def test_vendor_example_summary(client: TestClient, vendor_job: VendorJob) -> None:
    r = client.post("/obs/api/json/GetBackupJobReportSummary.do", json=_request(vendor_job))
    data = r.json()["Data"]
    assert list(data) == [k for k in REPORT_KEYS if k not in ARRAYS]
    assert data["TotalNewFilesSize"] == 6827033
    assert data["NumOfNewFiles"] == 1169
    assert data["DedupeEnabled"] is True
