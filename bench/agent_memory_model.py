"""Memory model of the backup agent: bytes per file and per chunk (issue 15, point 7).

Run from the project root::

    .venv/bin/python bench/agent_memory_model.py                   # 100,000 and 1,000,000 files
    .venv/bin/python bench/agent_memory_model.py --quick           # 10,000 and 100,000 files
    .venv/bin/python bench/agent_memory_model.py --counts 100000,1000000 --peers restic,borg
    .venv/bin/python bench/agent_memory_model.py --peers none --restore-up-to 0 --pythonpath DIR

Data: for each count N a tree of N tiny files (16-512 bytes, distinct contents: each starts with
its index; the rest a seeded slice of a random pool), 100 per leaf directory, 100 leaf
directories per top directory, every file with a fixed mtime. Built once under
``bench/.work/agent/model/tiny-N/`` and reused while its ``.manifest.json`` matches (``TinyTree``).

Runs, per N, each tool into a new repository on local disk (the tools, their settings and the
measuring are ``bench/agent.py``'s: ``Opencbs``, ``Restic``, ``Borg``, ``measure``): ``first``
(a backup of the whole tree, every file new), ``unchanged`` (the same backup again) and, up to
``--restore-up-to`` files, ``restore`` (``opencbs restore`` of the job, ``restic restore
latest``; both checked file by file against the generator). Peak RSS is that of the tool's
process tree (the larger of GNU time's ``%M`` and the sampled sum of the tree's VmRSS); the page
cache is not dropped (memory is the subject here, not wall time).

The model: for each run kind and tool, the line through the peaks at the smallest and largest N
(least squares when there are more than two counts): the slope in bytes per file and the
intercept (the fixed part, MiB). A tiny file is one chunk, so the slope of ``first`` includes
one chunk's index entry; the cost of the chunk index alone is measured in process with
tracemalloc (``ChunkIndex`` of ``opencbs.engine.chunk_index`` filled with N records: bytes per
chunk retained and at the peak) and so is the previous snapshot's file index of an unchanged
re-run (``bench/agent_memory.py``'s ``measure``: bytes per previous file).

Prints one table (N, run, opencbs peak MiB, restic peak MiB, ratio; borg with ``--peers``) and
the model's lines; writes the figures to ``bench/.work/agent/model/last_run.json``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import agent  # noqa: E402
import agent_memory  # noqa: E402
from _datasets import BASE_MTIME, _fresh, _manifest_ok  # noqa: E402

from opencbs.engine.chunk_index import ChunkIndex, Record  # noqa: E402

WORK = agent.WORK / "model"
SEED = 1
VERSION = 1
PER_DIR = 100
DIRS_PER_TOP = 100
MIN_SIZE, MAX_SIZE = 16, 512
POOL_SIZE = 1 << 20
KINDS = ("first", "unchanged", "restore")
PEERS = ("restic", "borg")
MIB = 1024 * 1024


# --- the data ----------------------------------------------------------------------------------


class TinyTree:
    """``files`` tiny files under ``root`` (module docstring); file ``i``'s content and path are
    functions of ``i`` and the seed, so nothing per file is kept in memory."""

    def __init__(self, root: Path, files: int, seed: int = SEED) -> None:
        self.root, self.files, self.seed = root, files, seed
        self.manifest = root.with_name(root.name + ".manifest.json")
        self.params = {"version": VERSION, "kind": "tiny", "files": files, "seed": seed}
        self.pool = hashlib.shake_256(f"tiny-pool:{seed}".encode()).digest(POOL_SIZE)

    def rel(self, i: int) -> str:
        """File ``i``'s path relative to the root."""
        leaf = i // PER_DIR
        return f"t{leaf // DIRS_PER_TOP:04d}/l{leaf:06d}/f{i:07d}"

    def content(self, i: int) -> bytes:
        """File ``i``'s bytes: its index, then a slice of the pool; 16-512 bytes."""
        x = (i * 2654435761 + self.seed * 40503) & 0xFFFFFFFF
        size = MIN_SIZE + x % (MAX_SIZE - MIN_SIZE + 1)
        head = b"%08d\n" % i
        offset = (x >> 9) % (POOL_SIZE - MAX_SIZE)
        return head + self.pool[offset : offset + size - len(head)]

    def build(self) -> bool:
        """Write the tree unless a matching one is there. Returns whether it was reused."""
        if _manifest_ok(self.manifest, self.params) is not None and self.root.is_dir():
            return True
        _fresh(self.root, self.manifest)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for i in range(self.files):
            if i % PER_DIR == 0:
                os.makedirs(self.root / self.rel(i)[: -len("/f0000000")], exist_ok=True)
            fd = os.open(self.root / self.rel(i), flags, 0o644)
            try:
                os.write(fd, self.content(i))
                os.utime(fd, (BASE_MTIME + i, BASE_MTIME + i))
            finally:
                os.close(fd)
        self.manifest.write_text(json.dumps({"params": self.params}))
        return False

    def check(self, restored: Path) -> str:
        """Compare a restored copy of the tree with the generator: ``identical (N files)`` or
        ``DIFFERS: …``."""
        missing = differ = 0
        for i in range(self.files):
            try:
                with open(restored / self.rel(i), "rb") as f:
                    differ += f.read() != self.content(i)
            except OSError:
                missing += 1
        extra = sum(len(names) for _, _, names in os.walk(restored)) - (self.files - missing)
        if missing or differ or extra:
            return f"DIFFERS: {missing} missing, {extra} extra, {differ} different"
        return f"identical ({self.files} files)"


# --- the in-process figures --------------------------------------------------------------------


def _chunk_records(n: int, per_pack: int) -> Iterator[tuple[str, list[Record]]]:
    """``n`` chunk records of tiny chunks in packs of ``per_pack`` (IDs made as they go)."""
    for start in range(0, n, per_pack):
        pack_id = hashlib.sha256(b"pack%d" % start).hexdigest()
        records = []
        offset = 0
        for i in range(start, min(n, start + per_pack)):
            cid = hashlib.sha256(i.to_bytes(8, "little")).digest()
            stored = 60 + i % 480
            records.append((cid, offset, stored + 28, stored, MIN_SIZE + i % 497))
            offset += stored + 28
        yield pack_id, records


def chunk_index_bytes(n: int) -> dict[str, float]:
    """tracemalloc bytes per chunk of a ``ChunkIndex`` holding ``n`` chunks (packs of 40,000
    tiny chunks: a 16 MiB pack of ~400-byte blobs): retained, and at the peak."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = ChunkIndex()
    peak_extra = 0
    for pack_id, records in _chunk_records(n, 40_000):
        index.add_records(pack_id, records)
        del records
        peak_extra = max(peak_extra, tracemalloc.get_traced_memory()[0] - base)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == n
    del index
    return {"chunks": n, "retained_b": (retained - base) / n, "peak_b": (peak - base) / n}


def previous_index_bytes(n: int) -> dict[str, float]:
    """``bench/agent_memory.py``'s figures for ``n`` previous files: bytes per previous file
    retained and at the peak of an unchanged re-run's classification."""
    gc.collect()
    rows = {name: (retained, peak) for name, _, retained, peak in agent_memory.measure(n)}
    retained, peak = rows["unchanged"]
    return {"files": n, "retained_b": retained, "peak_b": peak}


# --- the runs ----------------------------------------------------------------------------------


def run_counts(counts: Sequence[int], work: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of every tool for every count (``bench/agent.py``'s ``Run`` as dicts, ``set``
    = ``N-kind``). ``options``: ``peers`` (names), ``restore_up_to`` (files), ``keep``
    (bool), ``pythonpath`` (a folder holding the ``opencbs`` package to run, or None)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = work / "runs" / stamp
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    opencbs = agent.Opencbs(run_dir, logs, options.get("pythonpath"))
    kinds: dict[str, type[agent.Restic] | type[agent.Borg]] = {
        "restic": agent.Restic,
        "borg": agent.Borg,
    }
    peers = [kinds[p](run_dir, logs) for p in options.get("peers", ("restic",))]
    restore_up_to, keep = options.get("restore_up_to", 1_000_000), options.get("keep", False)
    runs: list[agent.Run] = []
    opencbs.start()
    try:
        for n in counts:
            tree = TinyTree(work / f"tiny-{n}", n)
            t0 = time.perf_counter()
            reused = tree.build()
            print(
                f"{n:,} tiny files {'reused' if reused else 'built'} in "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            runs += _runs_of(tree, run_dir, [opencbs, *peers], restore=n <= restore_up_to)
            if not keep:
                shutil.rmtree(run_dir / "repos", ignore_errors=True)
    finally:
        opencbs.stop()
    if not keep:
        for name in ("agent-home", "restic-cache", "borg-home", "restic-home", "repos"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return [asdict(r) for r in runs]


def _runs_of(
    tree: TinyTree,
    run_dir: Path,
    tools: list[agent.Opencbs | agent.Restic | agent.Borg],
    *,
    restore: bool,
) -> list[agent.Run]:
    n, series = tree.files, f"tiny-{tree.files}"
    runs: list[agent.Run] = []
    for kind in ("first", "unchanged"):
        for tool in tools:
            repo = run_dir / "repos" / f"{tool.name}-{series}"
            r = tool.backup(f"{n}-{kind}", series, tree.root, repo)
            runs.append(r)
            agent._progress(r)
    for tool in [t for t in tools if t.name != "borg"] if restore else ():  # (not borg's)
        target = run_dir / "restored" / tool.name
        r = tool.restore(series, target)
        r.set = f"{n}-restore"
        if r.ok:
            r.note = tree.check(target / tree.root.relative_to("/"))
            r.ok = r.note.startswith("identical")
        runs.append(r)
        agent._progress(r)
        shutil.rmtree(target, ignore_errors=True)
    return runs


# --- the model ---------------------------------------------------------------------------------


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares line ``(bytes per file, intercept MiB)`` through ``(files, peak MiB)``
    points (the line through both when there are two); None with fewer than two counts."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope * MIB, my - slope * mx


def _marginal(rows: Sequence[dict[str, float]], count: str) -> dict[str, float] | None:
    """Bytes per unit between the smallest and the largest count of in-process figures (the
    fixed part cancels out), retained and at the peak; None with fewer than two counts."""
    if len(rows) < 2:
        return None
    lo, hi = rows[0], rows[-1]
    span = hi[count] - lo[count]
    return {
        key: (hi[key] * hi[count] - lo[key] * lo[count]) / span for key in ("retained_b", "peak_b")
    }


def model(doc: dict[str, Any]) -> dict[str, Any]:
    """Bytes per file and intercept per (tool, run kind), from ``doc['runs']``; bytes per chunk
    of the chunk index and per previous file of the previous snapshot's index between the
    smallest and largest count (``chunk_index``, ``previous_index``)."""
    out: dict[str, Any] = {}
    for name, count in (("chunk_index", "chunks"), ("previous_index", "files")):
        marginal = _marginal(doc.get(name, []), count)
        if marginal is not None:
            out[name] = marginal
    for tool in ("opencbs", "restic", "borg"):
        for kind in KINDS:
            points = [
                (int(r["set"].split("-")[0]), r["peak_rss_mib"])
                for r in doc["runs"]
                if r["tool"] == tool and r["set"].endswith("-" + kind) and r["ok"]
            ]
            line = fit(points)
            if line is not None:
                out[f"{tool}/{kind}"] = {"bytes_per_file": line[0], "intercept_mib": line[1]}
    return out


def render(doc: dict[str, Any]) -> None:
    """The table and the model's lines, on stdout."""
    peers = [p for p in ("restic", "borg") if any(r["tool"] == p for r in doc["runs"])]
    by = {(r["set"], r["tool"]): r for r in doc["runs"]}
    head = f"{'N':>9}  {'run':<9} {'opencbs':>8}"
    for p in peers:
        head += f" {p:>8} {'ratio':>6}"
    print(f"\npeak RSS MiB of the tool's process tree ({doc['date']}, opencbs {doc['revision']})")
    print(head + "  opencbs note")
    for n in doc["counts"]:
        for kind in KINDS:
            o = by.get((f"{n}-{kind}", "opencbs"))
            if o is None:
                continue
            line = f"{n:>9,}  {kind:<9} {o['peak_rss_mib']:>8.1f}"
            for p in peers:
                r = by.get((f"{n}-{kind}", p))
                if r is None:
                    line += f" {'':>8} {'':>6}"
                else:
                    ratio = o["peak_rss_mib"] / r["peak_rss_mib"]
                    line += f" {r['peak_rss_mib']:>8.1f} {ratio:>6.2f}"
            print(line + f"  {o['note']}")
    print("\nmodel (peak = intercept + bytes per file x N):")
    for key, m in doc["model"].items():
        if "bytes_per_file" not in m:
            continue
        print(
            f"  {key:<18} {m['bytes_per_file']:>7.0f} B/file  intercept "
            f"{m['intercept_mib']:>6.1f} MiB"
        )
    for c in doc["chunk_index"]:
        print(
            f"  ChunkIndex, {c['chunks']:>9,} chunks: {c['retained_b']:>6.1f} B/chunk retained, "
            f"{c['peak_b']:.1f} at the peak"
        )
    for p in doc["previous_index"]:
        print(
            f"  previous snapshot index, {p['files']:>9,} files: {p['retained_b']:>6.1f} B/file "
            f"retained, {p['peak_b']:.1f} at the peak"
        )
    for name, unit in (("chunk_index", "chunk"), ("previous_index", "previous file")):
        m = doc["model"].get(name)
        if m is not None:
            print(
                f"  {name} between the counts: {m['retained_b']:.1f} B per {unit} retained, "
                f"{m['peak_b']:.1f} at the peak"
            )
    first, chunk = doc["model"].get("opencbs/first"), doc["model"].get("chunk_index")
    if first and chunk:
        print(
            f"  opencbs/first per file without its chunk's index entry: "
            f"{first['bytes_per_file'] - chunk['retained_b']:.0f} B"
        )


def run_model(
    counts: Sequence[int], work: Path, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every run (``run_counts``'s ``options``) and in-process figure for ``counts``; the
    document ``last_run.json`` holds."""
    options = options or {}
    load_before = os.getloadavg()
    runs = run_counts(counts, work, options)
    (work / "runs.partial.json").write_text(json.dumps(runs, indent=2))  # before the slow part
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/agent_memory_model.py", *sys.argv[1:]]),
        "revision": agent._git_rev()
        + (f" (opencbs from {options['pythonpath']})" if options.get("pythonpath") else ""),
        "versions": {
            p: agent._version([p, "version" if p == "restic" else "--version"])
            for p in options.get("peers", ("restic",))
        },
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "counts": list(counts),
        "runs": runs,
        "chunk_index": [chunk_index_bytes(n) for n in counts],
        "previous_index": [previous_index_bytes(n) for n in counts],
    }
    doc["load_after"] = os.getloadavg()
    doc["model"] = model(doc)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--counts",
        default="100000,1000000",
        metavar="N,N",
        help="numbers of tiny files (default 100000,1000000)",
    )
    parser.add_argument("--quick", action="store_true", help="--counts 10000,100000")
    parser.add_argument(
        "--peers",
        default="restic",
        metavar="restic,borg",
        help="the reference tools: restic (default), borg, both, or none",
    )
    parser.add_argument(
        "--pythonpath",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the opencbs package in DIR (e.g. a patched copy of src/) instead of the "
        "editable install",
    )
    parser.add_argument(
        "--restore-up-to",
        type=int,
        default=1_000_000,
        metavar="N",
        help="restore runs only for counts up to N (default 1000000)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=WORK / "last_run.json",
        metavar="FILE",
        help="where the figures go (default bench/.work/agent/model/last_run.json)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the repositories and caches of the run"
    )
    args = parser.parse_args(argv)
    counts = [10_000, 100_000] if args.quick else [int(c) for c in args.counts.split(",")]
    agent.check_peers()
    WORK.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p in PEERS]
    options = {
        "peers": peers,
        "restore_up_to": args.restore_up_to,
        "keep": args.keep,
        "pythonpath": args.pythonpath.resolve() if args.pythonpath else None,
    }
    doc = run_model(sorted(counts), WORK, options)
    args.output.write_text(json.dumps(doc, indent=2))
    render(doc)
    print(f"figures: {args.output}")
    return 0 if all(r["ok"] for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
