"""Cache folders (``CACHEDIR.TAG``, https://bford.info/cachedir/) in the scan, in this process
and in the scan's helper process: a folder with a valid tag is backed up as the folder and its
tag only; a tag without the signature, a tag that is a link or a folder are ordinary entries;
``ScanFilter(exclude_caches=False)`` backs the cache up whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opencbs.engine.entries import Entry
from opencbs.engine.scan import CACHEDIR_SIGNATURE, Scan, ScanFilter
from opencbs.engine.scan_process import ScanProcess


def _tree(root: Path) -> bytes:
    (root / "cache" / "deep").mkdir(parents=True)
    (root / "cache" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a comment\n")
    (root / "cache" / "blob").write_bytes(b"x")
    (root / "cache" / "deep" / "more").write_bytes(b"y")
    (root / "plain").mkdir()
    (root / "plain" / "CACHEDIR.TAG").write_bytes(b"Signature: something else\n")
    (root / "plain" / "kept").write_bytes(b"z")
    (root / "linked").mkdir()
    os.symlink(root / "cache" / "CACHEDIR.TAG", root / "linked" / "CACHEDIR.TAG")
    (root / "linked" / "kept").write_bytes(b"w")
    (root / "dirtag" / "CACHEDIR.TAG").mkdir(parents=True)
    (root / "dirtag" / "kept").write_bytes(b"v")
    (root / "short").mkdir()
    (root / "short" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE[:-1])
    (root / "short" / "kept").write_bytes(b"u")
    return os.fsencode(root)


def _names(scan: Scan | ScanProcess, root: bytes) -> list[str]:
    return [os.fsdecode(e.path[len(root) :]) for e in scan if isinstance(e, Entry)]


@pytest.mark.parametrize("walker", [Scan, ScanProcess])
def test_a_tagged_folder_keeps_only_its_tag(tmp_path: Path, walker: type[Scan]) -> None:
    root = _tree(tmp_path / "src")
    scan = walker([root])
    assert _names(scan, root) == [
        "",
        "/cache",
        "/cache/CACHEDIR.TAG",
        "/dirtag",
        "/dirtag/CACHEDIR.TAG",
        "/dirtag/kept",
        "/linked",
        "/linked/CACHEDIR.TAG",
        "/linked/kept",
        "/plain",
        "/plain/CACHEDIR.TAG",
        "/plain/kept",
        "/short",
        "/short/CACHEDIR.TAG",
        "/short/kept",
    ]
    assert scan.incomplete_dirs == frozenset()


@pytest.mark.parametrize("walker", [Scan, ScanProcess])
def test_exclude_caches_off_backs_the_cache_up(tmp_path: Path, walker: type[Scan]) -> None:
    root = _tree(tmp_path / "src")
    names = _names(walker([root], ScanFilter(exclude_caches=False)), root)
    assert {"/cache/blob", "/cache/deep", "/cache/deep/more"} <= set(names)


def test_a_tagged_source_keeps_only_its_tag(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cache = root + b"/cache"
    assert _names(Scan([cache]), cache) == ["", "/CACHEDIR.TAG"]
