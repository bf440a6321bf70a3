"""Key material, chunk IDs and per-object encryption of a repository.

- Two random 32-byte keys per repository: the *encryption key* (AES-256-GCM for every stored
  object) and the *ID key* (keyed BLAKE3 for chunk and content IDs, so IDs reveal nothing about
  content to whoever lacks the key).
- Both are wrapped in the *key file* by a key derived from the backup set's encryption password
  with Argon2id; the KDF parameters and salt live in the key file, so their cost can change.
  They are bounded when read (``KDF_LIMITS``: a crafted key file cannot make opening ask for a
  terabyte before anything is checked) and, from key file version 2, they are the associated
  data of the wrapped keys, so a changed parameter fails authentication like a wrong password.
  Version 1 key files (no parameters in the associated data) are still read: their parameters
  already decide the derived key, so a changed one fails there too; the next password change
  writes version 2.
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

from opencbs.engine.repo_errors import CorruptData, KeyFileRefused, RepositoryError, WrongPassword

KEY_SIZE = 32
ID_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_VERSION = 1
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
_VERSION_BYTE = bytes([SEAL_VERSION])

_KEYFILE_FORMAT = "opencbs-keyfile"
_KEYFILE_VERSION = 2
_LEGACY_KEYFILE_VERSION = 1
_WRAP_AAD_V1 = b"opencbs:keyfile:v1"
_WRAP_AAD_V2 = b"opencbs:keyfile:v2\x00"
#: A key file is a few hundred bytes; anything far larger is not one (refused before parsing).
MAX_KEYFILE_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """Argon2id costs a key file may ask for (checked before any derivation): passes
    ``time_cost`` in ``time``, lanes ``parallelism`` in ``parallelism``, ``memory_kib`` from
    Argon2's own minimum (8 KiB per lane) to ``max_memory_kib``, salt bytes in ``salt``. We
    write 8 passes over 24 MiB with 4 lanes and a 16-byte salt (earlier versions 3 passes over
    64 MiB): the bounds leave 4x, 10x and 4x room, and at most 32 passes over 256 MiB is what a
    tampered file can make a reader spend."""

    time: tuple[int, int] = (1, 32)
    max_memory_kib: int = 256 * 1024  # 256 MiB: what a tampered file can make a reader spend
    parallelism: tuple[int, int] = (1, 16)
    salt: tuple[int, int] = (16, 64)

    def problem(self, time_cost: int, memory_kib: int, parallelism: int, salt_size: int) -> str:
        """Why these costs are refused (one phrase), or ``""`` when they are accepted."""
        lo, hi = self.time
        if not lo <= time_cost <= hi:
            return f"time_cost {time_cost} is outside {lo}..{hi}"
        lo, hi = self.parallelism
        if not lo <= parallelism <= hi:
            return f"parallelism {parallelism} is outside {lo}..{hi}"
        lo, hi = 8 * parallelism, self.max_memory_kib
        if not lo <= memory_kib <= hi:
            return f"memory_kib {memory_kib} is outside {lo}..{hi}"
        lo, hi = self.salt
        if not lo <= salt_size <= hi:
            return f"a salt of {salt_size} bytes is outside {lo}..{hi}"
        return ""


#: The one definition of the accepted key-derivation costs (``KdfLimits``).
KDF_LIMITS = KdfLimits()


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
    a random 16-byte ``salt``. Defaults: 8 passes over 24 MiB, 4 lanes (~0.1 s): the same
    memory-time product as RFC 9106's low-memory profile (3 passes over 64 MiB), so the same
    cost to an attacker by the area-time measure Argon2 is judged by, at less than half the
    peak memory of every command that opens a repository (a prune's peak memory, issue 14).
    Repositories made with other costs keep theirs (the key file records them). Raises
    ``ValueError`` for costs outside ``KDF_LIMITS``."""

    time_cost: int = 8
    memory_kib: int = 24 * 1024
    parallelism: int = 4
    salt: bytes = field(default_factory=lambda: os.urandom(16), repr=False)

    def __post_init__(self) -> None:
        why = KDF_LIMITS.problem(self.time_cost, self.memory_kib, self.parallelism, len(self.salt))
        if why:
            raise ValueError(why)

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

    def associated_data(self) -> bytes:
        """The canonical bytes of these parameters (sorted compact JSON of ``to_json``)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KdfParams:
        """Parse ``to_json``'s form, bounds first (no derivation runs for a refused file).

        Raises ``RepositoryError`` for an unknown algorithm or a malformed field and
        ``KeyFileRefused`` for costs outside ``KDF_LIMITS``."""
        if data.get("algorithm") != "argon2id" or data.get("version") != ARGON2_VERSION:
            raise RepositoryError(f"Unsupported key derivation {data.get('algorithm')!r}")
        costs = [data.get(k) for k in ("time_cost", "memory_kib", "parallelism")]
        ints = [v for v in costs if type(v) is int]
        if len(ints) != len(costs):
            raise RepositoryError("Unreadable key file: key derivation costs must be integers")
        time_cost, memory_kib, parallelism = ints
        salt = base64.b64decode(data["salt"], validate=True)
        why = KDF_LIMITS.problem(time_cost, memory_kib, parallelism, len(salt))
        if why:
            raise KeyFileRefused(f"its key derivation asks for too much or too little: {why}")
        return cls(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism, salt=salt)


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


def _wrap_aad(version: int, kdf: KdfParams) -> bytes:
    """The associated data of the wrapped keys: version 2 binds the KDF parameters (and salt)."""
    if version == _LEGACY_KEYFILE_VERSION:
        return _WRAP_AAD_V1
    return _WRAP_AAD_V2 + kdf.associated_data()


def wrap_keys(keys: Keys, password: str | bytes, kdf: KdfParams | None = None) -> bytes:
    """The key file (UTF-8 JSON, version 2): KDF parameters and the keys sealed by the derived
    key, with the parameters as associated data.

    It holds nothing else: no repository content, no names.
    """
    kdf = kdf or KdfParams()
    kek = kdf.derive(password)
    wrapped = seal(kek, keys.encryption_key + keys.id_key, _wrap_aad(_KEYFILE_VERSION, kdf))
    doc = {
        "format": _KEYFILE_FORMAT,
        "version": _KEYFILE_VERSION,
        "kdf": kdf.to_json(),
        "wrapped": base64.b64encode(wrapped).decode("ascii"),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")


def unwrap_keys(keyfile: bytes, password: str | bytes) -> tuple[Keys, KdfParams]:
    """The keys in a key file and its KDF parameters.

    Versions 2 and 1 are read (module docstring). Every check runs before the derivation.
    Raises ``WrongPassword`` if the password does not unlock it (also when its parameters were
    changed: they are authenticated), ``KeyFileRefused`` if it is too large or asks for
    key-derivation costs outside ``KDF_LIMITS``, ``RepositoryError`` if the file is not a key
    file of a known version.
    """
    if len(keyfile) > MAX_KEYFILE_SIZE:
        raise KeyFileRefused(f"it is {len(keyfile)} bytes, more than {MAX_KEYFILE_SIZE}")
    try:
        doc = json.loads(keyfile)
        if doc.get("format") != _KEYFILE_FORMAT:
            raise ValueError("not an opencbs key file")
        version = doc.get("version")
        if version not in (_KEYFILE_VERSION, _LEGACY_KEYFILE_VERSION) or type(version) is not int:
            raise ValueError(f"unsupported key file version {version!r}")
        kdf = KdfParams.from_json(doc["kdf"])
        wrapped = base64.b64decode(doc["wrapped"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RepositoryError(f"Unreadable key file: {exc}") from exc
    if len(wrapped) != OVERHEAD + 2 * KEY_SIZE:
        raise RepositoryError("Unreadable key file: wrong key length")
    try:
        raw = unseal(kdf.derive(password), wrapped, _wrap_aad(version, kdf), what="key file")
    except CorruptData:
        raise WrongPassword() from None
    if len(raw) != 2 * KEY_SIZE:
        raise RepositoryError("Unreadable key file: wrong key length")
    return Keys(raw[:KEY_SIZE], raw[KEY_SIZE:]), kdf
