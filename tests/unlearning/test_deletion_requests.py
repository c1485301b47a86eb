"""Specification of authenticated deletion requests: only the enrolled client, only fresh, only
with the committed secret; a refused request changes nothing; the server opens nothing without
the secret."""

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.keys import IdentityKey
from unlearning.deletion import UnlearningSettings, unlearn_client
from unlearning.deletion_errors import ClientNotActiveError, RequestSignatureError, StaleRequestError
from unlearning.errors import HistorySecretError, RecordAuthenticationError, UnlearningInputError
from unlearning.records import open_history, open_record
from unlearning.requests import (
    DeletionRequest,
    authenticate_deletion_request,
    deletion_transcript,
    sign_deletion_request,
)
from unlearning.secrets import generate_history_secret, history_commitment

NOW = 1_700_000_000


@pytest.fixture(scope="module")
def client():
    identity, secret = IdentityKey.generate(), generate_history_secret()
    return identity, secret, history_commitment(7, 3, secret)


def _accept(request, identity, commitment, now=NOW):
    authenticate_deletion_request(request, enrolled_identity_key=identity.public_bytes,
                                  history_commitment=commitment, now=now)


def test_a_request_signed_by_the_enrolled_key_with_the_committed_secret_is_accepted(client):
    identity, secret, commitment = client
    _accept(sign_deletion_request(identity, secret, 7, 3, timestamp=NOW), identity, commitment)


def test_the_signature_covers_the_digest_of_the_secret_not_the_secret(client):
    identity, secret, _ = client
    transcript = deletion_transcript(7, 3, NOW, secret)
    assert secret not in transcript
    request = sign_deletion_request(identity, secret, 7, 3, timestamp=NOW)
    assert request.transcript() == transcript
    assert secret.hex() not in repr(request)


def test_another_clients_key_is_refused_even_with_the_right_secret(client):
    _, secret, commitment = client
    intruder = IdentityKey.generate()
    with pytest.raises(RequestSignatureError, match="enrolled identity key"):
        _accept(sign_deletion_request(intruder, secret, 7, 3, timestamp=NOW), client[0], commitment)


def test_a_forged_signature_is_refused(client):
    identity, secret, commitment = client
    forged = DeletionRequest(7, 3, NOW, secret, os.urandom(64))
    with pytest.raises(RequestSignatureError):
        _accept(forged, identity, commitment)


@pytest.mark.parametrize("field_name, value", [("run_id", 8), ("client_id", 4), ("timestamp", NOW + 1)])
def test_every_signed_field_is_bound(client, field_name, value):
    identity, secret, commitment = client
    altered = dataclasses.replace(sign_deletion_request(identity, secret, 7, 3, timestamp=NOW), **{field_name: value})
    with pytest.raises(RequestSignatureError):
        _accept(altered, identity, commitment)


def test_a_secret_swapped_after_signing_breaks_the_signature(client):
    identity, secret, commitment = client
    request = sign_deletion_request(identity, secret, 7, 3, timestamp=NOW)
    with pytest.raises(RequestSignatureError):
        _accept(dataclasses.replace(request, history_secret=generate_history_secret()), identity, commitment)


def test_a_correctly_signed_wrong_secret_fails_the_commitment_check(client):
    identity, _, commitment = client
    request = sign_deletion_request(identity, generate_history_secret(), 7, 3, timestamp=NOW)
    with pytest.raises(HistorySecretError):
        _accept(request, identity, commitment)


@pytest.mark.parametrize("skew", [-301, 301, 10**6])
def test_a_stale_or_future_request_is_refused(client, skew):
    identity, secret, commitment = client
    request = sign_deletion_request(identity, secret, 7, 3, timestamp=NOW)
    with pytest.raises(StaleRequestError):
        _accept(request, identity, commitment, now=NOW + skew)
    _accept(request, identity, commitment, now=NOW + (300 if skew > 0 else -300))  # the edge is inside


@settings(max_examples=25, deadline=None)
@given(run_id=st.integers(1, 2**63 - 1), client_id=st.integers(0, 2**63 - 1), timestamp=st.integers(0, 2**63 - 1))
def test_wire_form_round_trips(run_id, client_id, timestamp):
    request = DeletionRequest(run_id, client_id, timestamp, bytes(32), bytes(64))
    assert DeletionRequest.from_bytes(request.to_bytes()) == request


@pytest.mark.parametrize("data", [b"", b"junk", DeletionRequest(1, 2, 3, bytes(32), bytes(64)).to_bytes()[:-1]])
def test_malformed_wire_bytes_are_refused(data):
    with pytest.raises(UnlearningInputError):
        DeletionRequest.from_bytes(data)


# --- against a stored run: a refused request changes nothing -----------------------------------


def _snapshot(repository, run_id):
    return (repository.audit_head(run_id), repository.list_deletion_requests(run_id),
            repository.count_sealed_records(run_id), repository.list_checkpoints(run_id),
            [c.status for c in repository.list_clients(run_id)])


def _bad_requests(run):
    own, other = run.identities[3], run.identities[0]
    yield "wrong secret", sign_deletion_request(own, generate_history_secret(), run.run_id, 3), HistorySecretError
    yield "other client's secret", sign_deletion_request(own, run.secrets[0], run.run_id, 3), HistorySecretError
    yield "other client's key", sign_deletion_request(other, run.secrets[3], run.run_id, 3), RequestSignatureError
    yield "forged", DeletionRequest(run.run_id, 3, NOW, run.secrets[3], os.urandom(64)), RequestSignatureError
    yield "stale", sign_deletion_request(own, run.secrets[3], run.run_id, 3, timestamp=NOW), StaleRequestError
    yield "not enrolled", sign_deletion_request(own, run.secrets[3], run.run_id, 99), ClientNotActiveError


def test_a_refused_request_changes_nothing_in_the_database(synthetic_run):
    with synthetic_run.open() as repository:
        before = _snapshot(repository, synthetic_run.run_id)
        for name, request, error in _bad_requests(synthetic_run):
            with pytest.raises(error):
                unlearn_client(repository, request, settings=UnlearningSettings())
            assert _snapshot(repository, synthetic_run.run_id) == before, name


def test_the_server_cannot_open_any_record_without_the_secret(synthetic_run):
    run = synthetic_run
    config = run.record_config()
    with run.open() as repository:
        for client in range(len(run.secrets)):
            stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run.run_id, client)]
            assert stored
            commitment = repository.get_client(run.run_id, client).history_commitment
            for guess in (generate_history_secret(), run.secrets[(client + 1) % len(run.secrets)]):
                # The stored commitment refuses a wrong secret before any decryption...
                with pytest.raises(HistorySecretError):
                    open_history(stored, history_secret=guess, commitment=commitment, run_id=run.run_id,
                                 client_id=client, config=config)
                # ...and a commitment forged to match the guess still cannot decrypt a single record.
                for round_index, sealed in stored:
                    with pytest.raises(RecordAuthenticationError):
                        open_record(sealed, history_secret=guess,
                                    commitment=history_commitment(run.run_id, client, guess),
                                    run_id=run.run_id, client_id=client, round_index=round_index, config=config)
            opened = list(open_history(stored, history_secret=run.secrets[client], commitment=commitment,
                                       run_id=run.run_id, client_id=client, config=config))
            assert [o.round_index for o in opened] == [r for r, _ in stored]
            for record in opened:
                true = run.updates[(record.round_index, client)]
                assert np.max(np.abs(record.update - true)) <= record.error_bound + 1e-12
