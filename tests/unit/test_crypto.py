"""Keys, chunk IDs and sealed objects: known answers, tampering, passwords."""

from __future__ import annotations

import json

import pytest

from opencbs.engine.crypto import (
    OVERHEAD,
    KdfParams,
    Keys,
    seal,
    unseal,
    unwrap_keys,
    wrap_keys,
)
from opencbs.engine.repo_errors import CorruptData, RepositoryError, WrongPassword

FAST_KDF = KdfParams(time_cost=1, memory_kib=8, parallelism=1, salt=b"0123456789abcdef")

# The GCM specification's test case 16 (McGrew & Viega): AES-256, 96-bit IV, with AAD.
GCM_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
GCM_AAD = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_PLAIN = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_CIPHER = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
)
GCM_TAG = bytes.fromhex("76fc6ece0f4e1768cddf8853bb2d551b")


def test_seal_known_answer() -> None:
    sealed = seal(GCM_KEY, GCM_PLAIN, GCM_AAD, nonce=GCM_IV)
    assert sealed == b"\x01" + GCM_IV + GCM_CIPHER + GCM_TAG
    assert len(sealed) == len(GCM_PLAIN) + OVERHEAD
    assert unseal(GCM_KEY, sealed, GCM_AAD) == GCM_PLAIN


def test_keyed_blake3_known_answer() -> None:
    # BLAKE3's official test vectors: keyed hash of the empty input.
    keys = Keys(b"\x00" * 32, b"whats the Elvish word for friend")
    assert keys.chunk_id(b"").hex() == (
        "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"
    )


def test_incremental_hash_equals_chunk_id() -> None:
    keys = Keys.generate()
    h = keys.hasher()
    h.update(b"hello ")
    h.update(b"world")
    assert h.digest() == keys.chunk_id(b"hello world")
    assert keys.chunk_id(b"x") != Keys.generate().chunk_id(b"x")


def test_random_nonces() -> None:
    key = bytes(32)
    assert seal(key, b"same", b"") != seal(key, b"same", b"")


@pytest.mark.parametrize("offset", [0, 1, 12, 13, -1])
def test_flipped_byte_is_detected(offset: int) -> None:
    sealed = bytearray(seal(GCM_KEY, b"payload bytes", b"aad"))
    sealed[offset] ^= 0x40
    with pytest.raises(CorruptData):
        unseal(GCM_KEY, bytes(sealed), b"aad")


def test_wrong_aad_or_key_is_detected() -> None:
    sealed = seal(GCM_KEY, b"payload", b"chunk-1")
    with pytest.raises(CorruptData):
        unseal(GCM_KEY, sealed, b"chunk-2")
    with pytest.raises(CorruptData):
        unseal(bytes(32), sealed, b"chunk-1")
    with pytest.raises(CorruptData):
        unseal(GCM_KEY, sealed[:10], b"chunk-1")


def test_key_file_round_trip_and_contents() -> None:
    keys = Keys.generate()
    keyfile = wrap_keys(keys, "correct horse", FAST_KDF)
    again, kdf = unwrap_keys(keyfile, "correct horse")
    assert again == keys
    assert kdf == FAST_KDF
    doc = json.loads(keyfile)
    assert set(doc) == {"format", "version", "kdf", "wrapped"}
    assert doc["kdf"]["algorithm"] == "argon2id"
    assert doc["kdf"]["memory_kib"] == 8
    assert keys.encryption_key not in keyfile and keys.encryption_key.hex() not in keyfile.decode()


def test_wrong_password_is_a_clear_error() -> None:
    keyfile = wrap_keys(Keys.generate(), "right", FAST_KDF)
    with pytest.raises(WrongPassword) as info:
        unwrap_keys(keyfile, "wrong")
    assert "password" in info.value.message
    assert info.value.code == "repository_password"


def test_kdf_parameters_are_read_from_the_key_file() -> None:
    keys = Keys.generate()
    other = KdfParams(time_cost=2, memory_kib=16, parallelism=2)
    assert unwrap_keys(wrap_keys(keys, "pw", other), "pw") == (keys, other)


def test_password_is_unicode_normalised() -> None:
    keyfile = wrap_keys(Keys.generate(), "caf\u00e9", FAST_KDF)
    unwrap_keys(keyfile, "cafe\u0301")  # decomposed form unlocks too


def test_not_a_key_file() -> None:
    with pytest.raises(RepositoryError):
        unwrap_keys(b"{}", "pw")
    with pytest.raises(RepositoryError):
        unwrap_keys(b"\xff not json", "pw")


def test_keys_are_never_printed() -> None:
    keys = Keys(b"K" * 32, b"I" * 32)
    assert "KKKK" not in repr(keys) and "IIII" not in repr(keys)
    assert "salt" not in repr(FAST_KDF) or "0123" not in repr(FAST_KDF)
