"""What binds a SecAgg+ round together: signed transcripts, the instance id, derived keys, AAD.

Every derivation follows docs/ALGORITHMS.md §1.2: HKDF-SHA256 with salt = the instance id and an info
built by ``encode_parts(label, round, ids...)``. Mask seeds are bound to the *unordered* pair (both
ends derive the same seed), share-encryption keys to the *ordered* (src, dst) pair (one key per
direction, one message per key). Client and server call these same functions, so their views
cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from secagg.config import RoundConfig, config_digest
from secagg.context import encode_parts
from secagg.errors import ConfigurationError, MalformedMessageError
from secagg.kdf import derive_key
from secagg.wire import SHARE_LENGTH, SHARE_PLAINTEXT_LENGTH, KeyAdvertisement

_ADVERTISE_LABEL: Final = "fedvault/secagg/advertise/v1"
_INSTANCE_LABEL: Final = "fedvault/secagg/instance-id/v1"
_SHARE_KEY_LABEL: Final = "fedvault/secagg/share-encryption/v1"
_SHARE_AAD_LABEL: Final = "fedvault/secagg/share-ciphertext/v1"
_MASK_SEED_LABEL: Final = "fedvault/secagg/pairwise-mask-seed/v1"
_PAIRWISE_MASK_LABEL: Final = "fedvault/secagg/pairwise-mask/v1"
_SELF_MASK_LABEL: Final = "fedvault/secagg/self-mask/v1"
#: Instance id length, bytes (SHA-256).
INSTANCE_ID_LENGTH: Final = 32

__all__ = [
    "INSTANCE_ID_LENGTH",
    "advertisement_transcript",
    "decode_share_plaintext",
    "encode_share_plaintext",
    "instance_id",
    "pairwise_mask_info",
    "pairwise_mask_seed",
    "self_mask_info",
    "share_associated_data",
    "share_encryption_key",
]


def _check_instance_id(iid: object) -> bytes:
    if not isinstance(iid, (bytes, bytearray)) or len(iid) != INSTANCE_ID_LENGTH:
        raise ConfigurationError(f"instance id must be {INSTANCE_ID_LENGTH} bytes")
    return bytes(iid)


def advertisement_transcript(
    config: RoundConfig, client_id: int, mask_public_key: bytes, encryption_public_key: bytes
) -> bytes:
    """The bytes a client signs when it advertises its keys.

    Binds round, instance nonce, the client's id, both public keys and the digest of the whole
    configuration (including ``application_config``): a relay cannot swap keys between clients or
    rounds, and clients with different parameters cannot verify each other.
    """
    return encode_parts(
        _ADVERTISE_LABEL,
        config.round_index,
        config.instance_nonce,
        client_id,
        mask_public_key,
        encryption_public_key,
        config_digest(config),
    )


def instance_id(config: RoundConfig, advertisements: Sequence[KeyAdvertisement]) -> bytes:
    """iid = SHA-256 of the length-prefixed (id, c_i, e_i) list sorted by id (Google FCP's session
    id), here also prefixed by the config digest. 32 bytes; the HKDF salt of every round key."""
    entries = sorted(advertisements, key=lambda entry: entry.client_id)
    parts: list[bytes | str | int] = [_INSTANCE_LABEL, config_digest(config), len(entries)]
    for entry in entries:
        parts += [entry.client_id, entry.mask_public_key, entry.encryption_public_key]
    return hashlib.sha256(encode_parts(*parts)).digest()


def share_encryption_key(
    shared_secret: bytes, iid: bytes, round_index: int, source: int, destination: int
) -> bytes:
    """AES-256-GCM key for the one share message from ``source`` to ``destination`` (32 bytes)."""
    return derive_key(
        shared_secret,
        salt=_check_instance_id(iid),
        info=encode_parts(_SHARE_KEY_LABEL, round_index, source, destination),
    )


def share_associated_data(iid: bytes, round_index: int, source: int, destination: int) -> bytes:
    """AAD of the share ciphertext from ``source`` to ``destination``: (iid, r, src, dst)."""
    return encode_parts(_SHARE_AAD_LABEL, _check_instance_id(iid), round_index, source, destination)


def pairwise_mask_seed(
    shared_secret: bytes, iid: bytes, round_index: int, first: int, second: int
) -> bytes:
    """s_ij, the 32-byte PRG seed of the pairwise mask of clients ``first`` and ``second``.

    Symmetric in the pair: both clients (and the server, after rebuilding a dropped client's key)
    derive the same seed from the X25519 secret.
    """
    low, high = sorted((first, second))
    if low == high:
        raise ConfigurationError(f"a pairwise mask needs two different clients, got {first} twice")
    return derive_key(
        shared_secret,
        salt=_check_instance_id(iid),
        info=encode_parts(_MASK_SEED_LABEL, round_index, low, high),
    )


def pairwise_mask_info(iid: bytes, round_index: int) -> bytes:
    """PRG context of every pairwise mask of the round (the seed already names the pair)."""
    return encode_parts(_PAIRWISE_MASK_LABEL, _check_instance_id(iid), round_index)


def self_mask_info(iid: bytes, round_index: int) -> bytes:
    """PRG context of every self mask of the round."""
    return encode_parts(_SELF_MASK_LABEL, _check_instance_id(iid), round_index)


def encode_share_plaintext(source: int, destination: int, seed_share: bytes, key_share: bytes) -> bytes:
    """src (4) || dst (4) || seed share (70) || mask-key share (70): the sealed payload, 148 bytes."""
    if len(seed_share) != SHARE_LENGTH or len(key_share) != SHARE_LENGTH:
        raise ConfigurationError(f"shares must be {SHARE_LENGTH} bytes each")
    return source.to_bytes(4, "big") + destination.to_bytes(4, "big") + seed_share + key_share


def decode_share_plaintext(plaintext: bytes) -> tuple[int, int, bytes, bytes]:
    """Inverse of ``encode_share_plaintext``: (source, destination, seed_share, key_share).

    Raises:
        MalformedMessageError: the plaintext is not exactly 148 bytes.
    """
    if len(plaintext) != SHARE_PLAINTEXT_LENGTH:
        raise MalformedMessageError(
            f"share plaintext must be {SHARE_PLAINTEXT_LENGTH} bytes, got {len(plaintext)}"
        )
    return (
        int.from_bytes(plaintext[:4], "big"),
        int.from_bytes(plaintext[4:8], "big"),
        plaintext[8 : 8 + SHARE_LENGTH],
        plaintext[8 + SHARE_LENGTH :],
    )
