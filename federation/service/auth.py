"""Who may call the service: signed client requests, the operator token, enrolment tokens.

Client requests. Every request a client makes carries four headers::

    X-Fedvault-Client     its id
    X-Fedvault-Timestamp  Unix time, whole seconds
    X-Fedvault-Nonce      16 random bytes, hex (fresh per request, also per retry)
    X-Fedvault-Signature  Ed25519 signature, hex, by the client's enrolled identity key over
                          encode_parts("fedvault/http-request/v1", run id, client id, METHOD,
                                       path?query, SHA-256(body), timestamp, nonce)

The server checks the timestamp against its clock (± ``max_skew_seconds``, and never before the
server process started, so nothing signed for a previous incarnation replays into this one), then
the signature against the key bound at enrolment, then records (client, nonce) until the
timestamp leaves the window; a second use of the nonce is a replay. A request is bound to one
run, one client, one method, one path and one body: it cannot be replayed elsewhere or altered.

Operator. Read-only audit and history endpoints (and issuing enrolment tokens) need
``Authorization: Bearer <operator token>``, compared in constant time.

Enrolment tokens. The operator hands client i the token HMAC-SHA256(enrolment key, run, i); with
it, the client binds its identity key to id i once. The server stores no tokens: it recomputes
the MAC and compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from federation.service.errors import (
    AuthenticationFailedError,
    ForbiddenError,
    ReplayedRequestError,
    StaleRequestError,
    TooManyRequestsError,
)
from secagg.context import encode_parts
from secagg.errors import AuthenticationError
from secagg.keys import IdentityKey, verify_signature

HEADER_CLIENT = "X-Fedvault-Client"
HEADER_TIMESTAMP = "X-Fedvault-Timestamp"
HEADER_NONCE = "X-Fedvault-Nonce"
HEADER_SIGNATURE = "X-Fedvault-Signature"
SIGNED_HEADERS = (HEADER_CLIENT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

NONCE_BYTES = 16
SIGNATURE_BYTES = 64
MAX_CLIENT_ID = 2**32 - 1
DEFAULT_MAX_SKEW_SECONDS = 120
DEFAULT_REPLAY_CAPACITY = 1_000_000
#: Most nonces one client may hold in the replay window (≈ 17 requests/s sustained over the
#: default 241 s window; a well-behaved client makes well under one per second).
DEFAULT_PER_CLIENT_REPLAY_QUOTA = 4096
ENROLMENT_KEY_BYTES = 32

_REQUEST_LABEL = "fedvault/http-request/v1"
_ENROLMENT_LABEL = "fedvault/enrolment-token/v1"
_ENROLMENT_PREFIX = "fve1-"

__all__ = [
    "DEFAULT_MAX_SKEW_SECONDS",
    "HEADER_CLIENT",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SIGNED_HEADERS",
    "ReplayGuard",
    "RequestAuthenticator",
    "SignedHeaders",
    "check_enrolment_token",
    "check_operator_token",
    "enrolment_token",
    "sign_request",
    "signing_message",
]


def signing_message(*, run_id: int, client_id: int, method: str, target: str, body: bytes, timestamp: int,
                    nonce: bytes) -> bytes:
    """The exact bytes a client signs for one request (``target`` = path plus ``?query`` if any)."""
    return encode_parts(_REQUEST_LABEL, run_id, client_id, method.upper(), target,
                        hashlib.sha256(body).digest(), timestamp, nonce)


def sign_request(identity: IdentityKey, *, run_id: int, client_id: int, method: str, target: str, body: bytes,
                 timestamp: int | None = None, nonce: bytes | None = None) -> dict[str, str]:
    """The four signature headers for one request (fresh nonce and current time by default)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    signature = identity.sign(signing_message(run_id=run_id, client_id=client_id, method=method, target=target,
                                              body=body, timestamp=timestamp, nonce=nonce))
    return {HEADER_CLIENT: str(client_id), HEADER_TIMESTAMP: str(timestamp), HEADER_NONCE: nonce.hex(),
            HEADER_SIGNATURE: signature.hex()}


@dataclass(frozen=True)
class SignedHeaders:
    """The parsed signature headers of one request."""

    client_id: int
    timestamp: int
    nonce: bytes
    signature: bytes

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> SignedHeaders:
        """Parse the headers (case-insensitive mapping); AuthenticationFailedError names the bad one."""
        values = {}
        for name in SIGNED_HEADERS:
            value = headers.get(name)
            if value is None:
                raise AuthenticationFailedError(
                    f"missing {name} header; every client request must be signed ({', '.join(SIGNED_HEADERS)})")
            values[name] = value.strip()
        client_id = _parse_int(values[HEADER_CLIENT], HEADER_CLIENT, 0, MAX_CLIENT_ID)
        timestamp = _parse_int(values[HEADER_TIMESTAMP], HEADER_TIMESTAMP, 0, 2**62)
        nonce = _parse_hex(values[HEADER_NONCE], HEADER_NONCE, NONCE_BYTES)
        signature = _parse_hex(values[HEADER_SIGNATURE], HEADER_SIGNATURE, SIGNATURE_BYTES)
        return cls(client_id, timestamp, nonce, signature)


def _parse_int(text: str, name: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise AuthenticationFailedError(f"{name} must be a non-negative decimal integer, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise AuthenticationFailedError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _parse_hex(text: str, name: str, length: int) -> bytes:
    if len(text) != 2 * length:
        raise AuthenticationFailedError(f"{name} must be {2 * length} hex characters ({length} bytes), got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise AuthenticationFailedError(f"{name} is not hexadecimal") from None


class ReplayGuard:
    """Rejects stale timestamps and reused nonces (thread-safe).

    A (client, nonce) pair is remembered until its timestamp leaves the window, after which the
    timestamp check alone rejects it; memory is bounded by ``capacity`` pairs (beyond it, new
    requests get 429 until old pairs expire). Each client may hold at most ``per_client_quota``
    of them: a client past its quota gets 429 while every other client is served, so one
    enrolled client (compromised, or buggy) flooding signed requests cannot fill the shared
    cache and get the others refused. The global capacity stays as a memory bound; it is only
    reachable when capacity / per_client_quota clients flood at once.

    Args:
        max_skew_seconds: accepted |server time − request timestamp|, seconds.
        not_before: earliest accepted timestamp (the server's start time, seconds).
        capacity: most remembered nonces.
        per_client_quota: most remembered nonces of one client.
        clock: current Unix time in seconds (injectable for tests).
    """

    def __init__(self, *, max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS, not_before: int | None = None,
                 capacity: int = DEFAULT_REPLAY_CAPACITY, per_client_quota: int = DEFAULT_PER_CLIENT_REPLAY_QUOTA,
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(max_skew_seconds, bool) or not isinstance(max_skew_seconds, int) or max_skew_seconds < 1:
            raise ValueError(f"max_skew_seconds must be an int >= 1, got {max_skew_seconds!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if isinstance(per_client_quota, bool) or not isinstance(per_client_quota, int) or per_client_quota < 1:
            raise ValueError(f"per_client_quota must be an int >= 1, got {per_client_quota!r}")
        self.max_skew_seconds = max_skew_seconds
        self.not_before = int(clock()) if not_before is None else int(not_before)
        self.capacity = capacity
        self.per_client_quota = per_client_quota
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, bytes], int] = {}
        self._held: dict[int, int] = {}  # client -> nonces it holds in the cache
        self._expiry: list[tuple[int, int, bytes]] = []  # heap of (expires_at, client, nonce)

    def check_timestamp(self, timestamp: int) -> None:
        """StaleRequestError unless ``timestamp`` is inside the window."""
        now = self._clock()
        if timestamp < self.not_before:
            raise StaleRequestError(
                f"request timestamp {timestamp} is before this server started ({self.not_before}); "
                "sign a fresh request")
        if abs(now - timestamp) > self.max_skew_seconds:
            raise StaleRequestError(
                f"request timestamp {timestamp} is {now - timestamp:+.0f} s from the server's clock; "
                f"the limit is ±{self.max_skew_seconds} s (check the client's clock)")

    def record(self, client_id: int, timestamp: int, nonce: bytes) -> None:
        """Remember the nonce; ReplayedRequestError if it was already used, TooManyRequestsError if full."""
        key = (client_id, bytes(nonce))
        with self._lock:
            self._expire(self._clock())
            if key in self._seen:
                raise ReplayedRequestError(
                    f"nonce {nonce.hex()} of client {client_id} was already used: replayed request refused")
            held = self._held.get(client_id, 0)
            if held >= self.per_client_quota:
                raise TooManyRequestsError(
                    f"client {client_id} sent more than {self.per_client_quota} requests in the replay window; "
                    "slow down and retry in a few seconds")
            if len(self._seen) >= self.capacity:
                raise TooManyRequestsError("too many requests in the replay window; retry in a few seconds")
            expires = timestamp + self.max_skew_seconds + 1
            self._seen[key] = expires
            self._held[client_id] = held + 1
            heapq.heappush(self._expiry, (expires, client_id, key[1]))

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, client_id, nonce = heapq.heappop(self._expiry)
            if self._seen.pop((client_id, nonce), None) is not None:
                left = self._held[client_id] - 1
                if left:
                    self._held[client_id] = left
                else:
                    del self._held[client_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class RequestAuthenticator:
    """Verifies signed client requests for one run.

    ``authenticate`` returns the client id the request is from, or raises an
    ``AuthenticationFailedError`` (401) whose message says what was wrong.
    """

    def __init__(self, run_id: int, replay_guard: ReplayGuard) -> None:
        self.run_id = run_id
        self.replay_guard = replay_guard

    def authenticate(self, *, method: str, target: str, headers: Mapping[str, str], body: bytes,
                     public_key_of: Callable[[int], bytes | None]) -> int:
        """Check one request; ``public_key_of(client_id)`` gives the enrolled key (None: unknown)."""
        signed = SignedHeaders.parse(headers)
        self.replay_guard.check_timestamp(signed.timestamp)
        public_key = public_key_of(signed.client_id)
        if public_key is None:
            raise AuthenticationFailedError(
                f"client {signed.client_id} is not enrolled in run {self.run_id} (or was deleted)")
        message = signing_message(run_id=self.run_id, client_id=signed.client_id, method=method, target=target,
                                  body=body, timestamp=signed.timestamp, nonce=signed.nonce)
        try:
            verify_signature(public_key, message, signed.signature)
        except AuthenticationError:
            raise AuthenticationFailedError(
                f"request signature does not verify for client {signed.client_id} "
                "(wrong key, or the method, path, body, timestamp or nonce differ from what was signed)") from None
        # Only a verified request may consume a nonce: nobody can burn another client's nonces.
        self.replay_guard.record(signed.client_id, signed.timestamp, signed.nonce)
        return signed.client_id


def check_operator_token(expected: str, authorization: str | None) -> None:
    """AuthenticationFailedError unless ``authorization`` is ``Bearer <expected>`` (constant time)."""
    if not authorization:
        raise AuthenticationFailedError("operator endpoint: send 'Authorization: Bearer <operator token>'")
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthenticationFailedError("operator endpoint: the Authorization header must be 'Bearer <token>'")
    # Equal-length digests: the comparison time depends on neither token's content nor length.
    if not hmac.compare_digest(hashlib.sha256(presented.strip().encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(expected.encode()).digest()):
        raise AuthenticationFailedError("operator token is not valid")


def enrolment_token(enrolment_key: bytes, run_id: int, client_id: int) -> str:
    """The token that lets client ``client_id`` enrol its identity key in run ``run_id``."""
    if not isinstance(enrolment_key, bytes) or len(enrolment_key) != ENROLMENT_KEY_BYTES:
        raise ValueError(f"the enrolment key must be {ENROLMENT_KEY_BYTES} bytes")
    mac = hmac.new(enrolment_key, encode_parts(_ENROLMENT_LABEL, run_id, client_id), hashlib.sha256).digest()
    return _ENROLMENT_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_enrolment_token(enrolment_key: bytes, run_id: int, client_id: int, presented: str) -> None:
    """ForbiddenError unless ``presented`` is client ``client_id``'s enrolment token (constant time)."""
    expected = enrolment_token(enrolment_key, run_id, client_id)
    if not hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(expected.encode()).digest()):
        raise ForbiddenError(f"enrolment token is not valid for client {client_id} of run {run_id}")
