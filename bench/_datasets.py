"""Deterministic (seeded) data sets of the agent benchmark (``bench/agent.py``).

- ``build_mixed(root, total_bytes, seed)``: set (a), about ``total_bytes`` of mixed files under
  ``root``: 30 % text (log-like lines, compressible ~4x), 25 % synthetic binaries (blocks of
  random, low-entropy, zero-padded and counter-table bytes, compressible ~2x), 20 % already
  compressed (gzip and zstd output of such text and binaries), 25 % random. File sizes are
  log-uniform from 1 KiB to 2 MiB, 3 % of them from 4 to 32 MiB (random: to 64 MiB): about
  1,700 files a GiB, in 48 directories. Returns the
  manifest ``{relative path: sha256 hex}`` used to check restores.
- ``SmallTree(root, files, seed)``: sets (b)-(d), ``files`` small files (0.1-8 KiB, log-uniform;
  70 % text, 30 % random) in about ``files / 33`` leaf directories (``t??/m??/l????``).
  ``build()`` writes it; ``touch(fraction)`` rewrites that fraction of the files (new content,
  new size within the range, new mtime), deterministically; ``untouch()`` puts them back.

Every file gets a fixed mtime (2024-01-01 plus its index in seconds), so a tree rebuilt or
reused looks the same to every tool. A tree is reused when its ``.manifest.json`` (next to it)
names the same version, seed and size; otherwise it is deleted and rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
from array import array
from pathlib import Path
from typing import Any

VERSION = 1
BASE_MTIME = 1_704_067_200  # 2024-01-01 00:00:00 UTC
TOUCH_MTIME = BASE_MTIME + 30_000_000
KIB, MIB = 1024, 1024 * 1024

_LETTERS = "etaoinshrdlucmfwypvbgkqjxz"
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
# a byte table that maps random bytes to 16 values: a ~4-bit/byte "opcode" stream
_LOW_ENTROPY = bytes(
    (
        0x00,
        0x48,
        0x89,
        0x8B,
        0xE8,
        0xFF,
        0x0F,
        0x85,
        0x74,
        0xC3,
        0x24,
        0x44,
        0x01,
        0x08,
        0x10,
        0x20,
    )[b & 0x0F]
    for b in range(256)
)


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class TextSource:
    """Log-like text: a timestamp, a level and one of ``distinct`` lines of Zipf-distributed
    words. Compresses about 4x with zstd/lz4-class codecs; never dedups across files."""

    def __init__(self, seed: int, distinct: int = 20_000) -> None:
        rng = random.Random(f"text-vocab:{seed}")
        vocab = ["".join(rng.choices(_LETTERS, k=rng.randint(2, 10))) for _ in range(5_000)]
        weights = [1.0 / (r + 1) for r in range(len(vocab))]
        self.lines = [
            " ".join(rng.choices(vocab, weights, k=rng.randint(4, 14))) for _ in range(distinct)
        ]

    def text(self, rng: random.Random, size: int) -> bytes:
        """``size`` bytes of text drawn with ``rng``."""
        out: list[bytes] = []
        got = 0
        t = rng.randrange(10**9)
        while got < size:
            n = max(16, (size - got) // 70 + 1)
            picked = rng.choices(self.lines, k=n)
            chunk = "".join(
                f"2024-{t + i:010d} {_LEVELS[i % 6]} {line}\n" for i, line in enumerate(picked)
            ).encode()
            t += n
            out.append(chunk)
            got += len(chunk)
        return b"".join(out)[:size]


def binary(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of synthetic executable-like data (compresses ~2x)."""
    blocks: list[bytes] = []
    got = 0
    while got < size:
        kind = rng.random()
        if kind < 0.35:
            block = rng.randbytes(4096)
        elif kind < 0.75:
            block = rng.randbytes(4096).translate(_LOW_ENTROPY)
        elif kind < 0.9:
            block = bytes(3072) + rng.randbytes(1024)
        else:
            start = rng.randrange(1 << 24)
            block = array("I", range(start, start + 1024, 1)).tobytes()
        blocks.append(block)
        got += len(block)
    return b"".join(blocks)[:size]


def _zstd(data: bytes) -> bytes:
    zstd = shutil.which("zstd")
    if zstd is None:
        return gzip.compress(data, compresslevel=6, mtime=0)
    return subprocess.run(
        [zstd, "-3", "-q", "-c"], input=data, capture_output=True, check=True
    ).stdout


def _manifest_ok(manifest: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("params") == params else None


def _fresh(root: Path, manifest: Path) -> None:
    manifest.unlink(missing_ok=True)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def _write(path: Path, data: bytes, mtime: int) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


def build_mixed(root: Path, total_bytes: int, seed: int) -> tuple[dict[str, str], bool]:
    """Set (a) under ``root`` (see the module docstring). Returns (``{relative path: sha256}``,
    whether it was reused)."""
    manifest = root.with_name(root.name + ".manifest.json")
    params = {"version": VERSION, "kind": "mixed", "bytes": total_bytes, "seed": seed}
    found = _manifest_ok(manifest, params)
    if found is not None and root.is_dir():
        return dict(found["files"]), True
    _fresh(root, manifest)
    rng = random.Random(f"mixed:{seed}")
    text = TextSource(seed)
    hashes: dict[str, str] = {}
    plan = (
        ("text", 0.30, 32 * MIB),
        ("bin", 0.25, 32 * MIB),
        ("compressed", 0.20, 32 * MIB),
        ("random", 0.25, 64 * MIB),
    )
    index = 0
    for category, share, biggest in plan:
        budget = int(total_bytes * share)
        while budget > 0:
            big = rng.random() < 0.03
            size = min(
                budget,
                _log_uniform(rng, 4 * MIB, biggest) if big else _log_uniform(rng, KIB, 2 * MIB),
            )
            if category == "text":
                data, ext = text.text(rng, size), "log"
            elif category == "bin":
                data, ext = binary(rng, size), "so"
            elif category == "random":
                data, ext = rng.randbytes(size), "dat"
            elif index % 2:
                data, ext = gzip.compress(text.text(rng, size * 4), 6, mtime=0), "log.gz"
            else:
                data, ext = _zstd(binary(rng, size * 2)), "bin.zst"
            budget -= len(data)
            rel = f"{category}/d{index % 12:02d}/{category}-{index:05d}.{ext}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _write(root / rel, data, BASE_MTIME + index)
            hashes[rel] = hashlib.sha256(data).hexdigest()
            index += 1
    manifest.write_text(json.dumps({"params": params, "files": hashes}))
    return hashes, False


class SmallTree:
    """Sets (b)-(d): many small files in a few thousand directories (module docstring)."""

    def __init__(self, root: Path, files: int, seed: int) -> None:
        self.root, self.files, self.seed = root, files, seed
        self.manifest = root.with_name(root.name + ".manifest.json")
        self.state = root.with_name(root.name + ".touched.json")
        self.params = {"version": VERSION, "kind": "small", "files": files, "seed": seed}
        self.dirs = max(1, files // 33)
        rng = random.Random(f"small:{seed}")
        pool = 8 * MIB
        self.text_pool = TextSource(seed + 1).text(random.Random(f"pool:{seed}"), pool)
        self.random_pool = random.Random(f"rpool:{seed}").randbytes(pool)
        # one (dir, is_text, size, offset) per file, in index order
        self.spec: list[tuple[int, bool, int, int]] = []
        for _ in range(files):
            size = _log_uniform(rng, 100, 8 * KIB)
            self.spec.append(
                (rng.randrange(self.dirs), rng.random() < 0.7, size, rng.randrange(pool - size))
            )

    def path(self, i: int) -> Path:
        d = self.spec[i][0]
        ext = "txt" if self.spec[i][1] else "bin"
        return (
            self.root / f"t{d % 15:02d}" / f"m{d // 15 % 10:02d}" / f"l{d:04d}" / f"f{i:06d}.{ext}"
        )

    def _content(self, i: int, size: int, offset: int) -> bytes:
        pool = self.text_pool if self.spec[i][1] else self.random_pool
        return pool[offset : offset + size]

    def build(self) -> bool:
        """Write the tree unless a matching one is there (then put touched files back).
        Returns whether it was reused."""
        if _manifest_ok(self.manifest, self.params) is not None and self.root.is_dir():
            self.untouch()
            return True
        _fresh(self.root, self.manifest)
        self.state.unlink(missing_ok=True)
        for d in range(self.dirs):
            (self.root / f"t{d % 15:02d}" / f"m{d // 15 % 10:02d}" / f"l{d:04d}").mkdir(
                parents=True, exist_ok=True
            )
        for i, (_, _, size, offset) in enumerate(self.spec):
            _write(self.path(i), self._content(i, size, offset), BASE_MTIME + i)
        self.manifest.write_text(json.dumps({"params": self.params}))
        return False

    def touch(self, fraction: float) -> int:
        """Rewrite ``fraction`` of the files with other content (and size) and a new mtime.
        Returns how many."""
        rng = random.Random(f"touch:{self.seed}")
        chosen = sorted(rng.sample(range(self.files), max(1, int(self.files * fraction))))
        self.state.write_text(json.dumps(chosen))
        for i in chosen:
            size = _log_uniform(rng, 100, 8 * KIB)
            _write(
                self.path(i), self._content(i, size, rng.randrange(8 * MIB - size)), TOUCH_MTIME + i
            )
        return len(chosen)

    def untouch(self) -> None:
        """Put the files of the last ``touch`` back as built (content and mtime)."""
        try:
            chosen: list[int] = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return
        for i in chosen:
            _, _, size, offset = self.spec[i]
            _write(self.path(i), self._content(i, size, offset), BASE_MTIME + i)
        self.state.unlink()


def tree_hashes(root: Path) -> dict[str, str]:
    """``{path relative to root: sha256 hex}`` of every regular file under ``root``."""
    out: dict[str, str] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out
