"""Specification of the client's record-chain file: private, atomic, and adopting a record only
once the server confirmed it."""

import os
import stat

import numpy as np
import pytest

from unlearning.chain_file import ChainState, chain_path, delete_chain_state, load_chain_state, save_chain_state
from unlearning.deletion_errors import ChainFileError
from unlearning.records import RecordChain

D = 16


def _chain(round_index, seed):
    return RecordChain(round_index, np.random.default_rng(seed).normal(size=D), 1)


def test_the_file_sits_beside_the_key_file_and_names_the_run(tmp_path):
    assert chain_path(tmp_path / "client-3.key", 7) == tmp_path / "client-3.run-7.chain"


def test_a_missing_file_is_an_empty_chain(tmp_path):
    assert load_chain_state(tmp_path / "none.chain", D) == ChainState()


def test_state_round_trips_exactly_with_owner_only_permissions(tmp_path):
    path = tmp_path / "c.chain"
    state = ChainState(_chain(2, 0), _chain(5, 1))
    save_chain_state(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_chain_state(path, D)
    assert loaded.confirmed.round_index == 2 and loaded.pending.round_index == 5
    assert np.array_equal(loaded.confirmed.reconstruction, state.confirmed.reconstruction)
    assert np.array_equal(loaded.pending.reconstruction, state.pending.reconstruction)
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed into place


def test_only_a_confirmation_of_the_pending_round_adopts_it():
    state = ChainState(_chain(2, 0)).with_pending(_chain(5, 1))
    assert state.confirm(4) is state  # a round whose record the server did not store
    adopted = state.confirm(5)
    assert adopted.confirmed.round_index == 5 and adopted.pending is None
    assert adopted.confirm(5) is adopted  # idempotent


def test_a_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)))
    os.chmod(path, 0o644)
    with pytest.raises(ChainFileError, match="chmod 600"):
        load_chain_state(path, D)


@pytest.mark.parametrize("content", [b"", b"not an archive", b"PK\x03\x04broken"])
def test_a_malformed_file_is_refused(tmp_path, content):
    path = tmp_path / "c.chain"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ChainFileError, match="malformed"):
        load_chain_state(path, D)


def test_a_chain_of_another_model_size_is_refused(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)))
    with pytest.raises(ChainFileError, match=r"\(17,\) float64"):
        load_chain_state(path, D + 1)


def test_deleting_forgets_the_reconstruction(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)))
    assert delete_chain_state(path) and not path.exists()
    assert not delete_chain_state(path)
