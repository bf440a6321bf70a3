"""Key files: KDF costs bounded before any derivation runs, parameters authenticated (version
2), version 1 key files still read, and a repository's key file rewritten as version 2 by a
password change."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from opencbs.destinations import MemoryStorage
from opencbs.engine import crypto
from opencbs.engine.crypto import (
    KDF_LIMITS,
    MAX_KEYFILE_SIZE,
    KdfParams,
    Keys,
    seal,
    unwrap_keys,
    wrap_keys,
)
from opencbs.engine.repo_errors import KeyFileRefused, RepositoryError, WrongPassword
from opencbs.engine.repository import KEYFILE_NAME, Repository
from opencbs.errors import ExitCode

FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1, salt=b"0123456789abcdef")
PASSWORD = "correct horse"
#: A sound key file made once, before any test forbids the KDF.
BASE = wrap_keys(Keys.generate(), PASSWORD, FAST_KDF)


def _doc(keyfile: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(keyfile)
    return doc


def _bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode("utf-8")


@pytest.fixture
def no_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any key derivation fails the test: refusals must come before it."""

    def forbidden(**_kw: object) -> bytes:
        raise AssertionError("the KDF ran for a key file that should have been refused")

    monkeypatch.setattr(crypto, "hash_secret_raw", forbidden)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("memory_kib", 2**40, "memory_kib 1099511627776"),
        ("memory_kib", KDF_LIMITS.max_memory_kib + 1, "memory_kib"),
        ("memory_kib", 4, "memory_kib 4"),
        ("time_cost", 0, "time_cost 0"),
        ("time_cost", 1_000_000, "time_cost 1000000"),
        ("parallelism", 0, "parallelism 0"),
        ("parallelism", 2**24, "parallelism 16777216"),
    ],
)
def test_crafted_costs_are_refused_before_any_derivation(
    no_kdf: None, field: str, value: int, said: str
) -> None:
    doc = _doc(BASE)
    doc["kdf"][field] = value
    with pytest.raises(KeyFileRefused) as info:
        unwrap_keys(_bytes(doc), PASSWORD)
    assert said in info.value.message
    assert info.value.message.startswith("Key file refused:")
    assert info.value.hint and "keys/default" in info.value.hint
    assert info.value.exit_code is ExitCode.REFUSED


@pytest.mark.parametrize("salt", [b"", b"short", bytes(65)])
def test_a_salt_of_odd_size_is_refused(no_kdf: None, salt: bytes) -> None:
    doc = _doc(BASE)
    doc["kdf"]["salt"] = base64.b64encode(salt).decode()
    with pytest.raises(KeyFileRefused, match="salt"):
        unwrap_keys(_bytes(doc), PASSWORD)


@pytest.mark.parametrize("value", [2.5, "3", True, None, [3]])
def test_costs_that_are_not_integers_are_refused(no_kdf: None, value: object) -> None:
    doc = _doc(BASE)
    doc["kdf"]["time_cost"] = value
    with pytest.raises(RepositoryError, match="integers"):
        unwrap_keys(_bytes(doc), PASSWORD)


def test_a_huge_key_file_is_refused_before_parsing(no_kdf: None) -> None:
    with pytest.raises(KeyFileRefused, match="bytes"):
        unwrap_keys(b" " * (MAX_KEYFILE_SIZE + 1), PASSWORD)


def test_a_wrapped_key_of_the_wrong_length_is_refused(no_kdf: None) -> None:
    doc = _doc(BASE)
    doc["wrapped"] = base64.b64encode(b"x" * 10).decode()
    with pytest.raises(RepositoryError, match="key length"):
        unwrap_keys(_bytes(doc), PASSWORD)


def test_the_costs_we_write_are_accepted_and_the_limits_hold_for_new_params() -> None:
    KdfParams()  # the defaults: 8 passes, 24 MiB, 4 lanes
    KdfParams(time_cost=3, memory_kib=64 * 1024, parallelism=4)  # what earlier versions wrote
    KdfParams(time_cost=32, memory_kib=KDF_LIMITS.max_memory_kib, parallelism=16)
    with pytest.raises(ValueError, match="time_cost"):
        KdfParams(time_cost=33)
    with pytest.raises(ValueError, match="memory_kib"):
        KdfParams(memory_kib=KDF_LIMITS.max_memory_kib + 1)


def test_key_file_is_version_2_and_its_parameters_are_authenticated() -> None:
    keys = Keys.generate()
    keyfile = wrap_keys(keys, PASSWORD, FAST_KDF)
    assert _doc(keyfile)["version"] == 2
    doc = _doc(keyfile)
    doc["kdf"]["time_cost"] = 2
    with pytest.raises(WrongPassword):
        unwrap_keys(_bytes(doc), PASSWORD)
    doc = _doc(keyfile)
    doc["kdf"]["salt"] = base64.b64encode(b"fedcba9876543210").decode()
    with pytest.raises(WrongPassword):
        unwrap_keys(_bytes(doc), PASSWORD)
    assert unwrap_keys(keyfile, PASSWORD)[0] == keys


def test_the_parameters_are_associated_data_not_only_kdf_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A derivation that ignored a parameter would not catch a change of it: the associated
    # data does. Stand-in KDF: the same key whatever the parameters.
    monkeypatch.setattr(KdfParams, "derive", lambda self, password: b"k" * 32)
    keys = Keys.generate()
    keyfile = wrap_keys(keys, PASSWORD, FAST_KDF)
    assert unwrap_keys(keyfile, PASSWORD)[0] == keys  # the control
    doc = _doc(keyfile)
    doc["kdf"]["time_cost"] = 2
    with pytest.raises(WrongPassword):
        unwrap_keys(_bytes(doc), PASSWORD)
    doc = _doc(keyfile)
    doc["version"] = 1  # relabelled as a version 1 file: no downgrade
    with pytest.raises(WrongPassword):
        unwrap_keys(_bytes(doc), PASSWORD)


def _legacy_keyfile(keys: Keys, kdf: KdfParams) -> bytes:
    """A version 1 key file as opencbs wrote it before (parameters not in the AAD)."""
    wrapped = seal(kdf.derive(PASSWORD), keys.encryption_key + keys.id_key, b"opencbs:keyfile:v1")
    doc = {
        "format": "opencbs-keyfile",
        "version": 1,
        "kdf": kdf.to_json(),
        "wrapped": base64.b64encode(wrapped).decode("ascii"),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")


def test_a_version_1_key_file_is_still_read_and_bounded() -> None:
    keys = Keys.generate()
    legacy = _legacy_keyfile(keys, FAST_KDF)
    assert unwrap_keys(legacy, PASSWORD) == (keys, FAST_KDF)
    with pytest.raises(WrongPassword):
        unwrap_keys(legacy, "wrong")
    doc = _doc(legacy)
    doc["kdf"]["time_cost"] = 2  # a changed cost changes the derived key: fails too
    with pytest.raises(WrongPassword):
        unwrap_keys(_bytes(doc), PASSWORD)
    doc["kdf"]["memory_kib"] = 2**40
    with pytest.raises(KeyFileRefused):
        unwrap_keys(_bytes(doc), PASSWORD)


def test_a_repository_with_a_version_1_key_file_opens_and_a_password_change_upgrades_it() -> None:
    storage = MemoryStorage()
    repo = Repository.init(storage, PASSWORD, kdf=FAST_KDF)
    storage.put(KEYFILE_NAME, _legacy_keyfile(repo.keys, FAST_KDF))
    opened = Repository.open(storage, PASSWORD)
    assert opened.keys == repo.keys
    opened.change_password("new password", FAST_KDF)
    assert _doc(storage.get(KEYFILE_NAME))["version"] == 2
    assert Repository.open(storage, "new password").keys == repo.keys


def test_opening_a_repository_with_a_crafted_key_file_is_refused(no_kdf: None) -> None:
    storage = MemoryStorage()
    doc = _doc(BASE)
    doc["kdf"]["memory_kib"] = 2**40
    storage.put(KEYFILE_NAME, _bytes(doc))
    with pytest.raises(KeyFileRefused):
        Repository.open(storage, PASSWORD)
