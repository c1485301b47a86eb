"""Raw 32-byte X25519 agreement keys and Ed25519 identity keys (RFC 7748, RFC 8032).

Keys travel and are Shamir-shared as raw 32-byte strings, never PEM/DER: a raw key is one field
element in ``secagg.shamir``. Private keys come only from the OS CSPRNG (via ``cryptography``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg.errors import AuthenticationError, ConfigurationError, InvalidKeyError

KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
_BYTES_LIKE = (bytes, bytearray, memoryview)

__all__ = [
    "KEY_LENGTH", "SIGNATURE_LENGTH", "AgreementKeyPair", "IdentityKey", "check_identity_keys", "verify_signature",
]


def _raw_key(value: object, what: str, error: type[Exception]) -> bytes:
    if not isinstance(value, _BYTES_LIKE):
        raise error(f"{what} must be {KEY_LENGTH} raw bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != KEY_LENGTH:
        raise error(f"{what} must be {KEY_LENGTH} raw bytes, got {len(raw)}")
    return raw


class _RawKeyPair:
    """An immutable private key held with its 32-byte raw private and public encodings.

    Subclasses name the ``cryptography`` private-key type they wrap (``_private_type``).
    """

    __slots__ = ("_private_key", "_private_bytes", "_public_bytes")
    _private_type: type

    def __init__(self, private_key) -> None:
        if not isinstance(private_key, self._private_type):
            raise InvalidKeyError(f"expected an {self._private_type.__name__}, got {type(private_key).__name__}")
        object.__setattr__(self, "_private_key", private_key)
        object.__setattr__(self, "_private_bytes", private_key.private_bytes_raw())
        object.__setattr__(self, "_public_bytes", private_key.public_key().public_bytes_raw())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def generate(cls):
        """A fresh key from the OS CSPRNG."""
        return cls(cls._private_type.generate())

    @classmethod
    def from_private_bytes(cls, private_bytes: bytes):
        """Rebuild the key from its 32-byte raw private encoding (e.g. after Shamir reconstruction).

        Raises:
            InvalidKeyError: not 32 bytes.
        """
        return cls(cls._private_type.from_private_bytes(_raw_key(private_bytes, "private key", InvalidKeyError)))

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key."""
        return self._public_bytes

    @property
    def private_bytes(self) -> bytes:
        """The 32-byte raw private key (secret: only for Shamir sharing or the client's key file)."""
        return self._private_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self._public_bytes.hex()[:16]}...)"


class AgreementKeyPair(_RawKeyPair):
    """An X25519 key pair for Diffie-Hellman agreement (mask seeds, share-encryption keys).

    Immutable. ``exchange`` returns the raw shared secret, which must go through
    ``secagg.kdf.derive_key`` with a context before it is used as a key.
    """

    __slots__ = ()
    _private_type = X25519PrivateKey

    def exchange(self, peer_public: bytes) -> bytes:
        """The 32-byte X25519 shared secret with ``peer_public``.

        Raises:
            InvalidKeyError: ``peer_public`` is not 32 bytes, or is a low-order point (the shared
                secret would be all zeros, RFC 7748 section 6.1).
        """
        peer = X25519PublicKey.from_public_bytes(_raw_key(peer_public, "peer public key", InvalidKeyError))
        try:
            return self._private_key.exchange(peer)
        except ValueError:
            # cryptography refuses an all-zero result, which only low-order points produce.
            raise InvalidKeyError("peer public key is a low-order point (all-zero shared secret)") from None


class IdentityKey(_RawKeyPair):
    """An Ed25519 signing key that authenticates one client (or the server) across rounds. Immutable."""

    __slots__ = ()
    _private_type = Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (build transcripts with ``encode_parts``).

        Raises:
            ConfigurationError: ``message`` is not bytes (nothing is signed).
        """
        if not isinstance(message, _BYTES_LIKE):
            raise ConfigurationError(f"message must be bytes, got {type(message).__name__}")
        return self._private_key.sign(bytes(message))


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; return only if it is valid (fail closed).

    Raises:
        AuthenticationError: the signature does not verify, or any argument is malformed (wrong
            type, a key that is not 32 bytes or not a curve point, a signature that is not 64 bytes).
    """
    raw_public = _raw_key(public_key, "public key", AuthenticationError)
    if not isinstance(message, _BYTES_LIKE):
        raise AuthenticationError(f"message must be bytes, got {type(message).__name__}")
    if not isinstance(signature, _BYTES_LIKE) or len(signature) != SIGNATURE_LENGTH:
        raise AuthenticationError(f"signature must be {SIGNATURE_LENGTH} bytes")
    try:
        verifier = Ed25519PublicKey.from_public_bytes(raw_public)
        verifier.verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        raise AuthenticationError("Ed25519 signature does not verify") from None


def check_identity_keys(identity_keys: object) -> dict[int, bytes]:
    """Validate a directory of enrolled Ed25519 public keys: client id (int) -> 32 raw bytes.

    Raises:
        ConfigurationError: not a mapping, a non-int id, or a key that is not 32 bytes.
    """
    if not isinstance(identity_keys, Mapping):
        raise ConfigurationError(
            f"identity_keys must map client id -> Ed25519 public key, got {type(identity_keys).__name__}"
        )
    checked = {}
    for client_id, public_key in identity_keys.items():
        if isinstance(client_id, bool) or not isinstance(client_id, int):
            raise ConfigurationError(f"identity_keys: client id {client_id!r} is not an int")
        if not isinstance(public_key, _BYTES_LIKE) or len(public_key) != KEY_LENGTH:
            raise ConfigurationError(f"identity_keys[{client_id}] must be a 32-byte Ed25519 key")
        checked[client_id] = bytes(public_key)
    return checked
