"""Key material, chunk IDs and per-object encryption of a repository.

- Two random 32-byte keys per repository: the *encryption key* (AES-256-GCM for every stored
  object) and the *ID key* (keyed BLAKE3 for chunk and content IDs, so IDs reveal nothing about
  content to whoever lacks the key).
- Both are wrapped in the *key file* by a key derived from the backup set's encryption password
  with Argon2id; the KDF parameters and salt live in the key file, so their cost can change.
- A sealed object is ``version (1 byte, 0x01) ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag
  (16 bytes)``: ``OVERHEAD`` = 29 bytes more than the plaintext. The associated data binds the
  object to its role (a chunk's ID, ``b"opencbs:snapshot:<id>"``…), so objects cannot be swapped.

Random 96-bit nonces under one key stay safe for far more than 2**32 objects of ~1 MiB (4 PiB).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import blake3
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opencbs.engine.repo_errors import CorruptData, RepositoryError, WrongPassword

KEY_SIZE = 32
ID_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_VERSION = 1
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
_VERSION_BYTE = bytes([SEAL_VERSION])

_KEYFILE_FORMAT = "opencbs-keyfile"
_KEYFILE_VERSION = 1
_WRAP_AAD = b"opencbs:keyfile:v1"


def seal(key: bytes, plaintext: bytes, aad: bytes, *, nonce: bytes | None = None) -> bytes:
    """Encrypt and authenticate ``plaintext`` with AES-256-GCM under the 32-byte ``key``.

    ``nonce`` (12 bytes) is random unless given (known-answer tests only). Returns the sealed
    object (``OVERHEAD`` bytes longer than ``plaintext``).
    """
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    return bytes([SEAL_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes, *, what: str = "object") -> bytes:
    """The plaintext of a sealed object; raises ``CorruptData`` if it was altered, belongs to
    another role (``aad``) or was sealed under another key. ``what`` names it in the error."""
    if len(sealed) < OVERHEAD or sealed[0] != SEAL_VERSION:
        raise CorruptData(f"{what}: not a sealed object (bad version or too short)")
    nonce = sealed[1 : 1 + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, sealed[1 + NONCE_SIZE :], aad)
    except InvalidTag:
        raise CorruptData(f"{what}: authentication failed (damaged or tampered)") from None


def normalize_password(password: str | bytes) -> bytes:
    """The password's bytes: a ``str`` is NFC-normalised then UTF-8 encoded (the same typed
    password gives the same key on every OS)."""
    if isinstance(password, bytes):
        return password
    return unicodedata.normalize("NFC", password).encode("utf-8")


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters: ``time_cost`` passes, ``memory_kib`` KiB, ``parallelism`` lanes,
    a random 16-byte ``salt``. Defaults: 3 passes, 64 MiB, 4 lanes (~0.1–0.3 s)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4
    salt: bytes = field(default_factory=lambda: os.urandom(16), repr=False)

    def derive(self, password: str | bytes) -> bytes:
        """The 32-byte key-encryption key for ``password``."""
        return hash_secret_raw(
            secret=normalize_password(password),
            salt=self.salt,
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=KEY_SIZE,
            type=Type.ID,
            version=ARGON2_VERSION,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the key file."""
        return {
            "algorithm": "argon2id",
            "version": ARGON2_VERSION,
            "time_cost": self.time_cost,
            "memory_kib": self.memory_kib,
            "parallelism": self.parallelism,
            "salt": base64.b64encode(self.salt).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KdfParams:
        """Parse ``to_json``'s form; raises ``RepositoryError`` for an unknown algorithm."""
        if data.get("algorithm") != "argon2id" or data.get("version") != ARGON2_VERSION:
            raise RepositoryError(f"Unsupported key derivation {data.get('algorithm')!r}")
        return cls(
            time_cost=int(data["time_cost"]),
            memory_kib=int(data["memory_kib"]),
            parallelism=int(data["parallelism"]),
            salt=base64.b64decode(data["salt"], validate=True),
        )


@dataclass(frozen=True, slots=True)
class Keys:
    """The repository's secret keys (32 bytes each); never printed by ``repr``."""

    encryption_key: bytes = field(repr=False)
    id_key: bytes = field(repr=False)
    # One AES-GCM context for every seal (building it costs about as much as sealing 1 KiB);
    # its methods are safe to call from several threads at once.
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.encryption_key) != KEY_SIZE or len(self.id_key) != KEY_SIZE:
            raise ValueError(f"keys must be {KEY_SIZE} bytes")
        object.__setattr__(self, "_aead", AESGCM(self.encryption_key))

    @classmethod
    def generate(cls) -> Keys:
        """Fresh random keys for a new repository."""
        return cls(secrets.token_bytes(KEY_SIZE), secrets.token_bytes(KEY_SIZE))

    def chunk_id(self, data: bytes) -> bytes:
        """The 32-byte ID of a chunk: keyed BLAKE3 of its plaintext."""
        return blake3.blake3(data, key=self.id_key).digest()

    def hasher(self) -> blake3.blake3:
        """An incremental keyed BLAKE3 (``update``/``digest``) for whole-file content IDs;
        over the same bytes it equals ``chunk_id``."""
        return blake3.blake3(key=self.id_key)

    def seal(self, plaintext: bytes, aad: bytes, *, nonce: bytes | None = None) -> bytes:
        """``seal`` under the encryption key (thread-safe)."""
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        return b"".join((_VERSION_BYTE, nonce, self._aead.encrypt(nonce, plaintext, aad)))

    def unseal(self, sealed: bytes, aad: bytes, *, what: str = "object") -> bytes:
        """``unseal`` under the encryption key; raises ``CorruptData`` (thread-safe)."""
        if len(sealed) < OVERHEAD or sealed[0] != SEAL_VERSION:
            raise CorruptData(f"{what}: not a sealed object (bad version or too short)")
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(view[1 : 1 + NONCE_SIZE], view[1 + NONCE_SIZE :], aad)
        except InvalidTag:
            raise CorruptData(f"{what}: authentication failed (damaged or tampered)") from None


def wrap_keys(keys: Keys, password: str | bytes, kdf: KdfParams | None = None) -> bytes:
    """The key file (UTF-8 JSON): KDF parameters and the keys sealed by the derived key.

    It holds nothing else: no repository content, no names.
    """
    kdf = kdf or KdfParams()
    kek = kdf.derive(password)
    wrapped = seal(kek, keys.encryption_key + keys.id_key, _WRAP_AAD)
    doc = {
        "format": _KEYFILE_FORMAT,
        "version": _KEYFILE_VERSION,
        "kdf": kdf.to_json(),
        "wrapped": base64.b64encode(wrapped).decode("ascii"),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")


def unwrap_keys(keyfile: bytes, password: str | bytes) -> tuple[Keys, KdfParams]:
    """The keys in a key file and its KDF parameters.

    Raises ``WrongPassword`` if the password does not unlock it, ``RepositoryError`` if the file
    is not a key file of a known version.
    """
    try:
        doc = json.loads(keyfile)
        if doc.get("format") != _KEYFILE_FORMAT:
            raise ValueError("not an opencbs key file")
        if doc.get("version") != _KEYFILE_VERSION:
            raise ValueError(f"unsupported key file version {doc.get('version')!r}")
        kdf = KdfParams.from_json(doc["kdf"])
        wrapped = base64.b64decode(doc["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RepositoryError(f"Unreadable key file: {exc}") from exc
    try:
        raw = unseal(kdf.derive(password), wrapped, _WRAP_AAD, what="key file")
    except CorruptData:
        raise WrongPassword() from None
    if len(raw) != 2 * KEY_SIZE:
        raise RepositoryError("Unreadable key file: wrong key length")
    return Keys(raw[:KEY_SIZE], raw[KEY_SIZE:]), kdf
