"""History secrets per run: releasing run A's secret opens nothing of run B; destroyed after use.

The attack (issue 13, "one history secret for every run"): a client deleted from run A releases
its history secret; with one secret for every run in a key folder, the server then opens the
client's records in run B too. Shown first with the master secret used for both runs (the
behaviour before), then refused with per-run secrets.
"""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from federation.keystore import KeyFileError, load_or_create_keys
from federation.run_secrets import (
    RunSecretDestroyedError,
    destroy_run_history_secret,
    run_history_secret,
    run_secret_path,
)
from unlearning.errors import HistorySecretError, RecordAuthenticationError
from unlearning.records import RecordChain, build_record, open_record
from unlearning.run_records import run_record_config
from unlearning.secrets import derive_run_history_secret, history_commitment

CLIENT = 3
RUN_A, RUN_B = 11, 12
DIMENSION = 16


def _config():
    return run_record_config(dimension=DIMENSION, clip_norm=1.0, bits_per_entry=12.0, lattice="Z", codec_lattice="Z",
                             step=0.01, noise_mode="none", noise_mechanism="skellam", noise_parameter=0.0)


def _seal(secret, run_id, update):
    return build_record(update, history_secret=secret, run_id=run_id, client_id=CLIENT, round_index=0,
                        config=_config(), chain=RecordChain()).sealed


def _open_run_b(released, secret_b, sealed_b):
    """What the server does with run A's released secret against run B's stored record."""
    return open_record(sealed_b, history_secret=released, commitment=history_commitment(RUN_B, CLIENT, secret_b),
                       run_id=RUN_B, client_id=CLIENT, round_index=0, config=_config())


@pytest.fixture
def update():
    update = np.random.default_rng(1).normal(size=DIMENSION)  # test data, not secrets
    return update / (2 * np.linalg.norm(update))


def test_one_secret_for_every_run_lets_a_deletion_in_run_a_open_run_b(tmp_path, update):
    keys = load_or_create_keys(tmp_path / f"client-{CLIENT}.key", CLIENT)
    sealed_b = _seal(keys.history_secret, RUN_B, update)  # before: the key file's secret sealed every run
    opened = _open_run_b(keys.history_secret, keys.history_secret, sealed_b)  # released for run A, used on B
    assert np.abs(opened.update - update).max() <= opened.error_bound < 0.1 * np.abs(update).max()  # the attack works


def test_a_released_run_secret_opens_nothing_of_another_run(tmp_path, update):
    key_file = tmp_path / f"client-{CLIENT}.key"
    keys = load_or_create_keys(key_file, CLIENT)
    secret_a = run_history_secret(key_file, keys, RUN_A, "a")
    secret_b = run_history_secret(key_file, keys, RUN_B, "b")
    assert secret_a != secret_b and keys.history_secret not in (secret_a, secret_b)
    sealed_b = _seal(secret_b, RUN_B, update)
    with pytest.raises(HistorySecretError):  # the server's commitment check already refuses it
        _open_run_b(secret_a, secret_b, sealed_b)
    with pytest.raises(RecordAuthenticationError):  # and the record key is another one
        open_record(sealed_b, history_secret=secret_a, commitment=history_commitment(RUN_B, CLIENT, secret_a),
                 run_id=RUN_B, client_id=CLIENT, round_index=0, config=_config())
    opened = _open_run_b(secret_b, secret_b, sealed_b)  # run B's own secret still opens run B
    assert np.abs(opened.update - update).max() <= opened.error_bound


def test_the_same_run_gives_the_same_secret_and_it_depends_on_every_input(tmp_path):
    key_file = tmp_path / f"client-{CLIENT}.key"
    keys = load_or_create_keys(key_file, CLIENT)
    assert run_history_secret(key_file, keys, RUN_A, "a") == run_history_secret(key_file, keys, RUN_A, "a")
    assert stat.S_IMODE(run_secret_path(key_file, "a").stat().st_mode) == 0o600
    master, nonce = bytes(32), bytes(range(32))
    base = derive_run_history_secret(master, nonce, RUN_A, CLIENT)
    assert len({base, derive_run_history_secret(master, nonce, RUN_B, CLIENT),
                derive_run_history_secret(master, nonce, RUN_A, CLIENT + 1),
                derive_run_history_secret(master, bytes(32), RUN_A, CLIENT),
                derive_run_history_secret(bytes([1]) * 32, nonce, RUN_A, CLIENT)}) == 5


def test_a_destroyed_run_secret_is_gone_and_never_recreated(tmp_path):
    key_file = tmp_path / f"client-{CLIENT}.key"
    keys = load_or_create_keys(key_file, CLIENT)
    secret_a = run_history_secret(key_file, keys, RUN_A, "a")
    secret_b = run_history_secret(key_file, keys, RUN_B, "b")
    path = run_secret_path(key_file, "a")
    nonce = json.loads(path.read_bytes())["nonce"]
    assert destroy_run_history_secret(key_file, "a", when="2026-01-01T00:00:00+00:00")
    assert nonce not in path.read_text() and "destroyed_at" in path.read_text()
    with pytest.raises(RunSecretDestroyedError, match="was destroyed at 2026-01-01"):
        run_history_secret(key_file, keys, RUN_A, "a")
    assert not destroy_run_history_secret(key_file, "a", when="later")  # nothing left to destroy
    assert run_history_secret(key_file, keys, RUN_B, "b") == secret_b  # the other run is untouched
    assert secret_a != secret_b


def test_without_its_nonce_file_a_run_secret_is_not_made_up_for_a_deletion(tmp_path):
    key_file = tmp_path / f"client-{CLIENT}.key"
    keys = load_or_create_keys(key_file, CLIENT)
    with pytest.raises(KeyFileError, match="never enrolled in it"):
        run_history_secret(key_file, keys, RUN_A, "a", create=False)
    assert not run_secret_path(key_file, "a").exists()
