"""Snapshot ID prefixes and ``--path`` candidates of ``agent.snapshot_lookup``."""

from __future__ import annotations

from typing import cast

import pytest

from opencbs.agent.snapshot_lookup import (
    AmbiguousSnapshot,
    expand_snapshot_prefix,
    path_candidates,
)
from opencbs.engine.repository import Repository

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
