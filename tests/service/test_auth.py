"""Request signatures, the replay guard, the operator token and enrolment tokens."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.service.auth import (
    HEADER_CLIENT,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ReplayGuard,
    RequestAuthenticator,
    check_enrolment_token,
    check_operator_token,
    enrolment_token,
    sign_request,
)
from federation.service.errors import (
    AuthenticationFailedError,
    ForbiddenError,
    ReplayedRequestError,
    StaleRequestError,
    TooManyRequestsError,
)
from secagg.keys import IdentityKey

NOW = 1_800_000_000
RUN = 7
ALICE, BOB = IdentityKey.generate(), IdentityKey.generate()
KEYS = {1: ALICE.public_bytes, 2: BOB.public_bytes}


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


def authenticator(clock=None, **guard):
    clock = clock or Clock()
    return RequestAuthenticator(RUN, ReplayGuard(clock=clock, not_before=NOW - 1000, **guard))


def signed(identity=ALICE, client_id=1, method="POST", target="/v1/rounds/3/masked-input", body=b"payload",
           timestamp=NOW, nonce=None):
    return sign_request(identity, run_id=RUN, client_id=client_id, method=method, target=target, body=body,
                        timestamp=timestamp, nonce=nonce)


def check(auth, headers, method="POST", target="/v1/rounds/3/masked-input", body=b"payload"):
    return auth.authenticate(method=method, target=target, headers=headers, body=body, public_key_of=KEYS.get)


def test_a_signed_request_authenticates_its_client():
    assert check(authenticator(), signed()) == 1
    assert check(authenticator(), signed(BOB, 2)) == 2


@pytest.mark.parametrize("change", ["method", "target", "body", "client", "run"])
def test_changing_anything_signed_breaks_the_signature(change):
    auth = authenticator()
    headers = signed()
    kwargs = {}
    if change == "method":
        kwargs["method"] = "PUT"
    elif change == "target":
        kwargs["target"] = "/v1/rounds/4/masked-input"
    elif change == "body":
        kwargs["body"] = b"payloaD"
    elif change == "client":
        headers = {**headers, HEADER_CLIENT: "2"}  # claim to be Bob with Alice's signature
    else:
        auth = RequestAuthenticator(RUN + 1, ReplayGuard(clock=Clock(), not_before=0))
    with pytest.raises(AuthenticationFailedError, match="signature does not verify"):
        check(auth, headers, **kwargs)


def test_the_timestamp_and_nonce_are_covered_by_the_signature():
    auth = authenticator()
    for name, value in ((HEADER_TIMESTAMP, str(NOW + 1)), (HEADER_NONCE, os.urandom(16).hex())):
        with pytest.raises(AuthenticationFailedError, match="signature does not verify"):
            check(auth, {**signed(), name: value})


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0, max_value=127), flip=st.integers(min_value=1, max_value=15))
def test_any_forged_signature_is_refused(position, flip):
    headers = signed()
    text = list(headers[HEADER_SIGNATURE])
    text[position] = format(int(text[position], 16) ^ flip, "x")
    with pytest.raises(AuthenticationFailedError, match="signature does not verify"):
        check(authenticator(), {**headers, HEADER_SIGNATURE: "".join(text)})


def test_a_replayed_request_is_refused_and_a_fresh_nonce_is_not():
    auth = authenticator()
    headers = signed()
    check(auth, headers)
    with pytest.raises(ReplayedRequestError, match="already used"):
        check(auth, headers)
    assert check(auth, signed()) == 1  # the same request signed again (new nonce) is fine


def test_a_forged_request_does_not_consume_the_nonce_of_a_real_one():
    auth = authenticator()
    real = signed()
    forged = {**real, HEADER_SIGNATURE: "00" * 64}
    with pytest.raises(AuthenticationFailedError):
        check(auth, forged)
    assert check(auth, real) == 1


@pytest.mark.parametrize("offset", [-121, 121])
def test_stale_and_future_timestamps_are_refused(offset):
    with pytest.raises(StaleRequestError, match="server's clock"):
        check(authenticator(), signed(timestamp=NOW + offset))


def test_requests_signed_before_the_server_started_are_refused():
    auth = RequestAuthenticator(RUN, ReplayGuard(clock=Clock(), not_before=NOW + 1))
    with pytest.raises(StaleRequestError, match="before this server started"):
        check(auth, signed())


def test_nonces_are_forgotten_once_their_timestamp_leaves_the_window():
    clock = Clock()
    guard = ReplayGuard(clock=clock, not_before=0, max_skew_seconds=10)
    auth = RequestAuthenticator(RUN, guard)
    check(auth, signed())
    assert len(guard) == 1
    clock.now += 12
    check(auth, signed(timestamp=NOW + 12))
    assert len(guard) == 1  # the first nonce expired: memory stays bounded by the window


def test_a_full_replay_store_answers_too_many_requests():
    auth = authenticator(capacity=2)
    check(auth, signed())
    check(auth, signed())
    with pytest.raises(TooManyRequestsError):
        check(auth, signed())


@pytest.mark.parametrize("headers, message", [
    ({}, "missing X-Fedvault-Client"),
    ({HEADER_CLIENT: "x"}, "X-Fedvault-Client must be a non-negative decimal"),
    ({HEADER_CLIENT: "-1"}, "X-Fedvault-Client must be a non-negative decimal"),
    ({HEADER_NONCE: "zz" * 16}, "X-Fedvault-Nonce is not hexadecimal"),
    ({HEADER_NONCE: "00"}, "X-Fedvault-Nonce must be 32 hex characters"),
    ({HEADER_SIGNATURE: "00" * 63}, "X-Fedvault-Signature must be 128 hex characters"),
])
def test_malformed_headers_are_refused_with_what_is_wrong(headers, message):
    base = signed()
    if not headers:
        base.pop(HEADER_CLIENT)
    with pytest.raises(AuthenticationFailedError, match=message):
        check(authenticator(), {**base, **headers})


def test_an_unknown_client_is_refused():
    with pytest.raises(AuthenticationFailedError, match="client 9 is not enrolled"):
        check(authenticator(), signed(client_id=9))


def test_the_operator_token_is_required_exactly():
    check_operator_token("operator-token-0123456789", "Bearer operator-token-0123456789")
    for header in (None, "", "Bearer", "Basic operator-token-0123456789", "Bearer operator-token-012345678",
                   "Bearer operator-token-0123456789x"):
        with pytest.raises(AuthenticationFailedError):
            check_operator_token("operator-token-0123456789", header)


def test_an_enrolment_token_binds_one_client_of_one_run():
    key = os.urandom(32)
    token = enrolment_token(key, RUN, 3)
    check_enrolment_token(key, RUN, 3, token)
    for run_id, client_id, other_key in ((RUN, 4, key), (RUN + 1, 3, key), (RUN, 3, os.urandom(32))):
        with pytest.raises(ForbiddenError, match="not valid"):
            check_enrolment_token(other_key, run_id, client_id, token)
    with pytest.raises(ForbiddenError):
        check_enrolment_token(key, RUN, 3, "\ud800" + token)  # not even UTF-8 encodable: still a clean 403


def _flood(auth, clock, requests):
    """Client 2 (enrolled, but misbehaving) sends ``requests`` validly signed requests."""
    for _ in range(requests):
        try:
            check(auth, signed(identity=BOB, client_id=2))
        except TooManyRequestsError:
            pass


def test_one_client_flooding_the_replay_cache_locks_everyone_out_without_a_per_client_quota():
    # The attack, with the quota as large as the cache (the pre-change behaviour): Bob fills the
    # shared cache and Alice's next request is refused.
    clock = Clock()
    auth = authenticator(clock, capacity=50, per_client_quota=50)
    _flood(auth, clock, 60)
    with pytest.raises(TooManyRequestsError, match="too many requests in the replay window"):
        check(auth, signed())


def test_a_per_client_quota_stops_one_client_from_locking_the_others_out():
    clock = Clock()
    auth = authenticator(clock, capacity=50, per_client_quota=10)
    _flood(auth, clock, 60)
    with pytest.raises(TooManyRequestsError, match="client 2 sent more than 10 requests"):
        check(auth, signed(identity=BOB, client_id=2))
    for _ in range(10):  # Alice is served, up to her own quota
        assert check(auth, signed()) == 1
    assert len(auth.replay_guard) == 20


def test_a_client_quota_frees_up_as_its_nonces_expire():
    clock = Clock()
    guard = ReplayGuard(clock=clock, not_before=0, max_skew_seconds=10, per_client_quota=2)
    auth = RequestAuthenticator(RUN, guard)
    check(auth, signed())
    check(auth, signed())
    with pytest.raises(TooManyRequestsError):
        check(auth, signed())
    clock.now += 12
    assert check(auth, signed(timestamp=NOW + 12)) == 1


def test_the_per_client_quota_must_be_a_positive_int():
    with pytest.raises(ValueError, match="per_client_quota"):
        ReplayGuard(per_client_quota=0)
