"""HKDF-SHA256 key derivation: the only way fedvault turns a shared secret or a seed into a key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import ConfigurationError, InvalidKeyError

# RFC 5869: HKDF-Expand can produce at most 255 blocks of the hash output.
_MAX_OUTPUT_LENGTH = 255 * 32
_BYTES_LIKE = (bytes, bytearray, memoryview)

__all__ = ["derive_key"]


def derive_key(key_material: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """Derive ``length`` bytes from ``key_material`` with HKDF-SHA256 (Krawczyk, RFC 5869).

    Args:
        key_material: the input keying material (an X25519 shared secret, a 32-byte seed, ...);
            must not be empty.
        salt: the extract salt (fedvault passes the instance id); empty means RFC 5869's default.
        info: the context, built with ``secagg.context.encode_parts(label, ...)`` so that every
            purpose gets an independent key.
        length: output length in bytes, 1 .. 8160.

    Raises:
        InvalidKeyError: ``key_material`` is not bytes or is empty.
        ConfigurationError: ``salt``/``info`` are not bytes, or ``length`` is out of range.
    """
    if not isinstance(key_material, _BYTES_LIKE):
        raise InvalidKeyError(f"key_material must be bytes, got {type(key_material).__name__}")
    if len(key_material) == 0:
        raise InvalidKeyError("key_material is empty; refusing to derive a key from nothing")
    if not isinstance(salt, _BYTES_LIKE):
        raise ConfigurationError(f"salt must be bytes, got {type(salt).__name__}")
    if not isinstance(info, _BYTES_LIKE):
        raise ConfigurationError(f"info must be bytes, got {type(info).__name__}")
    if isinstance(length, bool) or not isinstance(length, int):
        raise ConfigurationError(f"length must be an int, got {type(length).__name__}")
    if not 1 <= length <= _MAX_OUTPUT_LENGTH:
        raise ConfigurationError(f"length must be in 1..{_MAX_OUTPUT_LENGTH} bytes, got {length}")
    # An empty salt acts as RFC 5869's default (HashLen zero bytes): HMAC zero-pads its key.
    kdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=bytes(salt), info=bytes(info))
    return kdf.derive(bytes(key_material))
