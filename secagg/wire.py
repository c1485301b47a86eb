"""Versioned binary wire messages of the SecAgg+ protocol, with strict validation.

Every message starts with the same 46-byte header (integers big-endian)::

    magic b"FVSA" (4) | version (1) | type (1) | round_index (8, unsigned) | instance_nonce (32)

followed by a type-specific body of fixed-width fields and counted lists. Parsing is strict: wrong
magic, version or type, a length that does not match, a list that is unsorted or repeats an id,
trailing bytes, or a value out of range raise ``MalformedMessageError`` and nothing else. Masked
vectors travel bit-packed at exactly ``bits`` bits per coordinate (``secagg.bitpack``), against
Flower's 64.

Server -> client: AdvertiseKeysRequest (the round config), ShareKeysRequest (all advertised keys),
MaskedInputRequest (share ciphertexts addressed to the client), UnmaskRequest (whose shares to
reveal). Client -> server: the four matching ``...Response`` messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Union

import numpy as np

from secagg.aead import SEAL_OVERHEAD
from secagg.bitpack import pack_bits, unpack_bits
from secagg.config import (
    INSTANCE_NONCE_LENGTH,
    MAX_APPLICATION_CONFIG_LENGTH,
    MAX_CLIENT_ID,
    MAX_CLIENTS,
    MAX_VECTOR_LENGTH,
    RoundConfig,
)
from secagg.errors import ConfigurationError, MalformedMessageError

MAGIC: Final = b"FVSA"
VERSION: Final = 1
#: Raw X25519 public key length, bytes.
PUBLIC_KEY_LENGTH: Final = 32
#: Ed25519 signature length, bytes.
SIGNATURE_LENGTH: Final = 64
#: ``secagg.shamir.Share.to_bytes()`` length: x (4 B) || y (66 B).
SHARE_LENGTH: Final = 70
#: Plaintext of one encrypted share: src (4) || dst (4) || seed share || mask-key share.
SHARE_PLAINTEXT_LENGTH: Final = 8 + 2 * SHARE_LENGTH
#: AES-GCM sealed share: nonce (12) || ciphertext || tag (16).
SEALED_SHARE_LENGTH: Final = SHARE_PLAINTEXT_LENGTH + SEAL_OVERHEAD

_HEADER: Final = struct.Struct(">4sBBQ32s")
HEADER_LENGTH: Final = _HEADER.size

# Type tags. Odd: server -> client; even: client -> server.
ADVERTISE_KEYS_REQUEST: Final = 1
ADVERTISE_KEYS_RESPONSE: Final = 2
SHARE_KEYS_REQUEST: Final = 3
SHARE_KEYS_RESPONSE: Final = 4
MASKED_INPUT_REQUEST: Final = 5
MASKED_INPUT_RESPONSE: Final = 6
UNMASK_REQUEST: Final = 7
UNMASK_RESPONSE: Final = 8

__all__ = [
    "HEADER_LENGTH",
    "MAGIC",
    "SEALED_SHARE_LENGTH",
    "SHARE_LENGTH",
    "SHARE_PLAINTEXT_LENGTH",
    "VERSION",
    "AdvertiseKeysRequest",
    "AdvertiseKeysResponse",
    "EncryptedShare",
    "KeyAdvertisement",
    "MaskedInputRequest",
    "MaskedInputResponse",
    "Message",
    "RevealedShare",
    "ShareKeysRequest",
    "ShareKeysResponse",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
]


# --- field validation ------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MalformedMessageError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not low <= value <= high:
        raise MalformedMessageError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_bytes(name: str, value: object, length: int) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != length:
        raise MalformedMessageError(f"{name} must be {length} bytes, got {len(value)}")
    return value


def _check_client_id(name: str, value: object) -> int:
    return _check_int(name, value, 0, MAX_CLIENT_ID)


def _check_sorted_ids(name: str, ids: tuple[int, ...]) -> None:
    if any(later <= earlier for earlier, later in zip(ids, ids[1:])):
        raise MalformedMessageError(f"{name} must be strictly increasing (sorted, no repeats)")


def _check_tuple(name: str, value: object, item_type: type | tuple[type, ...], max_count: int) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise MalformedMessageError(f"{name} must be a tuple, got {type(value).__name__}")
    items = tuple(value)
    if len(items) > max_count:
        raise MalformedMessageError(f"{name} has {len(items)} entries; at most {max_count}")
    for item in items:
        if not isinstance(item, item_type):
            expected = getattr(item_type, "__name__", "int")
            raise MalformedMessageError(f"{name} entries must be {expected}, got {type(item).__name__}")
    return items


# --- byte reader -----------------------------------------------------------------------------


class _Reader:
    """Bounds-checked big-endian reader; every overrun is a MalformedMessageError."""

    __slots__ = ("_view", "_offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self._view = data
        self._offset = offset

    @property
    def remaining(self) -> int:
        return len(self._view) - self._offset

    def take(self, length: int, what: str) -> bytes:
        if length > self.remaining:
            raise MalformedMessageError(
                f"truncated message: {what} needs {length} bytes, {self.remaining} left"
            )
        chunk = self._view[self._offset : self._offset + length]
        self._offset += length
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def count(self, what: str, entry_length: int, max_count: int) -> int:
        """A u32 list length, refused before allocation if the bytes cannot hold that many entries."""
        count = self.u32(f"{what} count")
        if count > max_count:
            raise MalformedMessageError(f"{what} count {count} exceeds {max_count}")
        if count * entry_length > self.remaining:
            raise MalformedMessageError(
                f"truncated message: {count} {what} need {count * entry_length} bytes, "
                f"{self.remaining} left"
            )
        return count

    def finish(self) -> None:
        if self.remaining:
            raise MalformedMessageError(f"{self.remaining} trailing bytes after the message body")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """Fields shared by every message: the round and the server's instance nonce."""

    round_index: int
    instance_nonce: bytes

    TYPE: ClassVar[int] = 0

    def _check_header(self) -> None:
        _check_int("round_index", self.round_index, 0, 2**63 - 1)
        object.__setattr__(
            self,
            "instance_nonce",
            _check_bytes("instance_nonce", self.instance_nonce, INSTANCE_NONCE_LENGTH),
        )

    def _header_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.TYPE, self.round_index, self.instance_nonce)

    def to_bytes(self) -> bytes:
        """The message's canonical wire encoding."""
        return self._header_bytes() + self._body_bytes()

    def _body_bytes(self) -> bytes:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes):
        """Parse ``data`` as this message type; MalformedMessageError on any deviation."""
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MalformedMessageError(
                f"expected a {cls.__name__}, got a {type(message).__name__}"
            )
        return message


@dataclass(frozen=True)
class AdvertiseKeysRequest(_Header):
    """Server -> every sampled client: the round's configuration (docs/ALGORITHMS.md §1.1, stage 1).

    The header's round index and nonce are the config's; construct with ``for_config``.
    """

    config: RoundConfig

    TYPE: ClassVar[int] = ADVERTISE_KEYS_REQUEST

    def __post_init__(self) -> None:
        self._check_header()
        if not isinstance(self.config, RoundConfig):
            raise MalformedMessageError(f"config must be a RoundConfig, got {type(self.config).__name__}")
        if (self.round_index, self.instance_nonce) != (
            self.config.round_index,
            self.config.instance_nonce,
        ):
            raise MalformedMessageError("header round/nonce differ from the config's")

    @classmethod
    def for_config(cls, config: RoundConfig) -> AdvertiseKeysRequest:
        return cls(config.round_index, config.instance_nonce, config)

    def _body_bytes(self) -> bytes:
        config = self.config
        return b"".join(
            (
                _u32(config.client_count),
                b"".join(_u32(i) for i in config.client_ids),
                _u32(config.neighbours_k),
                _u32(config.threshold),
                _u32(config.minimum_survivors),
                bytes((config.bits,)),
                _u32(config.vector_length),
                _u32(len(config.application_config)),
                config.application_config,
            )
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> AdvertiseKeysRequest:
        count = reader.count("client ids", 4, MAX_CLIENTS)
        raw_ids = reader.take(4 * count, "client ids")
        ids = tuple(int.from_bytes(raw_ids[i : i + 4], "big") for i in range(0, 4 * count, 4))
        _check_sorted_ids("client ids", ids)
        neighbours_k = reader.u32("neighbours_k")
        threshold = reader.u32("threshold")
        minimum_survivors = reader.u32("minimum_survivors")
        bits = reader.u8("bits")
        vector_length = reader.u32("vector_length")
        app_length = reader.u32("application_config length")
        if app_length > MAX_APPLICATION_CONFIG_LENGTH:
            raise MalformedMessageError(f"application_config of {app_length} bytes is too long")
        application_config = reader.take(app_length, "application_config")
        try:
            config = RoundConfig(
                round_index=round_index,
                instance_nonce=nonce,
                client_ids=ids,
                neighbours_k=neighbours_k,
                threshold=threshold,
                bits=bits,
                vector_length=vector_length,
                application_config=application_config,
                minimum_survivors=minimum_survivors,
            )
        except ConfigurationError as error:
            raise MalformedMessageError(f"invalid round config: {error}") from None
        return cls(round_index, nonce, config)


@dataclass(frozen=True)
class AdvertiseKeysResponse(_Header):
    """Client -> server: two fresh X25519 public keys, signed with the client's Ed25519 key.

    Attributes:
        sender: the advertising client's id.
        mask_public_key: c_i, 32 bytes (pairwise mask agreement).
        encryption_public_key: e_i, 32 bytes (share encryption agreement).
        signature: 64-byte Ed25519 signature over ``secagg.client.advertisement_transcript``.
    """

    sender: int
    mask_public_key: bytes
    encryption_public_key: bytes
    signature: bytes

    TYPE: ClassVar[int] = ADVERTISE_KEYS_RESPONSE
    _BODY: ClassVar[struct.Struct] = struct.Struct(">I32s32s64s")

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("sender", self.sender)
        for name, length in (
            ("mask_public_key", PUBLIC_KEY_LENGTH),
            ("encryption_public_key", PUBLIC_KEY_LENGTH),
            ("signature", SIGNATURE_LENGTH),
        ):
            object.__setattr__(self, name, _check_bytes(name, getattr(self, name), length))

    def _body_bytes(self) -> bytes:
        return self._BODY.pack(
            self.sender, self.mask_public_key, self.encryption_public_key, self.signature
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> AdvertiseKeysResponse:
        fields = cls._BODY.unpack(reader.take(cls._BODY.size, "advertisement"))
        return cls(round_index, nonce, *fields)


@dataclass(frozen=True)
class KeyAdvertisement:
    """One client's signed public keys, as relayed by the server in ShareKeysRequest."""

    client_id: int
    mask_public_key: bytes
    encryption_public_key: bytes
    signature: bytes

    _BODY: ClassVar[struct.Struct] = struct.Struct(">I32s32s64s")

    def __post_init__(self) -> None:
        _check_client_id("client_id", self.client_id)
        for name, length in (
            ("mask_public_key", PUBLIC_KEY_LENGTH),
            ("encryption_public_key", PUBLIC_KEY_LENGTH),
            ("signature", SIGNATURE_LENGTH),
        ):
            object.__setattr__(self, name, _check_bytes(name, getattr(self, name), length))

    def to_bytes(self) -> bytes:
        return self._BODY.pack(
            self.client_id, self.mask_public_key, self.encryption_public_key, self.signature
        )


@dataclass(frozen=True)
class ShareKeysRequest(_Header):
    """Server -> each advertised client: every valid advertisement of the round, sorted by id.

    All clients get the same list, so they compute the same instance id from it.
    """

    advertisements: tuple[KeyAdvertisement, ...]

    TYPE: ClassVar[int] = SHARE_KEYS_REQUEST

    def __post_init__(self) -> None:
        self._check_header()
        entries = _check_tuple("advertisements", self.advertisements, KeyAdvertisement, MAX_CLIENTS)
        if not entries:
            raise MalformedMessageError("advertisements must not be empty")
        _check_sorted_ids("advertisement ids", tuple(entry.client_id for entry in entries))
        object.__setattr__(self, "advertisements", entries)

    def _body_bytes(self) -> bytes:
        return _u32(len(self.advertisements)) + b"".join(
            entry.to_bytes() for entry in self.advertisements
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> ShareKeysRequest:
        size = KeyAdvertisement._BODY.size
        count = reader.count("advertisements", size, MAX_CLIENTS)
        entries = tuple(
            KeyAdvertisement(*KeyAdvertisement._BODY.unpack(reader.take(size, "advertisement")))
            for _ in range(count)
        )
        return cls(round_index, nonce, entries)


@dataclass(frozen=True)
class EncryptedShare:
    """One AES-GCM sealed share pair; ``peer`` is the destination (ShareKeysResponse) or the
    source (MaskedInputRequest) client."""

    peer: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_client_id("peer", self.peer)
        object.__setattr__(
            self, "ciphertext", _check_bytes("ciphertext", self.ciphertext, SEALED_SHARE_LENGTH)
        )

    def to_bytes(self) -> bytes:
        return _u32(self.peer) + self.ciphertext


def _encrypted_shares(name: str, value: object) -> tuple[EncryptedShare, ...]:
    shares = _check_tuple(name, value, EncryptedShare, MAX_CLIENTS)
    _check_sorted_ids(f"{name} peers", tuple(share.peer for share in shares))
    return shares


def _parse_encrypted_shares(reader: _Reader) -> tuple[EncryptedShare, ...]:
    size = 4 + SEALED_SHARE_LENGTH
    count = reader.count("encrypted shares", size, MAX_CLIENTS)
    shares = []
    for _ in range(count):
        chunk = reader.take(size, "encrypted share")
        shares.append(EncryptedShare(int.from_bytes(chunk[:4], "big"), chunk[4:]))
    return tuple(shares)


@dataclass(frozen=True)
class ShareKeysResponse(_Header):
    """Client -> server: one sealed share pair per neighbour, sorted by destination id."""

    sender: int
    shares: tuple[EncryptedShare, ...]

    TYPE: ClassVar[int] = SHARE_KEYS_RESPONSE

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("sender", self.sender)
        object.__setattr__(self, "shares", _encrypted_shares("shares", self.shares))

    def _body_bytes(self) -> bytes:
        return _u32(self.sender) + _u32(len(self.shares)) + b"".join(s.to_bytes() for s in self.shares)

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> ShareKeysResponse:
        sender = reader.u32("sender")
        return cls(round_index, nonce, sender, _parse_encrypted_shares(reader))


@dataclass(frozen=True)
class MaskedInputRequest(_Header):
    """Server -> each client that shared keys: the sealed shares addressed to it, by source id."""

    recipient: int
    shares: tuple[EncryptedShare, ...]

    TYPE: ClassVar[int] = MASKED_INPUT_REQUEST

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("recipient", self.recipient)
        object.__setattr__(self, "shares", _encrypted_shares("shares", self.shares))

    def _body_bytes(self) -> bytes:
        return (
            _u32(self.recipient)
            + _u32(len(self.shares))
            + b"".join(s.to_bytes() for s in self.shares)
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> MaskedInputRequest:
        recipient = reader.u32("recipient")
        return cls(round_index, nonce, recipient, _parse_encrypted_shares(reader))


@dataclass(frozen=True, eq=False)
class MaskedInputResponse(_Header):
    """Client -> server: the masked vector y_i, (m,) uint32 mod 2**bits, bit-packed on the wire.

    Body: sender (4) | bits (1) | m (4) | ceil(m * bits / 8) packed bytes.
    """

    sender: int
    bits: int
    vector: np.ndarray

    TYPE: ClassVar[int] = MASKED_INPUT_RESPONSE

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("sender", self.sender)
        bits = _check_int("bits", self.bits, 1, 32)
        vector = self.vector
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32 or vector.ndim != 1:
            raise MalformedMessageError("vector must be a 1-D np.uint32 array")
        if not 1 <= vector.shape[0] <= MAX_VECTOR_LENGTH:
            raise MalformedMessageError(
                f"vector length must be in 1..{MAX_VECTOR_LENGTH}, got {vector.shape[0]}"
            )
        if bits < 32 and int(vector.max()) >> bits:
            raise MalformedMessageError(f"vector has entries >= 2**{bits}")
        if vector.flags.writeable:
            vector = vector.copy()
            vector.flags.writeable = False
        object.__setattr__(self, "vector", vector)

    def _body_bytes(self) -> bytes:
        return (
            _u32(self.sender)
            + bytes((self.bits,))
            + _u32(self.vector.shape[0])
            + pack_bits(self.vector, self.bits)
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> MaskedInputResponse:
        sender = reader.u32("sender")
        bits = reader.u8("bits")
        length = reader.u32("vector length")
        if not 1 <= bits <= 32:
            raise MalformedMessageError(f"bits must be in 1..32, got {bits}")
        if not 1 <= length <= MAX_VECTOR_LENGTH:
            raise MalformedMessageError(f"vector length must be in 1..{MAX_VECTOR_LENGTH}, got {length}")
        packed_length = (length * bits + 7) // 8
        packed = reader.take(packed_length, "packed vector")
        vector = unpack_bits(packed, bits, length)
        vector.flags.writeable = False
        return cls(round_index, nonce, sender, bits, vector)


@dataclass(frozen=True)
class UnmaskRequest(_Header):
    """Server -> each survivor: reveal seed shares of ``seed_owners`` and mask-key shares of
    ``key_owners`` (docs/ALGORITHMS.md §1.5: disjoint sets; the recipient itself is a seed owner)."""

    recipient: int
    seed_owners: tuple[int, ...]
    key_owners: tuple[int, ...]

    TYPE: ClassVar[int] = UNMASK_REQUEST

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("recipient", self.recipient)
        for name in ("seed_owners", "key_owners"):
            ids = _check_tuple(name, getattr(self, name), (int, np.integer), MAX_CLIENTS)
            ids = tuple(_check_client_id(name, i) for i in ids)
            _check_sorted_ids(name, ids)
            object.__setattr__(self, name, ids)

    def _body_bytes(self) -> bytes:
        return b"".join(
            (
                _u32(self.recipient),
                _u32(len(self.seed_owners)),
                b"".join(_u32(i) for i in self.seed_owners),
                _u32(len(self.key_owners)),
                b"".join(_u32(i) for i in self.key_owners),
            )
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> UnmaskRequest:
        recipient = reader.u32("recipient")
        lists = []
        for name in ("seed owners", "key owners"):
            count = reader.count(name, 4, MAX_CLIENTS)
            lists.append(tuple(reader.u32(name) for _ in range(count)))
        return cls(round_index, nonce, recipient, lists[0], lists[1])


@dataclass(frozen=True)
class RevealedShare:
    """One Shamir share (``secagg.shamir.Share.to_bytes()``, 70 bytes) of ``owner``'s secret."""

    owner: int
    share: bytes

    def __post_init__(self) -> None:
        _check_client_id("owner", self.owner)
        object.__setattr__(self, "share", _check_bytes("share", self.share, SHARE_LENGTH))

    def to_bytes(self) -> bytes:
        return _u32(self.owner) + self.share


def _revealed_shares(name: str, value: object) -> tuple[RevealedShare, ...]:
    shares = _check_tuple(name, value, RevealedShare, MAX_CLIENTS)
    _check_sorted_ids(f"{name} owners", tuple(share.owner for share in shares))
    return shares


@dataclass(frozen=True)
class UnmaskResponse(_Header):
    """Client -> server: the requested seed shares and mask-key shares, each sorted by owner."""

    sender: int
    seed_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]

    TYPE: ClassVar[int] = UNMASK_RESPONSE

    def __post_init__(self) -> None:
        self._check_header()
        _check_client_id("sender", self.sender)
        object.__setattr__(self, "seed_shares", _revealed_shares("seed_shares", self.seed_shares))
        object.__setattr__(self, "key_shares", _revealed_shares("key_shares", self.key_shares))

    def _body_bytes(self) -> bytes:
        return b"".join(
            (
                _u32(self.sender),
                _u32(len(self.seed_shares)),
                b"".join(s.to_bytes() for s in self.seed_shares),
                _u32(len(self.key_shares)),
                b"".join(s.to_bytes() for s in self.key_shares),
            )
        )

    @classmethod
    def _parse(cls, round_index: int, nonce: bytes, reader: _Reader) -> UnmaskResponse:
        sender = reader.u32("sender")
        lists = []
        for name in ("seed shares", "key shares"):
            count = reader.count(name, 4 + SHARE_LENGTH, MAX_CLIENTS)
            entries = []
            for _ in range(count):
                chunk = reader.take(4 + SHARE_LENGTH, name)
                entries.append(RevealedShare(int.from_bytes(chunk[:4], "big"), chunk[4:]))
            lists.append(tuple(entries))
        return cls(round_index, nonce, sender, lists[0], lists[1])


Message = Union[
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    ShareKeysRequest,
    ShareKeysResponse,
    MaskedInputRequest,
    MaskedInputResponse,
    UnmaskRequest,
    UnmaskResponse,
]

_TYPES: Final[dict[int, type]] = {
    cls.TYPE: cls
    for cls in (
        AdvertiseKeysRequest,
        AdvertiseKeysResponse,
        ShareKeysRequest,
        ShareKeysResponse,
        MaskedInputRequest,
        MaskedInputResponse,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def decode_message(data: bytes) -> Message:
    """Parse any SecAgg+ wire message.

    Raises:
        MalformedMessageError: not bytes, wrong magic/version/type, truncated, trailing bytes, or
            any field out of range. Never any other exception.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"a wire message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        raise MalformedMessageError(f"message of {len(data)} bytes is shorter than the header")
    magic, version, type_tag, round_index, nonce = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise MalformedMessageError(f"bad magic {magic!r}; not a fedvault SecAgg message")
    if version != VERSION:
        raise MalformedMessageError(f"unsupported wire version {version}; this build speaks {VERSION}")
    message_type = _TYPES.get(type_tag)
    if message_type is None:
        raise MalformedMessageError(f"unknown message type {type_tag}")
    if round_index > 2**63 - 1:
        raise MalformedMessageError(f"round index {round_index} out of range")
    reader = _Reader(data, HEADER_LENGTH)
    message = message_type._parse(round_index, nonce, reader)
    reader.finish()
    return message
