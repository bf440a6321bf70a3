"""What the agent accepted (``agent.trust``) and the destination folder rule
(``agent.targets.require_empty_or_repository``, ``open_repository``, ``Repository.init``):
first use accepts and records, a later change named by the server is refused unless the owner
consents, a damaged record is an error (never taken for an empty one), and a folder of someone
else's files is never written to."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from opencbs.agent.client import RemoteDestination, RemoteSet
from opencbs.agent.targets import (
    NotARepository,
    Target,
    accept_target,
    open_repository,
    require_empty_or_repository,
    usable_destination,
)
from opencbs.agent.trust import (
    NO_CONSENT,
    AcceptedSet,
    Consent,
    TargetChanged,
    TrustFileError,
    accepted_sets,
    changes,
    check_backup_target,
    check_restore_destination,
    record,
    require_accepted_sources,
    trust_file,
)
from opencbs.destinations.local import LocalStorage
from opencbs.destinations.memory import MemoryStorage
from opencbs.engine.crypto import KdfParams
from opencbs.engine.repo_errors import RepositoryError
from opencbs.engine.repository import Repository
from opencbs.errors import ExitCode
from opencbs.model.destinations import DestinationAddress

PASSWORD = "pw"
FAST = KdfParams(1, 8 * 1024, 1)


def remote_set(
    sources: list[str], dests: dict[str, str], set_id: str = "100", name: str = "docs"
) -> RemoteSet:
    doc: dict[str, Any] = {
        "id": set_id,
        "name": name,
        "type": "FILE",
        "removed": False,
        "created_at": 1,
        "settings": {"sources": sources},
        "destinations": [
            {"id": k, "name": f"d{k}", "type": "LOCAL", "position": i, "settings": {"path": v}}
            for i, (k, v) in enumerate(dests.items())
        ],
    }
    return RemoteSet.from_json(doc)


def target(bset: RemoteSet, index: int = 0) -> Target:
    d = bset.destinations[index]
    return Target(bset, d, DestinationAddress.local(d.settings["path"]))


def backup_check(spool: Path, bset: RemoteSet, consent: Consent = NO_CONSENT) -> list[str]:
    notes: list[str] = []
    t = target(bset)
    check_backup_target(
        spool, bset, t.destination, t.address.key, consent=consent, on_note=notes.append
    )
    return notes


# -- the record ---------------------------------------------------------------------------------


def test_first_use_accepts_and_records_with_a_note(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    bset = remote_set(["/home/a/docs", "/home/a/../a/more"], {"7": "/srv/b"})
    notes = backup_check(spool, bset)
    assert len(notes) == 1 and "first time" in notes[0] and "/srv/b" in notes[0]
    assert accepted_sets(spool) == {
        "100": AcceptedSet("100", "docs", ("/home/a/docs", "/home/a/more"), {"7": "/srv/b"}, ())
    }  # stored: () (no backup stored yet, agent.trust.record_stored)
    assert oct(trust_file(spool).stat().st_mode & 0o777) == "0o600"
    # the same again: nothing to tell, nothing rewritten
    before = trust_file(spool).stat().st_mtime_ns
    assert backup_check(spool, bset) == []
    assert trust_file(spool).stat().st_mtime_ns == before


def test_created_from_the_command_line_is_accepted_silently(tmp_path: Path) -> None:
    bset = remote_set(["/x"], {"7": "/srv/b"})
    assert backup_check(tmp_path, bset, Consent(sources=True, destination=True)) == []
    assert accepted_sets(tmp_path)["100"].sources == ("/x",)


def test_changed_destination_is_refused_then_accepted_with_consent(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}))
    moved = remote_set(["/x"], {"7": "/home/a/.aws"})
    with pytest.raises(TargetChanged) as caught:
        backup_check(tmp_path, moved)
    err = caught.value
    assert err.exit_code == ExitCode.UNAVAILABLE
    assert "destination 7 changed from /srv/b to /home/a/.aws" in err.message
    assert "--accept-server-changes" in err.hint and str(trust_file(tmp_path)) in err.hint
    assert "--destination PATH" in err.hint and "--source" not in err.hint
    assert "to keep what this agent accepted, change the set back on the server" in err.hint
    assert accepted_sets(tmp_path)["100"].destinations == {"7": "/srv/b"}  # nothing recorded
    # sources given on the command line are no consent to another folder
    with pytest.raises(TargetChanged):
        backup_check(tmp_path, moved, Consent(sources=True))
    notes = backup_check(tmp_path, moved, Consent(destination=True))
    assert notes and "accepted destination 7 changed" in notes[0]
    assert accepted_sets(tmp_path)["100"].destinations == {"7": "/home/a/.aws"}


def test_changed_sources_are_refused_then_accepted_with_the_flag(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}))
    wider = remote_set(["/x", "/home/a/.ssh"], {"7": "/srv/b"})
    with pytest.raises(TargetChanged, match=r"sources changed from \[/x\] to \[/x, /home/a/.ssh\]"):
        backup_check(tmp_path, wider)
    with pytest.raises(TargetChanged):
        backup_check(tmp_path, wider, Consent(destination=True))
    with pytest.raises(TargetChanged):
        require_accepted_sources(tmp_path, wider)
    backup_check(tmp_path, wider, Consent(server_changes=True))
    require_accepted_sources(tmp_path, wider)
    assert accepted_sets(tmp_path)["100"].sources == ("/x", "/home/a/.ssh")
    # the order of the sources does not matter
    backup_check(tmp_path, remote_set(["/home/a/.ssh", "/x"], {"7": "/srv/b"}))


def test_a_destination_new_to_the_agent_is_a_change(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}))
    other = remote_set(["/x"], {"8": "/srv/c", "7": "/srv/b"})
    with pytest.raises(TargetChanged, match="destination 8 /srv/c .never accepted here"):
        backup_check(tmp_path, other)


def test_records_of_several_sets_are_kept_apart(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}, set_id="1"))
    backup_check(tmp_path, remote_set(["/y"], {"9": "/srv/c"}, set_id="2", name="pics"))
    assert set(accepted_sets(tmp_path)) == {"1", "2"}
    with pytest.raises(TargetChanged):
        backup_check(tmp_path, remote_set(["/y"], {"7": "/srv/b"}, set_id="1"))


def test_a_new_set_under_an_accepted_name_is_refused(tmp_path: Path) -> None:
    """The server renames set 100 and gives its name to a new set 200 reading /secret."""
    backup_check(tmp_path, remote_set(["/src1"], {"7": "/dest4"}))
    before = trust_file(tmp_path).read_bytes()
    for folder in ("/dest4", "/dest5"):  # into the accepted folder, or a new one
        swapped = remote_set(["/secret"], {"8": folder}, set_id="200")
        with pytest.raises(TargetChanged) as caught:
            backup_check(tmp_path, swapped)
        err = caught.value
        assert err.exit_code == ExitCode.UNAVAILABLE
        assert "the name 'docs' belongs to set ID 100 here (sources [/src1])" in err.message
        assert " and now names set ID 200 (sources [/secret])" in err.message
        assert "--accept-server-changes" in err.hint and "--source PATH" in err.hint
        assert trust_file(tmp_path).read_bytes() == before  # nothing recorded
    # naming only the folder is no consent to the sources behind the name
    with pytest.raises(TargetChanged):
        backup_check(tmp_path, swapped, Consent(destination=True))


def test_a_new_set_in_an_accepted_folder_is_refused(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/src1"], {"7": "/dest4"}))
    other = remote_set(["/secret"], {"8": "/srv/../dest4"}, set_id="200", name="fresh")
    with pytest.raises(TargetChanged) as caught:
        backup_check(tmp_path, other)
    assert "destination 8 at /dest4: that folder belongs to set 'docs' (ID 100) here" in (
        caught.value.message
    )
    assert "--destination PATH" in caught.value.hint and "--source" not in caught.value.hint
    with pytest.raises(TargetChanged):  # the sources named are no consent to the folder
        backup_check(tmp_path, other, Consent(sources=True))
    assert set(accepted_sets(tmp_path)) == {"100"}
    # a new name and a new folder: first use, as before
    notes = backup_check(tmp_path, remote_set(["/y"], {"9": "/srv/c"}, set_id="300", name="pics"))
    assert len(notes) == 1 and "first time" in notes[0]


@pytest.mark.parametrize(
    "consent",
    [Consent(server_changes=True), Consent(sources=True, destination=True)],
)
def test_a_takeover_is_accepted_with_consent(tmp_path: Path, consent: Consent) -> None:
    backup_check(tmp_path, remote_set(["/src1"], {"7": "/dest4"}))
    swapped = remote_set(["/secret"], {"8": "/dest4"}, set_id="200")
    notes = backup_check(tmp_path, swapped, consent)
    assert any(
        "the name 'docs' belongs to set ID 100 here (sources [/src1])" in n
        and "(now accepted)" in n
        for n in notes
    ), notes
    assert accepted_sets(tmp_path)["200"] == AcceptedSet(
        "200", "docs", ("/secret",), {"8": "/dest4"}, ()
    )
    assert backup_check(tmp_path, swapped) == []  # accepted now: no consent needed


def test_a_set_renamed_on_the_server_is_recorded_under_its_new_name(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/src1"], {"7": "/dest4"}))
    assert backup_check(tmp_path, remote_set(["/src1"], {"7": "/dest4"}, name="old")) == []
    assert accepted_sets(tmp_path)["100"].name == "old"
    # its former name is free again for a new set with its own folder
    backup_check(tmp_path, remote_set(["/z"], {"9": "/dest9"}, set_id="200"))


def test_changes_is_pure_and_empty_without_a_record() -> None:
    assert changes(None, ["/x"], "7", "/p") == []
    acc = AcceptedSet("1", "n", None, {"7": "/p"})
    assert changes(acc, ["/anything"], "7", "/p") == []  # no sources accepted yet
    found = changes(AcceptedSet("1", "n", ("/x",), {}), ["/x"], "7", "/p")
    assert [(c.what, c.old, c.new) for c in found] == [("destination", None, "/p")]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": 2, "sets": {}}', b'{"format": 1, "sets": {"1": {"x": 1}}}',
     b'{"format": 1, "sets": {"1": {"sources": [1], "destinations": {}}}}', b"[]",
     b'{"format": 1, "sets": {"1": {"sources": "/tmp/src", "destinations": {}}}}',
     b'{"format": 1, "sets": {"1": {"sources": null, "destinations": ["/srv/b"]}}}',
     b'{"format": 1, "sets": {"1": {"name": 5, "sources": null, "destinations": {}}}}'],
)  # fmt: skip
def test_a_damaged_record_is_an_error_not_an_empty_one(tmp_path: Path, content: bytes) -> None:
    trust_file(tmp_path).write_bytes(content)
    with pytest.raises(TrustFileError) as caught:
        backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}))
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert str(trust_file(tmp_path)) in caught.value.message
    assert trust_file(tmp_path).read_bytes() == content


def test_an_edited_record_is_the_owners_consent(tmp_path: Path) -> None:
    backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/b"}))
    doc = json.loads(trust_file(tmp_path).read_bytes())
    doc["sets"]["100"]["destinations"]["7"] = "/srv/new"
    trust_file(tmp_path).write_text(json.dumps(doc))
    assert backup_check(tmp_path, remote_set(["/x"], {"7": "/srv/new"})) == []


def test_restore_reads_only_an_accepted_folder(tmp_path: Path) -> None:
    bset = remote_set(["/x"], {"7": "/srv/b"})
    d = bset.destinations[0]
    with pytest.raises(TargetChanged, match="has not accepted .accepted: none"):
        check_restore_destination(tmp_path, bset, d, Path("/srv/b"))
    assert not trust_file(tmp_path).exists()
    notes: list[str] = []
    check_restore_destination(tmp_path, bset, d, Path("/srv/b"), accept=True, on_note=notes.append)
    assert notes and accepted_sets(tmp_path)["100"] == AcceptedSet(
        "100", "docs", None, {"7": "/srv/b"}
    )
    check_restore_destination(tmp_path, bset, d, Path("/srv/b"))  # accepted now
    with pytest.raises(TargetChanged, match=r"accepted: \[/srv/b\]"):
        check_restore_destination(tmp_path, bset, d, Path("/srv/elsewhere"))
    # a backup after a restore-only record accepts the sources on first use
    notes.clear()
    check_backup_target(tmp_path, bset, d, Path("/srv/b"), on_note=notes.append)
    assert accepted_sets(tmp_path)["100"].sources == ("/x",) and "first time" in notes[0]


def test_record_keeps_other_sets(tmp_path: Path) -> None:
    record(tmp_path, AcceptedSet("1", "a", ("/a",), {"2": "/b"}))
    record(tmp_path, AcceptedSet("3", "c", ("/c",), {"4": "/d"}))
    record(tmp_path, AcceptedSet("1", "a", ("/a2",), {"2": "/b"}))
    assert accepted_sets(tmp_path) == {
        "1": AcceptedSet("1", "a", ("/a2",), {"2": "/b"}),
        "3": AcceptedSet("3", "c", ("/c",), {"4": "/d"}),
    }


# -- the destination folder rule ----------------------------------------------------------------


def _foreign(folder: Path) -> bytes:
    folder.mkdir(parents=True)
    content = b"[default]\nregion = eu-west-1\n"
    (folder / "config").write_bytes(content)
    return content


def test_a_folder_of_other_files_is_never_written(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    content = _foreign(aws)
    with pytest.raises(NotARepository) as caught:
        require_empty_or_repository(LocalStorage(aws))
    assert caught.value.exit_code == ExitCode.UNAVAILABLE and str(aws) in caught.value.message
    with pytest.raises(NotARepository):
        open_repository(LocalStorage(aws, fsync=False), PASSWORD)
    with pytest.raises(NotARepository):
        usable_destination(DestinationAddress.local(aws), PASSWORD)
    with pytest.raises(RepositoryError, match="not empty"):  # the last line of defence
        Repository.init(LocalStorage(aws, fsync=False), PASSWORD, kdf=FAST)
    assert (aws / "config").read_bytes() == content and os.listdir(aws) == ["config"]


def test_dot_files_and_non_folders_count(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".bashrc").write_bytes(b"x")
    with pytest.raises(NotARepository):
        require_empty_or_repository(LocalStorage(hidden))
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    with pytest.raises(NotARepository):
        require_empty_or_repository(LocalStorage(a_file))
    assert os.listdir(hidden) == [".bashrc"] and a_file.read_bytes() == b"x"
    assert LocalStorage(a_file / "under").is_empty()  # missing: creating it is what fails


def test_leftovers_of_an_interrupted_put_do_not_count(tmp_path: Path) -> None:
    folder = tmp_path / "dest"
    folder.mkdir()
    (folder / ".tmp-config-0123456789abcdef").write_bytes(b"half")
    (folder / ".lock-keys-default").write_bytes(b"")  # a creation killed before its key file
    require_empty_or_repository(LocalStorage(folder))
    assert open_repository(LocalStorage(folder, fsync=False), PASSWORD).config.repo_id
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".tmp-dir").mkdir()  # a folder of that name is not ours
    with pytest.raises(NotARepository):
        require_empty_or_repository(LocalStorage(tmp_path / "other"))


def test_empty_missing_and_repository_folders_are_used(tmp_path: Path) -> None:
    require_empty_or_repository(LocalStorage(tmp_path / "missing" / "deeper"))
    (tmp_path / "empty").mkdir()
    require_empty_or_repository(LocalStorage(tmp_path / "empty"))
    storage = LocalStorage(tmp_path / "repo", fsync=False)
    Repository.init(storage, PASSWORD, kdf=FAST)
    require_empty_or_repository(LocalStorage(tmp_path / "repo"))
    assert open_repository(storage, PASSWORD).config.repo_id
    assert not (tmp_path / "missing").exists()


def test_memory_storage_with_objects_is_not_initialised() -> None:
    storage = MemoryStorage()
    storage.put("config", b"someone else's")
    with pytest.raises(NotARepository):  # the rule for every storage now, not folders only
        open_repository(storage, PASSWORD)
    assert storage.get("config") == b"someone else's"


def test_accept_target_checks_the_folder_before_recording(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    _foreign(aws)
    bset = remote_set(["/x"], {"7": str(aws)})
    with pytest.raises(NotARepository):
        accept_target(tmp_path / "spool", target(bset))
    assert not trust_file(tmp_path / "spool").exists()


def test_s3_credentials_need_both_halves() -> None:
    from opencbs.agent.storage import S3Access
    from opencbs.errors import ConfigError

    with pytest.raises(ConfigError, match="s3_access_key_id is set but s3_secret_access_key"):
        S3Access(access_key_id="AKIA").credentials()
    with pytest.raises(ConfigError, match="s3_secret_access_key is set but s3_access_key_id"):
        S3Access(secret_access_key="s").credentials()
    assert S3Access().credentials() is None


def test_an_s3_destination_is_found_without_its_endpoint_when_one_matches() -> None:
    from opencbs.agent.targets import find_destination
    from opencbs.model.destinations import parse_destination

    s3 = {"bucket": "bk1", "prefix": "a/docs", "endpoint": "http://h:1", "region": "us-east-1"}
    bset = remote_set(["/x"], {"7": "/local"})
    bset = replace(
        bset,
        destinations=(
            *bset.destinations,
            RemoteDestination("8", "S3", "S3", 1, s3),
        ),
    )
    found = find_destination(bset, parse_destination("s3://bk1/a/docs/"))
    assert found is not None and found.id == "8"
    assert (
        find_destination(bset, parse_destination("s3://bk1/a/docs", s3_endpoint="http://o:2"))
        is None
    )
    assert find_destination(bset, parse_destination("s3://bk1/a/other")) is None


class _Untouchable(MemoryStorage):
    """A destination that must not be contacted: every read fails the test."""

    def exists(self, name: str) -> bool:
        raise AssertionError(f"the destination was contacted ({name})")

    def list(self, prefix: str = "") -> Iterator[str]:
        raise AssertionError("the destination was contacted (list)")


def test_a_destination_not_accepted_is_refused_before_it_is_contacted(tmp_path: Path) -> None:
    """The review of issue 13: a destination the server added (an S3 endpoint with the agent's
    credentials) was read before the record refused it."""
    accept_target(tmp_path, target(remote_set(["/x"], {"7": str(tmp_path / "b")})))
    added = remote_set(["/x"], {"7": str(tmp_path / "b"), "8": str(tmp_path / "c")})
    with pytest.raises(TargetChanged, match="never accepted here"):
        accept_target(tmp_path, target(added, 1), _Untouchable())
