"""The remembered backup sets (``agent.spool.save_sets``/``load_sets``): a set read back is the
set saved, its settings the one model (``model.sets.BackupSetSettings``)."""

from __future__ import annotations

from pathlib import Path

from opencbs.agent.client import RemoteDestination, RemoteSet, set_as_json
from opencbs.agent.spool import load_sets, save_sets
from opencbs.model.sets import BackupSetSettings, Compression, Filters


def _set(set_id: str, **settings: object) -> RemoteSet:
    return RemoteSet(
        id=set_id,
        name=f"set {set_id}",
        type="FILE",
        removed=False,
        created_at=1_719_408_275_000,
        settings=BackupSetSettings.model_validate(settings),
        destinations=(RemoteDestination("7", "Local", "LOCAL", 0, {"path": "/srv/backup"}),),
    )


def test_a_set_round_trips_through_its_json() -> None:
    bset = _set(
        "1",
        sources=["/home/alice", "/etc"],
        filters={"include": [], "exclude": ["*.tmp"]},
        compression={"type": "ZSTD", "level": 9},
        deduplication=False,
    )
    assert RemoteSet.from_json(set_as_json(bset)) == bset
    assert bset.settings.filters == Filters(exclude=("*.tmp",))
    assert bset.settings.compression == Compression(level=9)


def test_remembered_sets_read_back_as_saved(tmp_path: Path) -> None:
    one, two = _set("1", sources=["/a"]), _set("2", sources=["/b"])
    save_sets(tmp_path, [one])
    save_sets(tmp_path, [two])  # merged into what is remembered
    assert load_sets(tmp_path) == [one, two]
    assert load_sets(tmp_path)[0].settings.sources == ("/a",)
