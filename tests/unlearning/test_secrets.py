"""Specification of history secrets, commitments and record key derivation."""

import hashlib

import pytest

from secagg.context import encode_parts
from secagg.kdf import derive_key
from unlearning.errors import HistorySecretError, UnlearningInputError
from unlearning.secrets import (
    HISTORY_SECRET_BYTES,
    RECORD_FORMAT_VERSION,
    dither_seed,
    generate_history_secret,
    history_commitment,
    history_salt,
    record_associated_data,
    record_key,
    verify_history_secret,
)


def test_history_secrets_are_fresh_32_byte_strings():
    secrets = {generate_history_secret() for _ in range(64)}
    assert len(secrets) == 64
    assert all(len(s) == HISTORY_SECRET_BYTES for s in secrets)


def test_commitment_is_sha256_of_the_canonical_encoding():
    secret = bytes(range(32))
    expected = hashlib.sha256(encode_parts("fedvault/history-commitment", "run-a", 7, secret)).digest()
    assert history_commitment("run-a", 7, secret) == expected


def test_the_committed_secret_verifies_and_any_other_is_refused():
    secret = generate_history_secret()
    commitment = history_commitment("run-a", 7, secret)
    verify_history_secret("run-a", 7, secret, commitment)
    wrong = bytes([secret[0] ^ 1]) + secret[1:]
    with pytest.raises(HistorySecretError, match="does not match"):
        verify_history_secret("run-a", 7, wrong, commitment)
    with pytest.raises(HistorySecretError, match="does not match"):
        verify_history_secret("run-a", 8, secret, commitment)  # another client's slot
    with pytest.raises(HistorySecretError, match="does not match"):
        verify_history_secret("run-b", 7, secret, commitment)  # another run
    with pytest.raises(HistorySecretError, match="32 bytes"):
        verify_history_secret("run-a", 7, secret[:31], commitment)


def test_record_key_is_hkdf_of_the_secret_with_run_salt_and_bound_context():
    secret = bytes(32)
    expected = derive_key(secret, salt=history_salt("r"),
                          info=encode_parts("fedvault/history-record", "r", 3, 5, RECORD_FORMAT_VERSION))
    assert record_key(secret, "r", 3, 5) == expected
    assert history_salt("r") == hashlib.sha256(encode_parts("fedvault/history-salt", "r")).digest()


def test_keys_differ_for_every_context_change_and_from_dither_seeds():
    secret = generate_history_secret()
    keys = {record_key(secret, "r", 3, 5), record_key(secret, "r", 5, 3), record_key(secret, "r", 3, 6),
            record_key(secret, "s", 3, 5), record_key(secret, "r", 3, 5, version=2),
            record_key(generate_history_secret(), "r", 3, 5), dither_seed(secret, "r", 3, 5)}
    assert len(keys) == 7


def test_associated_data_binds_run_round_client_and_version():
    assert record_associated_data("r", 1, 12) != record_associated_data("r", 11, 2)
    assert record_associated_data("r", 1, 2) == encode_parts("fedvault/history-record-aad", "r", 1, 2, 1)


@pytest.mark.parametrize("call", [
    lambda: record_key(b"short", "r", 0, 0),
    lambda: record_key(bytes(32), "", 0, 0),
    lambda: record_key(bytes(32), "r", -1, 0),
    lambda: record_key(bytes(32), "r", 0, True),
    lambda: history_commitment(1.5, 0, bytes(32)),
    lambda: verify_history_secret("r", 0, bytes(32), b"not a commitment"),
])
def test_invalid_inputs_are_refused(call):
    with pytest.raises(UnlearningInputError):
        call()
