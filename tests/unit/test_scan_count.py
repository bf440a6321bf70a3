"""The totals counted ahead (``engine.scan_count``): the same files and bytes as the backup's
walk would find, with the same filters, from a real helper process."""

from __future__ import annotations

import time
from pathlib import Path

from opencbs.engine.scan import ScanFilter
from opencbs.engine.scan_count import TotalCount


def test_the_count_is_the_regular_files_and_bytes_the_filters_keep(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"x" * 10)
    (src / "sub" / "b.bin").write_bytes(b"y" * 1000)
    (src / "sub" / "skip.tmp").write_bytes(b"z" * 5)
    (src / "link").symlink_to("a.txt")  # not a regular file: not counted
    cache = src / "cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    (cache / "big").write_bytes(b"c" * 5000)  # a cache's contents are left out
    count = TotalCount([str(src)], ScanFilter.of(exclude=["*.tmp"]))
    try:
        deadline = time.monotonic() + 30
        while not count.done:
            assert time.monotonic() < deadline, "the count never ended"
            time.sleep(0.01)
    finally:
        count.close()
    tag = len(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    assert (count.files, count.bytes) == (3, 10 + 1000 + tag)


def test_a_closed_count_ends_its_helper(tmp_path: Path) -> None:
    count = TotalCount([str(tmp_path)], ScanFilter())
    count.close()
    count.close()  # twice is harmless
