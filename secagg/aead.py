"""AES-256-GCM sealing with a fresh random nonce and mandatory associated data (NIST SP 800-38D).

Wire layout of a sealed message: ``nonce (12 B) || ciphertext (len(plaintext) B) || tag (16 B)``.
Random 96-bit nonces are safe here because every key seals only a handful of messages (one share
message per ordered client pair and round; one history record per key).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.errors import AuthenticationError, ConfigurationError, InvalidKeyError

KEY_LENGTH = 32
NONCE_LENGTH = 12
TAG_LENGTH = 16
SEAL_OVERHEAD = NONCE_LENGTH + TAG_LENGTH
_BYTES_LIKE = (bytes, bytearray, memoryview)

__all__ = ["SEAL_OVERHEAD", "open_sealed", "seal"]


def _cipher(key: object) -> AESGCM:
    if not isinstance(key, _BYTES_LIKE) or len(key) != KEY_LENGTH:
        raise InvalidKeyError(f"AES-256-GCM key must be {KEY_LENGTH} bytes")
    return AESGCM(bytes(key))


def _associated(associated_data: object) -> bytes:
    if not isinstance(associated_data, _BYTES_LIKE):
        raise ConfigurationError(f"associated_data must be bytes, got {type(associated_data).__name__}")
    if len(associated_data) == 0:
        # Unbound ciphertexts can be replayed into another round or slot: refuse them outright.
        raise ConfigurationError("associated_data is empty; bind the context with encode_parts(...)")
    return bytes(associated_data)


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` bound to ``associated_data``.

    Args:
        key: 32-byte AES-256 key (from ``derive_key``).
        plaintext: any bytes.
        associated_data: non-empty context bytes (``encode_parts(...)``), authenticated, not sent.

    Returns:
        ``len(plaintext) + SEAL_OVERHEAD`` bytes: nonce || ciphertext || tag.

    Raises:
        InvalidKeyError: the key is not 32 bytes.
        ConfigurationError: plaintext or associated data is not bytes, or the associated data is empty.
    """
    cipher = _cipher(key)
    if not isinstance(plaintext, _BYTES_LIKE):
        raise ConfigurationError(f"plaintext must be bytes, got {type(plaintext).__name__}")
    aad = _associated(associated_data)
    nonce = os.urandom(NONCE_LENGTH)
    return nonce + cipher.encrypt(nonce, bytes(plaintext), aad)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """Decrypt a ``seal`` output; return the plaintext only if the tag verifies.

    Raises:
        AuthenticationError: ``sealed`` is shorter than ``SEAL_OVERHEAD`` or not bytes, or the tag
            does not verify (wrong key, modified nonce/ciphertext/tag, or different associated data).
        InvalidKeyError: the key is not 32 bytes.
        ConfigurationError: the associated data is not bytes or is empty.
    """
    cipher = _cipher(key)
    aad = _associated(associated_data)
    if not isinstance(sealed, _BYTES_LIKE) or len(sealed) < SEAL_OVERHEAD:
        raise AuthenticationError(f"sealed message must be bytes of at least {SEAL_OVERHEAD} bytes")
    sealed = bytes(sealed)
    try:
        return cipher.decrypt(sealed[:NONCE_LENGTH], sealed[NONCE_LENGTH:], aad)
    except InvalidTag:
        raise AuthenticationError("AES-GCM tag does not verify") from None
