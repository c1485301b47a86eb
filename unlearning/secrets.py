"""History secrets: the client-held key material that seals its history records.

docs/ALGORITHMS.md §6.4. At enrolment a client draws a 32-byte history secret H_i from the OS CSPRNG
and keeps it; the server stores only the commitment

    SHA-256(encode_parts("fedvault/history-commitment", run_id, client_id, H_i)),

which hides H_i (256 bits of entropy) and binds the client to it. Every record's AES-256-GCM key
and lattice-dither seed are derived from H_i with HKDF-SHA256, salted with a run-bound salt and
bound by ``info`` to (run, round, client, format version); they are independent of every SecAgg
key. A deletion request releases H_i; the server checks it against the commitment in constant
time before opening anything. Destroying H_i (and the commitment) crypto-shreds every record.

One secret per run. H_i is never a client's long-lived secret: the client derives it per run,

    H_i(run) = HKDF-SHA256(M_i, salt = N_i(run), info = encode_parts("fedvault/run-history-secret",
                                                                      run_id, client_id)),

from the master secret M_i in its key file and a fresh 32-byte nonce N_i(run) (OS CSPRNG) kept in
a per-run file beside it (``federation.run_secrets``). A deletion in run A releases H_i(A) only;
HKDF's output for run B is independent of it (B has its own nonce and info), so the server learns
nothing of the client's records in any other run. After the server confirms shredding, the client
overwrites and removes N_i(A): without it H_i(A) cannot be derived again, even from M_i.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np

from secagg.context import encode_parts
from secagg.kdf import derive_key
from unlearning.errors import HistorySecretError, UnlearningInputError

HISTORY_SECRET_BYTES = 32
COMMITMENT_BYTES = 32
#: The record format version bound into every record key, dither seed and associated data.
RECORD_FORMAT_VERSION = 1

_COMMITMENT_LABEL = "fedvault/history-commitment"
_RUN_SECRET_LABEL = "fedvault/run-history-secret"
RUN_NONCE_BYTES = 32
_SALT_LABEL = "fedvault/history-salt"
_RECORD_KEY_LABEL = "fedvault/history-record"
_DITHER_LABEL = "fedvault/history-dither"
_AAD_LABEL = "fedvault/history-record-aad"
_BYTES_LIKE = (bytes, bytearray, memoryview)

RunId = str | int | bytes


def _check_secret(history_secret: object) -> bytes:
    if not isinstance(history_secret, _BYTES_LIKE) or len(history_secret) != HISTORY_SECRET_BYTES:
        raise UnlearningInputError(f"a history secret must be {HISTORY_SECRET_BYTES} bytes")
    return bytes(history_secret)


def _check_run_id(run_id: object) -> RunId:
    if isinstance(run_id, bool) or not isinstance(run_id, (str, int, *_BYTES_LIKE)):
        raise UnlearningInputError(f"run_id must be a str, int or bytes, got {type(run_id).__name__}")
    if isinstance(run_id, (str, *_BYTES_LIKE)) and len(run_id) == 0:
        raise UnlearningInputError("run_id is empty")
    return bytes(run_id) if isinstance(run_id, (bytearray, memoryview)) else run_id


def _check_index(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UnlearningInputError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 2**63:
        raise UnlearningInputError(f"{name} must be in 0..2**63-1, got {value}")
    return value


def generate_history_secret() -> bytes:
    """A fresh 32-byte history secret from the OS CSPRNG (``os.urandom``)."""
    return os.urandom(HISTORY_SECRET_BYTES)


def derive_run_history_secret(master_secret: bytes, run_nonce: bytes, run_id: RunId, client_id: int) -> bytes:
    """H_i(run): the history secret of one run, derived from the client's master secret and the
    run's own nonce (module doc). Releasing it reveals nothing about another run's secret."""
    master = _check_secret(master_secret)
    if not isinstance(run_nonce, _BYTES_LIKE) or len(run_nonce) != RUN_NONCE_BYTES:
        raise UnlearningInputError(f"a run nonce must be {RUN_NONCE_BYTES} bytes")
    context = encode_parts(_RUN_SECRET_LABEL, _check_run_id(run_id), _check_index(client_id, "client_id"))
    return derive_key(master, salt=bytes(run_nonce), info=context, length=HISTORY_SECRET_BYTES)


def history_commitment(run_id: RunId, client_id: int, history_secret: bytes) -> bytes:
    """The 32-byte commitment the server stores for (run, client, H_i)."""
    run_id = _check_run_id(run_id)
    client_id = _check_index(client_id, "client_id")
    secret = _check_secret(history_secret)
    return hashlib.sha256(encode_parts(_COMMITMENT_LABEL, run_id, client_id, secret)).digest()


def verify_history_secret(run_id: RunId, client_id: int, history_secret: bytes,
                          commitment: bytes) -> None:
    """Check a released secret against the stored commitment, in constant time.

    Raises:
        HistorySecretError: the secret is not the one committed to for this run and client
            (including a secret of the wrong length).
        UnlearningInputError: the commitment is not 32 bytes, or run/client ids are invalid.
    """
    if not isinstance(commitment, _BYTES_LIKE) or len(commitment) != COMMITMENT_BYTES:
        raise UnlearningInputError(f"a commitment must be {COMMITMENT_BYTES} bytes")
    if not isinstance(history_secret, _BYTES_LIKE) or len(history_secret) != HISTORY_SECRET_BYTES:
        raise HistorySecretError(
            f"the released history secret is not {HISTORY_SECRET_BYTES} bytes; refusing to open records")
    expected = history_commitment(run_id, client_id, history_secret)
    if not hmac.compare_digest(expected, bytes(commitment)):
        raise HistorySecretError(
            f"the released history secret does not match client {client_id}'s commitment; "
            "refusing to open records")


def history_salt(run_id: RunId) -> bytes:
    """The run-bound, public HKDF salt of every history key of ``run_id`` (32 bytes)."""
    return hashlib.sha256(encode_parts(_SALT_LABEL, _check_run_id(run_id))).digest()


def _derive(label: str, history_secret: bytes, run_id: RunId, round_index: int, client_id: int,
            version: int) -> bytes:
    secret = _check_secret(history_secret)
    run_id = _check_run_id(run_id)
    context = encode_parts(label, run_id, _check_index(round_index, "round_index"),
                           _check_index(client_id, "client_id"), _check_index(version, "version"))
    return derive_key(secret, salt=history_salt(run_id), info=context)


def record_key(history_secret: bytes, run_id: RunId, round_index: int, client_id: int,
               version: int = RECORD_FORMAT_VERSION) -> bytes:
    """AES-256-GCM key of one record: HKDF(H_i, salt = run salt,
    info = encode_parts("fedvault/history-record", run_id, round, client_id, version))."""
    return _derive(_RECORD_KEY_LABEL, history_secret, run_id, round_index, client_id, version)


def dither_seed(history_secret: bytes, run_id: RunId, round_index: int, client_id: int,
                version: int = RECORD_FORMAT_VERSION) -> bytes:
    """32-byte seed of one record's lattice dither, derived like the record key under its own
    label; the dither is regenerated from it on opening and never stored."""
    return _derive(_DITHER_LABEL, history_secret, run_id, round_index, client_id, version)


def record_associated_data(run_id: RunId, round_index: int, client_id: int,
                           version: int = RECORD_FORMAT_VERSION) -> bytes:
    """AEAD associated data of one record: encode_parts(label, run_id, round, client_id, version)."""
    return encode_parts(_AAD_LABEL, _check_run_id(run_id), _check_index(round_index, "round_index"),
                        _check_index(client_id, "client_id"), _check_index(version, "version"))
