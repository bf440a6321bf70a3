"""The scan run in a helper process (``engine.scan_process``): the very walk of ``Scan`` —
entries, warnings, order and incomplete directories — over a real pipe from a real child."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from opencbs.engine import scan_process
from opencbs.engine.scan import Scan, ScanFilter, ScanWarning
from opencbs.engine.scan_process import ScanAborted, ScanProcess
from tests.unit.test_scan import src  # noqa: F401  (the fixture: a small tree)


def _many(tmp_path: Path, dirs: int = 4, files: int = 300) -> bytes:
    """``dirs`` x ``files`` files with long names: 40 directories make ~2.6 MB of records,
    more than the pipe and the parent's read buffer hold, so the child is still writing."""
    root = tmp_path / "many"
    for d in range(dirs):
        (root / f"d{d:02d}").mkdir(parents=True)
        for f in range(files):
            (root / f"d{d:02d}" / f"f{f:04d}-{'n' * 100}").write_bytes(b"")
    return os.fsencode(root)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _many(tmp_path_factory.mktemp("big"), dirs=40)


def test_same_items_in_the_same_order_as_scan(src: bytes, tmp_path: Path) -> None:  # noqa: F811
    missing = os.fsencode(tmp_path / "no-such-source")
    many = _many(tmp_path)  # several messages of 1,024 records
    sources = [src, missing, many]
    filters = ScanFilter.of(exclude=["*/cache"])
    expected = list(Scan(sources, filters))
    local = Scan(sources, filters)
    list(local)
    process = ScanProcess(sources, filters)
    assert not process.finished
    got = list(process)
    assert got == expected  # entries and warnings, in walk order
    assert any(isinstance(i, ScanWarning) and i.path == missing for i in got)
    assert process.finished and process.incomplete_dirs == local.incomplete_dirs == {missing}
    assert process.completed_dirs == local.completed_dirs
    assert process.sources == local.sources
    with pytest.raises(RuntimeError):
        iter(process)


def test_filters_with_includes_reach_the_child(src: bytes) -> None:  # noqa: F811
    filters = ScanFilter.of(include=["*/deep*"])
    assert list(ScanProcess([src], filters)) == list(Scan([src], filters))


def test_without_a_helper_the_walk_runs_here(
    src: bytes,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(scan_process.sys, "executable", str(tmp_path / "no-such-python"))
    process = ScanProcess([src])
    assert list(process) == list(Scan([src]))
    assert process.finished and process.incomplete_dirs == frozenset()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The helper processes ``ScanProcess`` starts, as they start."""
    procs: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def spy(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real(*args, **kwargs)  # type: ignore[call-overload]
        procs.append(proc)
        return proc  # type: ignore[no-any-return]

    monkeypatch.setattr(scan_process.subprocess, "Popen", spy)
    return procs


def test_a_helper_that_dies_mid_walk_is_an_error(
    big: bytes, started: list[subprocess.Popen[bytes]]
) -> None:
    items = iter(ScanProcess([big]))
    next(items)
    started[0].send_signal(signal.SIGKILL)
    with pytest.raises(ScanAborted, match="ended early"):
        for _ in items:
            pass


def test_leaving_the_walk_early_stops_the_helper(
    big: bytes, started: list[subprocess.Popen[bytes]]
) -> None:
    items = iter(ScanProcess([big]))
    next(items)
    items.close()  # a cancelled job stops iterating
    assert started[0].returncode is not None  # killed and reaped, not left behind


def test_modules_in_the_current_directory_are_not_imported(
    src: bytes,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The helper starts with ``-P``: a ``types.py`` where the backup is started neither runs
    nor breaks the scan."""
    here = tmp_path / "project"
    here.mkdir()
    marker = tmp_path / "ran"
    (here / "types.py").write_text(f"open({str(marker)!r}, 'w')\nraise ImportError('x')\n")
    monkeypatch.chdir(here)
    assert list(ScanProcess([src])) == list(Scan([src]))
    assert not marker.exists()
