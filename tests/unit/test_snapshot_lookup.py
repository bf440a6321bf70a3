"""Snapshot ID prefixes, ``--path`` candidates, ``latest`` and set names of
``agent.snapshot_lookup``; counts in the singular (``reports.wording``)."""

from __future__ import annotations

from typing import cast

import pytest

from opencbs.agent.snapshot_lookup import (
    AmbiguousSnapshot,
    NoSnapshot,
    SeveralSets,
    expand_snapshot_prefix,
    latest_snapshot,
    path_candidates,
    set_ids_named,
    set_label,
    set_names,
)
from opencbs.engine.repository import Repository, SnapshotInfo, SnapshotMeta
from opencbs.reports.wording import plural

IDS = ["abcdef01" + "0" * 56, "abcdef01" + "1" * 56, "12345678" + "2" * 56]


class _Ids:
    def snapshot_ids(self) -> list[str]:
        return IDS


REPO = cast(Repository, _Ids())


def test_a_unique_prefix_is_the_full_id() -> None:
    assert expand_snapshot_prefix(REPO, "12345678") == IDS[2]
    assert expand_snapshot_prefix(REPO, IDS[1][:16]) == IDS[1]


def test_an_ambiguous_prefix_is_an_error_naming_both() -> None:
    with pytest.raises(AmbiguousSnapshot) as caught:
        expand_snapshot_prefix(REPO, "abcdef01")
    assert caught.value.exit_code == 2
    assert IDS[0][:16] in caught.value.message and IDS[1][:16] in caught.value.message


@pytest.mark.parametrize("ref", ["abcdef0", "2024-06-26-13-24-35", IDS[0], "ffffffff"])
def test_others_are_left_alone(ref: str) -> None:
    # too short, a job ID, a full ID, no match: the restore itself resolves (or says not found)
    assert expand_snapshot_prefix(REPO, ref) == ref


def test_path_candidates_display_form_first_then_raw() -> None:
    assert path_candidates("/a/\\xff/") == [b"/a/\xff", b"/a/\\xff"]
    assert path_candidates("/a\\b") == [b"/a\\b"]  # not display form: raw only
    assert path_candidates("/") == [b"/"]


def _info(n: int, set_id: str, *, name: str | None = None, time_ns: int = 0) -> SnapshotInfo:
    meta = SnapshotMeta(time_ns or n, set_id, "d" + set_id, f"job-{n}", "vm", set_name=name)
    return SnapshotInfo(f"{n:064x}", meta, 1, ())


def test_latest_is_the_newest_of_the_set_and_never_a_guess_between_sets() -> None:
    infos = [_info(1, "A"), _info(3, "A"), _info(2, "A"), _info(4, "B", name="b")]
    assert latest_snapshot(infos, set_id="A").id == infos[1].id
    assert latest_snapshot(infos[:3]).id == infos[1].id  # one set: its newest
    with pytest.raises(SeveralSets) as caught:
        latest_snapshot(infos, names={"B": "b"})
    assert caught.value.exit_code == 2
    assert "A, 'b' (B)" in caught.value.message and "--set A" in caught.value.hint
    with pytest.raises(NoSnapshot) as missing:
        latest_snapshot(infos, set_id="C")
    assert missing.value.exit_code == 4
    # two jobs of one set in the same nanosecond: the later job ID
    same = [_info(5, "A", time_ns=9), _info(6, "A", time_ns=9)]
    assert latest_snapshot(same).meta.job_id == "job-6"


def test_set_names_recorded_newest_first_then_accepted() -> None:
    infos = [_info(1, "A", name="old"), _info(2, "A", name="new"), _info(3, "B"), _info(4, "C")]
    names = set_names(infos, {"A": "accepted", "B": "bee"})
    assert names == {"A": "new", "B": "bee"}
    assert set_label("A", names) == "'new' (A)" and set_label("C", names) == "C"
    assert set_ids_named(infos, "old", {}) == {"A"}  # any name the set had
    assert set_ids_named(infos, "bee", {"B": "bee"}) == {"B"}
    assert set_ids_named(infos, "C", {}) == {"C"}


def test_counts_say_one_in_the_singular() -> None:
    assert [plural(n, "problem") for n in (0, 1, 2)] == ["0 problems", "1 problem", "2 problems"]
    assert plural(1, "directory", "directories") == "1 directory"
    assert plural(3, "directory", "directories") == "3 directories"
