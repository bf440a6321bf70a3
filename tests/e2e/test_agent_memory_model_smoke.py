"""Smoke test of the agent's memory model (``bench/agent_memory_model.py``, issue 15 point 7):
two tiny trees (100 and 200 files) through a real ``opencbs serve``, real ``opencbs backup`` and
``restore`` runs and ``restic``, so that CI runs the model's code.

It asserts that the trees are what the model says (tiny, distinct, 100 per folder), that every
run succeeded with a peak RSS measured, that both restores match the generator, and that the
model and the in-process figures come out. The full model:
``.venv/bin/python bench/agent_memory_model.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _model():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        import agent_memory_model
    finally:
        sys.path.remove(str(BENCH))
    return agent_memory_model


def test_tiny_tree_is_tiny_distinct_and_checked(tmp_path: Path) -> None:
    m = _model()
    tree = m.TinyTree(tmp_path / "tiny-250", 250)
    assert tree.build() is False
    assert tree.build() is True  # reused while the manifest matches
    files = sorted(p for p in tree.root.rglob("*") if p.is_file())
    assert len(files) == 250
    contents = {p.read_bytes() for p in files}
    assert len(contents) == 250
    assert all(m.MIN_SIZE <= len(c) <= m.MAX_SIZE for c in contents)
    assert len({p.parent for p in files}) == 3  # 100 per folder
    assert tree.check(tree.root) == "identical (250 files)"
    files[7].write_bytes(b"other")
    files[8].unlink()
    assert tree.check(tree.root) == "DIFFERS: 1 missing, 0 extra, 1 different"


def test_memory_model_runs_and_fits(tmp_path: Path) -> None:
    if shutil.which("restic") is None or not Path("/usr/bin/time").exists():
        pytest.skip("restic and GNU time are needed (apt-get install restic time)")
    m = _model()
    doc = m.run_model([100, 200], tmp_path)
    runs = {(r["set"], r["tool"]): r for r in doc["runs"]}
    for n in (100, 200):
        for kind in m.KINDS:
            for tool in ("opencbs", "restic"):
                r = runs[(f"{n}-{kind}", tool)]
                assert r["ok"], r["note"]
                assert r["peak_rss_mib"] > 5
        assert runs[(f"{n}-restore", "opencbs")]["note"] == f"identical ({n} files)"
        assert runs[(f"{n}-first", "opencbs")]["extra"]["counts"]["new"] == n + n // 100 + 2
    lines = {f"{t}/{k}" for t in ("opencbs", "restic") for k in m.KINDS}
    assert set(doc["model"]) == lines | {"chunk_index", "previous_index"}
    for c in doc["chunk_index"]:
        assert 50 < c["retained_b"] <= c["peak_b"] < 2000
    for p in doc["previous_index"]:
        assert 0 <= p["retained_b"] <= p["peak_b"] < 5000
    assert 50 < doc["model"]["chunk_index"]["retained_b"] < 2000
    m.render(doc)
