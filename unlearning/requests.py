"""Authenticated deletion requests: a client asks to be unlearned and releases its history secret.

The client signs, with the Ed25519 identity key it enrolled with,

    encode_parts("fedvault/delete", run_id, client_id, timestamp, SHA-256(H_i))

and sends the signature with the timestamp (Unix seconds) and its history secret H_i. The
server, before it changes or opens anything:

1. verifies the signature against the identity key stored at ENROLMENT (never a key that comes
   with the request), so a client cannot ask for another's deletion, and a released secret
   cannot be swapped: its digest is under the signature;
2. checks freshness: |now − timestamp| <= the window (a replayed request only repeats an
   idempotent deletion, but a stale one is refused anyway);
3. checks H_i against the stored commitment in constant time (``unlearning.secrets``).

Everything here is pure (no storage, no clock unless ``now`` is omitted). The secret is never
logged or stored: ``repr`` hides it.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

from secagg.context import decode_parts, encode_parts
from secagg.errors import AuthenticationError, MalformedMessageError
from secagg.keys import IdentityKey, verify_signature
from unlearning.deletion_errors import RequestSignatureError, StaleRequestError
from unlearning.errors import UnlearningInputError
from unlearning.secrets import HISTORY_SECRET_BYTES, verify_history_secret

DELETE_LABEL = "fedvault/delete"
_WIRE_LABEL = "fedvault/delete-request"
SIGNATURE_BYTES = 64
#: Default freshness window, seconds either side of the server's clock.
DEFAULT_MAX_AGE_SECONDS = 300.0


def _check_int(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**63:
        raise UnlearningInputError(f"{name} must be an int in {minimum}..2**63-1, got {value!r}")
    return value


@dataclass(frozen=True)
class DeletionRequest:
    """A signed deletion request.

    run_id: the run (its database id, >= 1). client_id: the client asking. timestamp: Unix
    seconds when it was signed. history_secret: H_i, 32 bytes (hidden from ``repr``).
    signature: 64-byte Ed25519 signature of :meth:`transcript`.
    """

    run_id: int
    client_id: int
    timestamp: int
    history_secret: bytes = field(repr=False)
    signature: bytes

    def __post_init__(self) -> None:
        _check_int(self.run_id, "run_id", minimum=1)
        _check_int(self.client_id, "client_id")
        _check_int(self.timestamp, "timestamp")
        if not isinstance(self.history_secret, (bytes, bytearray)) or len(self.history_secret) != HISTORY_SECRET_BYTES:
            raise UnlearningInputError(f"history_secret must be {HISTORY_SECRET_BYTES} bytes")
        if not isinstance(self.signature, (bytes, bytearray)) or len(self.signature) != SIGNATURE_BYTES:
            raise UnlearningInputError(f"signature must be {SIGNATURE_BYTES} bytes")
        object.__setattr__(self, "history_secret", bytes(self.history_secret))
        object.__setattr__(self, "signature", bytes(self.signature))

    def transcript(self) -> bytes:
        """The signed message (see the module docstring)."""
        return deletion_transcript(self.run_id, self.client_id, self.timestamp, self.history_secret)

    def to_bytes(self) -> bytes:
        """Canonical wire form (``encode_parts``); carries the secret, so send it only over a
        confidential channel."""
        return encode_parts(_WIRE_LABEL, self.run_id, self.client_id, self.timestamp, self.history_secret,
                            self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> DeletionRequest:
        """Parse :meth:`to_bytes` output (UnlearningInputError if it is anything else)."""
        try:
            parts = decode_parts(bytes(data))
        except (MalformedMessageError, TypeError, ValueError) as error:
            raise UnlearningInputError(f"not a deletion request: {error}") from None
        if len(parts) != 6 or parts[0] != _WIRE_LABEL:
            raise UnlearningInputError("not a deletion request")
        _, run_id, client_id, timestamp, secret, signature = parts
        if not (isinstance(secret, bytes) and isinstance(signature, bytes)):
            raise UnlearningInputError("not a deletion request: secret and signature must be bytes")
        return cls(run_id, client_id, timestamp, secret, signature)


def deletion_transcript(run_id: int, client_id: int, timestamp: int, history_secret: bytes) -> bytes:
    """encode_parts("fedvault/delete", run_id, client_id, timestamp, SHA-256(history_secret))."""
    if not isinstance(history_secret, (bytes, bytearray)) or len(history_secret) != HISTORY_SECRET_BYTES:
        raise UnlearningInputError(f"history_secret must be {HISTORY_SECRET_BYTES} bytes")
    return encode_parts(DELETE_LABEL, _check_int(run_id, "run_id", minimum=1), _check_int(client_id, "client_id"),
                        _check_int(timestamp, "timestamp"), hashlib.sha256(bytes(history_secret)).digest())


def sign_deletion_request(identity: IdentityKey, history_secret: bytes, run_id: int, client_id: int, *,
                          timestamp: int | None = None) -> DeletionRequest:
    """Client side: the request, signed now (or at ``timestamp``, Unix seconds)."""
    if not isinstance(identity, IdentityKey):
        raise UnlearningInputError(f"identity must be an IdentityKey, got {type(identity).__name__}")
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = identity.sign(deletion_transcript(run_id, client_id, stamp, history_secret))
    return DeletionRequest(run_id, client_id, stamp, history_secret, signature)


def authenticate_deletion_request(request: DeletionRequest, *, enrolled_identity_key: bytes,
                                  history_commitment: bytes, now: float | None = None,
                                  max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS) -> None:
    """Server side: accept the request or raise, in this order (nothing is opened before all pass).

    enrolled_identity_key: the client's 32-byte public key stored at enrolment.
    history_commitment: the client's stored 32-byte commitment.
    now: the server's clock (Unix seconds; default ``time.time()``).

    Raises:
        RequestSignatureError: the signature does not verify under the enrolled key.
        StaleRequestError: the timestamp is more than ``max_age_seconds`` from ``now``.
        HistorySecretError: the released secret does not match the commitment.
    """
    if not isinstance(request, DeletionRequest):
        raise UnlearningInputError(f"request must be a DeletionRequest, got {type(request).__name__}")
    if isinstance(max_age_seconds, bool) or not isinstance(max_age_seconds, (int, float)) \
            or not math.isfinite(max_age_seconds) or max_age_seconds <= 0:
        raise UnlearningInputError(f"max_age_seconds must be a positive number, got {max_age_seconds!r}")
    try:
        verify_signature(enrolled_identity_key, request.transcript(), request.signature)
    except AuthenticationError:
        raise RequestSignatureError(
            f"deletion request for client {request.client_id} of run {request.run_id} is not signed by the "
            "client's enrolled identity key; nothing was changed") from None
    clock = time.time() if now is None else float(now)
    age = clock - request.timestamp
    if abs(age) > max_age_seconds:
        raise StaleRequestError(
            f"deletion request was signed {age:+.0f} s from the server's clock, outside ±{max_age_seconds:g} s; "
            "sign a fresh one")
    verify_history_secret(request.run_id, request.client_id, request.history_secret, history_commitment)
