"""Memory of the previous snapshot's file index during classification (issue 4, item 3).

Run from the project root::

    .venv/bin/python bench/agent_memory.py             # 10,000 and 100,000 files
    .venv/bin/python bench/agent_memory.py 1000000     # other counts

For each count N: a previous snapshot of N regular files (100 per directory, distinct 32-byte
contents) is committed to an in-memory repository, then the job's streaming pass is replayed as
``agent.backup`` runs it — ``load_snapshot`` streamed, ``pair_by_path`` against the scan, the
previous entry's chunk list held until its pair is handled, ``classify_pairs`` — and, when the
classification wants copy sources, the second streaming pass ``resolve_sources`` over the
previous snapshot. Two scans: ``unchanged`` (the same entries) and ``copies`` (the same, plus
N/100 new paths whose content is that of a previous file: every one a ``cpy`` naming its source).

Figures are tracemalloc bytes per previous-snapshot file, after the base (the scan's entries
are built before tracing starts: they are the scan's, not the index's): ``retained`` when the
classification is done (its result included), ``peak`` the most held at any time. The goal
(issue 4): at most about 150 bytes per previous file.
"""

from __future__ import annotations

import io
import sys
import tracemalloc
from collections.abc import Iterator

from opencbs.destinations.memory import MemoryStorage
from opencbs.engine import classify as classify_module
from opencbs.engine.classify import Classification, classify_pairs, pair_by_path, path_sort_key
from opencbs.engine.crypto import KdfParams
from opencbs.engine.entries import Entry
from opencbs.engine.repository import Repository, SnapshotMeta
from opencbs.reports.vocabulary import EntryType, ReportList


def _entries(n: int) -> list[Entry]:
    out: list[Entry] = []
    for d in range(max(1, n // 100)):
        dp = b"/data/src/dir%04d" % d
        out.append(Entry(dp, EntryType.DIRECTORY, 0, 1, 1, 0o755, 0, 0, 10_000_000 + d, 1))
        for i in range(min(100, n)):
            k = d * 100 + i
            out.append(
                Entry(
                    dp + b"/file-%06d.txt" % k,
                    EntryType.FILE,
                    100,
                    2,
                    2,
                    0o644,
                    0,
                    0,
                    k + 1,
                    1,
                    content_id=(k + 1).to_bytes(32, "big"),
                )
            )
    out.sort(key=lambda e: path_sort_key(e.path))
    return out


def _copies(items: list[Entry]) -> list[Entry]:
    """The scan with one new file per 100 previous ones, each a copy of a previous file."""
    files = [e for e in items if e.etype is EntryType.FILE]
    extra = [
        Entry(
            e.path + b".copy",
            EntryType.FILE,
            e.size,
            3,
            3,
            0o644,
            0,
            0,
            50_000_000 + i,
            1,
            content_id=e.content_id,
        )
        for i, e in enumerate(files[::100])
    ]
    return sorted(items + extra, key=lambda e: path_sort_key(e.path))


def measure(n: int) -> list[tuple[str, int, float, float]]:
    """``(scan, changes, retained B/file, peak B/file)`` for the two scans of ``n`` files."""
    storage = MemoryStorage()
    repo = Repository.init(storage, "pw", kdf=KdfParams(1, 8 * 1024, 1))
    writer = repo.writer()
    chunks = tuple(writer.add_file(io.BytesIO(b"x" * 100)).chunk_ids)
    writer.flush()
    items = _entries(n)
    files = sum(e.etype is EntryType.FILE for e in items)
    snap = repo.commit_snapshot(
        SnapshotMeta(
            time_ns=1,
            set_id="1",
            destination_id="2",
            job_id="j",
            hostname="h",
            sources=(b"/data/src",),
            parent_id=None,
        ),
        ((e, chunks) for e in items),
    )
    rows = []
    for name, scan in (("unchanged", items), ("copies", _copies(items))):
        reopened = Repository.open(storage, "pw")
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        result = _classify(reopened, snap, scan)
        if name == "copies":
            copies = result.of_kind(ReportList.CPY)
            assert len(copies) == len(scan) - len(items), "every extra file is a copy"
            assert all(c.from_path == c.entry.path[: -len(b".copy")] for c in copies)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append((name, len(result.changes), (cur - base) / files, (peak - base) / files))
        del result
    return rows


def _classify(repo: Repository, snap: str, scan: list[Entry]) -> Classification:
    prev_chunks: dict[bytes, tuple[bytes, ...]] = {}

    def previous() -> Iterator[Entry]:
        for entry, chunk_ids in repo.load_snapshot(snap)[1]:
            prev_chunks[entry.path] = chunk_ids
            yield entry

    def pairs() -> Iterator[tuple[Entry | None, Entry | None]]:
        for p, c in pair_by_path(previous(), iter(scan)):
            if p is not None:
                prev_chunks.pop(p.path, None)
            yield p, c

    result = classify_pairs(pairs(), frozenset)
    resolve = getattr(classify_module, "resolve_sources", None)  # absent before issue 4
    if resolve is not None and result.sources_wanted:
        result = resolve(result, (e for e, _ in repo.load_snapshot(snap)[1]))
    return result


def main(argv: list[str]) -> None:
    counts = [int(a) for a in argv] or [10_000, 100_000]
    print(f"{'files':>9} {'scan':<10} {'changes':>8} {'retained B/file':>16} {'peak B/file':>12}")
    for n in counts:
        for name, changes, retained, peak in measure(n):
            print(f"{n:>9,} {name:<10} {changes:>8,} {retained:>16.1f} {peak:>12.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
