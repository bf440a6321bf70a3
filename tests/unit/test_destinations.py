"""One contract suite for every destination backend (style.md §8): local folder, memory, S3 on
SeaweedFS (real SigV4) and S3 on moto; plus local-folder specifics (S3 specifics:
test_destination_s3.py)."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencbs.destinations import (
    DestinationError,
    InvalidObjectName,
    LocalStorage,
    MemoryStorage,
    ObjectNotFound,
    PreconditionFailed,
    Storage,
)
from opencbs.model.destinations import S3Location
from tests import s3server

s3_server = s3server.s3_server
moto_server = s3server.moto_server
CONTRACT_BUCKET = "contract"


def s3_storage(server: s3server.SeaweedS3 | s3server.MotoS3) -> Storage:
    """An ``S3Storage`` under a fresh prefix of the server's contract bucket."""
    from opencbs.destinations.s3 import S3Credentials, S3Storage, S3Tuning

    location = S3Location.checked(CONTRACT_BUCKET, f"t-{secrets.token_hex(6)}", server.endpoint, "")
    return S3Storage(
        location,
        S3Credentials(server.access_key, server.secret_key),
        tuning=S3Tuning(max_attempts=2),
    )


@pytest.fixture(params=["memory", "local", "s3-seaweedfs", "s3-moto"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
    elif request.param == "local":
        yield LocalStorage(tmp_path / "dest")
    else:
        server = request.getfixturevalue(
            "s3_server" if request.param == "s3-seaweedfs" else "moto_server"
        )
        server.ensure_bucket(CONTRACT_BUCKET)
        yield s3_storage(server)


BAD_NAMES = [
    "",
    "/abs",
    "../up",
    "a/../b",
    "a/..",
    "a//b",
    "a/./b",
    "a/",
    ".hidden",
    "a\\b",
    "a\x00b",
    "C:/x",
]


def test_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


def test_put_get_round_trip(storage: Storage) -> None:
    storage.put("a/b/c", b"\x00\xffdata")
    storage.put("empty", b"")
    assert storage.get("a/b/c") == b"\x00\xffdata"
    assert storage.get("empty") == b""


def test_put_replaces(storage: Storage) -> None:
    storage.put("x", b"old")
    storage.put("x", b"new")
    assert storage.get("x") == b"new"
    assert list(storage.list()) == ["x"]


def test_get_missing_is_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        storage.get("nope/nothing")
    assert isinstance(info.value, DestinationError)
    assert info.value.code == "destination_object_not_found"


def test_exists_and_delete(storage: Storage) -> None:
    storage.put("d/x", b"1")
    assert storage.exists("d/x")
    assert not storage.exists("d/y")
    assert not storage.exists("d")  # a folder is not an object
    storage.delete("d/x")
    assert not storage.exists("d/x")
    storage.delete("d/x")  # idempotent
    with pytest.raises(ObjectNotFound):
        storage.get("d/x")


def test_list_prefix_sorted(storage: Storage) -> None:
    names = ["data/ab/ab12", "data/ab/ab01", "data/cd/cd99", "index/i1", "config", "snap"]
    for n in names:
        storage.put(n, n.encode())
    assert list(storage.list()) == sorted(names)
    assert list(storage.list("data/")) == ["data/ab/ab01", "data/ab/ab12", "data/cd/cd99"]
    assert list(storage.list("data/ab/ab1")) == ["data/ab/ab12"]
    assert list(storage.list("s")) == ["snap"]
    assert list(storage.list("missing/")) == []


def test_list_sizes_names_each_object_with_its_size(storage: Storage) -> None:
    for name, size in [("data/ab/ab12", 7), ("data/ab/ab01", 0), ("data/cd/cd99", 300)]:
        storage.put(name, b"x" * size)
    storage.put("index/i1", b"i")
    assert list(storage.list_sizes("data/")) == [
        ("data/ab/ab01", 0),
        ("data/ab/ab12", 7),
        ("data/cd/cd99", 300),
    ]
    assert [n for n, _ in storage.list_sizes()] == list(storage.list())
    assert list(storage.list_sizes("missing/")) == []
    with pytest.raises(InvalidObjectName):
        list(storage.list_sizes("../"))


def test_get_range(storage: Storage) -> None:
    storage.put("r", bytes(range(100)))
    assert storage.get_range("r", 10, 5) == bytes(range(10, 15))
    assert storage.get_range("r", 100, 0) == b""
    with pytest.raises(DestinationError):
        storage.get_range("r", 98, 5)
    with pytest.raises(ObjectNotFound):
        storage.get_range("none", 0, 1)


def test_put_if_creates_only_when_absent(storage: Storage) -> None:
    version = storage.put_if("manifest", b"one", version=None)
    with pytest.raises(PreconditionFailed) as info:
        storage.put_if("manifest", b"two", version=None)
    assert info.value.code == "destination_precondition_failed"
    assert storage.get_versioned("manifest") == (b"one", version)


def test_put_if_replaces_only_the_expected_version(storage: Storage) -> None:
    first = storage.put_if("m", b"one", version=None)
    second = storage.put_if("m", b"two", version=first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        storage.put_if("m", b"three", version=first)  # stale: another writer got there
    assert storage.get_versioned("m") == (b"two", second)
    storage.put("m", b"plain put")  # an unconditional put changes the version too
    with pytest.raises(PreconditionFailed):
        storage.put_if("m", b"four", version=second)
    with pytest.raises(PreconditionFailed):
        storage.put_if("absent", b"x", version=second)  # nothing to match
    assert not storage.exists("absent")
    with pytest.raises(ObjectNotFound):
        storage.get_versioned("absent")
    assert list(storage.list()) == ["m"]  # no lock or temporary object shows


def test_put_if_lets_exactly_one_of_racing_writers_win(storage: Storage) -> None:
    version = storage.put_if("race", b"0", version=None)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            storage.put_if("race", str(n).encode(), version=version)
            outcomes.append(f"won {n}")
        except PreconditionFailed:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if o.startswith("won")]
    assert len(won) == 1 and outcomes.count("lost") == 3, outcomes
    assert storage.get("race") == won[0].split()[1].encode()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_escaping_the_root_are_rejected(storage: Storage, name: str) -> None:
    for call in (
        lambda: storage.put(name, b"x"),
        lambda: storage.get(name),
        lambda: storage.exists(name),
        lambda: storage.delete(name),
        lambda: storage.get_range(name, 0, 0),
        lambda: storage.get_versioned(name),
        lambda: storage.put_if(name, b"x", version=None),
    ):
        with pytest.raises(InvalidObjectName):
            call()


@pytest.mark.parametrize("prefix", ["/", "../", "a//", ".x"])
def test_bad_prefixes_are_rejected(storage: Storage, prefix: str) -> None:
    with pytest.raises(InvalidObjectName):
        list(storage.list(prefix))


# Local folder specifics ---------------------------------------------------------------------


def test_local_layout_and_no_temporary_files(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    s.put("data/ab/pack", b"P" * 10)
    assert (tmp_path / "data" / "ab" / "pack").read_bytes() == b"P" * 10
    assert os.listdir(tmp_path / "data" / "ab") == ["pack"]


def test_local_ignores_stray_temporary_files(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    s.put("index/a", b"1")
    (tmp_path / "index" / ".tmp-a-123").write_bytes(b"partial")
    assert list(s.list()) == ["index/a"]


def test_local_failed_put_leaves_old_object_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "dest"
    s = LocalStorage(root)
    s.put("x", b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DestinationError) as info:
        s.put("x", b"new")
    assert not isinstance(info.value, ObjectNotFound)
    assert "No space left" in info.value.message
    assert s.get("x") == b"old"
    assert os.listdir(root) == ["x"]


def test_local_os_errors_become_destination_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    under_file = LocalStorage(blocker / "sub")  # nothing is created before the first put
    with pytest.raises(DestinationError) as made:
        under_file.put("x", b"1")
    assert str(blocker / "sub") in made.value.message and made.value.hint
    with pytest.raises(DestinationError):
        under_file.check_writable()
    s = LocalStorage(tmp_path)
    with pytest.raises(DestinationError) as info:
        s.put("file/x", b"1")  # a file where a folder must be
    assert not isinstance(info.value, ObjectNotFound)
    with pytest.raises(ObjectNotFound):
        s.get("file/x")


def test_memory_tamper_helper() -> None:
    s = MemoryStorage()
    s.put("x", b"\x00\x00")
    s.tamper("x", 1)
    assert s.get("x") == b"\x00\x01"


def test_local_destination_is_private(tmp_path: Path) -> None:
    import stat

    from opencbs.destinations.local import LocalStorage

    store = LocalStorage(tmp_path / "repo")
    store.put("keys/default", b"k")
    assert stat.S_IMODE((tmp_path / "repo" / "keys" / "default").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "repo" / "keys").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((tmp_path / "repo").stat().st_mode) & 0o077 == 0


def test_local_reading_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "a" / "dest"
    s = LocalStorage(root)
    with pytest.raises(ObjectNotFound):
        s.get("keys/default")
    with pytest.raises(ObjectNotFound):
        s.get_range("x", 0, 1)
    assert list(s.list()) == [] and not s.exists("x")
    s.delete("x")
    assert s.remove_stale_temporaries() == 0
    assert not (tmp_path / "a").exists()
    s.put("x", b"1")  # the first put makes the folder, private
    assert s.get("x") == b"1"
    assert os.stat(root).st_mode & 0o777 == 0o700


def test_local_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    LocalStorage(tmp_path / "new" / "dest").check_writable()
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "there"
    existing.mkdir()
    (existing / "keep").write_bytes(b"k")
    LocalStorage(existing).check_writable()
    assert os.listdir(existing) == ["keep"]


def test_local_check_writable_names_what_failed(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(DestinationError) as info:
            LocalStorage(ro / "dest").check_writable()
        assert f"Cannot create the destination folder {ro / 'dest'}: Permission denied" == (
            info.value.message
        )
        with pytest.raises(DestinationError) as info:
            LocalStorage(ro).check_writable()
        assert info.value.message.startswith(f"Cannot write in the destination folder {ro}: ")
        assert os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o700)
