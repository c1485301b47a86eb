"""Specification of the client's record-chain file: private, one in-place write and one flush per
state, a crash mid-write leaves the previous state, and a record is adopted only once the server
confirmed it."""

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import unlearning.chain_file as chain_file
from unlearning.chain_file import (
    ChainFile,
    ChainState,
    chain_path,
    delete_chain_state,
    load_chain_state,
    save_chain_state,
    slot_bytes,
)
from unlearning.deletion_errors import ChainFileError
from unlearning.records import RecordChain

D = 16


def _chain(round_index, seed):
    return RecordChain(round_index, np.random.default_rng(seed).normal(size=D), 1)


@pytest.fixture
def flushes(monkeypatch):
    """Every flush of a chain file (what it flushed, and whether with metadata), counted through
    the module's seam."""
    calls = []
    real = chain_file._flush

    def counting(descriptor, *, metadata=False):
        name = os.readlink(f"/proc/self/fd/{descriptor}") if os.path.isdir("/proc/self/fd") else None
        calls.append((name, metadata))
        real(descriptor, metadata=metadata)

    monkeypatch.setattr(chain_file, "_flush", counting)
    return calls


def test_the_file_sits_beside_the_key_file_and_names_the_run(tmp_path):
    assert chain_path(tmp_path / "client-3.key", 7) == tmp_path / "client-3.run-7.chain"


def test_a_missing_file_is_an_empty_chain(tmp_path):
    assert load_chain_state(tmp_path / "none.chain", D) == ChainState()
    assert ChainFile(tmp_path / "none.chain", D).sequence == 0


def test_state_round_trips_exactly_with_owner_only_permissions(tmp_path):
    path = tmp_path / "c.chain"
    state = ChainState(_chain(2, 0), _chain(5, 1))
    save_chain_state(path, state, D)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_chain_state(path, D)
    assert loaded.confirmed.round_index == 2 and loaded.pending.round_index == 5
    assert loaded.confirmed.records_since_keyframe == 1
    assert np.array_equal(loaded.confirmed.reconstruction, state.confirmed.reconstruction)
    assert np.array_equal(loaded.pending.reconstruction, state.pending.reconstruction)
    assert not loaded.pending.reconstruction.flags.writeable
    assert not list(tmp_path.glob("*.tmp"))  # created through a temporary file, renamed into place


@pytest.mark.parametrize("state", [ChainState(), ChainState(RecordChain(records_since_keyframe=3)),
                                   ChainState(RecordChain(), _chain(0, 1)), ChainState(_chain(4, 2))])
def test_empty_chains_and_a_missing_pending_round_trip(tmp_path, state):
    path = tmp_path / "c.chain"
    save_chain_state(path, state, D)
    loaded = load_chain_state(path, D)
    assert (loaded.pending is None) == (state.pending is None)
    assert loaded.confirmed.round_index == state.confirmed.round_index
    assert loaded.confirmed.records_since_keyframe == state.confirmed.records_since_keyframe


def test_each_later_state_is_one_in_place_write_and_one_flush_of_a_fixed_size_file(tmp_path, flushes):
    path = tmp_path / "c.chain"
    file = ChainFile(path, D)
    file.save(ChainState(pending=_chain(0, 0)))  # creation: temporary file, rename, directory flush
    if os.path.isdir("/proc/self/fd"):  # a fresh mkstemp name beside the file, then the folder
        (temporary, data), folder = flushes
        assert Path(temporary).parent == tmp_path and Path(temporary).name.startswith(".c.chain.")
        assert Path(temporary).name.endswith(".tmp") and data is True and folder == (str(tmp_path), True)
    inode, size = path.stat().st_ino, path.stat().st_size
    assert size == 2 * slot_bytes(D) and slot_bytes(D) % 4096 == 0
    flushes.clear()
    for round_index in range(1, 6):
        file.save(ChainState(_chain(round_index - 1, round_index), _chain(round_index, round_index + 10)))
    assert len(flushes) == 5 and all(flushed in ((str(path), False), (None, False)) for flushed in flushes)
    assert path.stat().st_ino == inode and path.stat().st_size == size  # no new file, no rename
    assert file.sequence == 6 and ChainFile(path, D).sequence == 6
    assert load_chain_state(path, D).pending.round_index == 5


@pytest.mark.parametrize("damage", ["torn", "zeroed", "bit flip"])
def test_a_crash_mid_write_leaves_the_previous_state(tmp_path, damage):
    path = tmp_path / "c.chain"
    file = ChainFile(path, D)
    previous = ChainState(_chain(2, 0), _chain(3, 1))
    file.save(ChainState(pending=_chain(1, 2)))
    file.save(previous)  # sequence 2, slot 0
    file.save(ChainState(_chain(3, 1), _chain(4, 3)))  # sequence 3, slot 1: the write that "crashes"
    data = bytearray(path.read_bytes())
    slot = slot_bytes(D)
    if damage == "torn":  # the first half of the new slot reached the disk, the rest is stale
        data[slot + 40:2 * slot] = bytes(slot - 40)
    elif damage == "zeroed":
        data[slot:] = bytes(slot)
    else:
        data[slot + 100] ^= 0x01
    path.write_bytes(bytes(data))
    loaded = load_chain_state(path, D)
    assert loaded.confirmed.round_index == 2 and loaded.pending.round_index == 3
    assert np.array_equal(loaded.pending.reconstruction, previous.pending.reconstruction)
    # The next write goes over the damaged slot, never over the intact one.
    intact = path.read_bytes()[:slot]
    recovering = ChainFile(path, D)
    recovering.load()
    recovering.save(ChainState(_chain(3, 1), _chain(5, 4)))
    assert load_chain_state(path, D).pending.round_index == 5
    assert path.read_bytes()[:slot] == intact


def test_only_a_confirmation_of_the_pending_round_adopts_it():
    state = ChainState(_chain(2, 0)).with_pending(_chain(5, 1))
    assert state.confirm(4) is state  # a round whose record the server did not store
    adopted = state.confirm(5)
    assert adopted.confirmed.round_index == 5 and adopted.pending is None
    assert adopted.confirm(5) is adopted  # idempotent


def test_a_file_readable_by_others_is_refused_and_never_written(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)), D)
    os.chmod(path, 0o644)
    with pytest.raises(ChainFileError, match="chmod 600"):
        load_chain_state(path, D)
    before = path.read_bytes()
    with pytest.raises(ChainFileError, match="chmod 600"):
        save_chain_state(path, ChainState(_chain(2, 0)), D)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not an archive", b"PK\x03\x04broken", bytes(2 * 4096)])
def test_a_malformed_file_is_refused(tmp_path, content):
    path = tmp_path / "c.chain"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ChainFileError, match="malformed"):
        load_chain_state(path, D)


def test_a_chain_of_another_model_size_is_refused(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)), D)
    with pytest.raises(ChainFileError, match=r"\(17,\) float64"):
        load_chain_state(path, D + 1)
    with pytest.raises(ChainFileError, match=r"\(17,\) float64"):
        save_chain_state(path, ChainState(_chain(1, 0)), D + 1)  # a 16-entry reconstruction


def test_a_version_1_archive_is_read_and_replaced_by_the_next_write(tmp_path):
    path = tmp_path / "c.chain"
    confirmed = _chain(2, 0)
    header = {"version": 1, "confirmed": {"round_index": 2, "records_since_keyframe": 1}, "pending": None}
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
             confirmed=confirmed.reconstruction)
    path.write_bytes(buffer.getvalue())
    os.chmod(path, 0o600)
    file = ChainFile(path, D)
    state = file.load()
    assert state.confirmed.round_index == 2 and state.pending is None
    assert np.array_equal(state.confirmed.reconstruction, confirmed.reconstruction)
    file.save(state.with_pending(_chain(3, 1)))
    assert path.stat().st_size == 2 * slot_bytes(D)
    assert load_chain_state(path, D).pending.round_index == 3


def test_deleting_forgets_the_reconstruction(tmp_path):
    path = tmp_path / "c.chain"
    save_chain_state(path, ChainState(_chain(1, 0)), D)
    assert delete_chain_state(path) and not path.exists()
    assert not delete_chain_state(path)


def test_a_file_deleted_while_in_use_is_created_again(tmp_path):
    path = tmp_path / "c.chain"
    file = ChainFile(path, D)
    file.save(ChainState(pending=_chain(0, 0)))
    file.save(ChainState(_chain(0, 0), _chain(1, 1)))
    assert delete_chain_state(path)
    file.save(ChainState(_chain(1, 1), _chain(2, 2)))
    assert file.sequence == 1 and load_chain_state(path, D).pending.round_index == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_planted_at_a_predictable_temporary_path_is_never_written(tmp_path):
    path = tmp_path / "c.chain"
    planted = tmp_path / "c.chain.tmp"
    planted.write_bytes(b"attacker")
    planted.chmod(0o644)
    victim = tmp_path / "elsewhere"
    (tmp_path / ".c.chain.tmp").symlink_to(victim)
    ChainFile(path, D).save(ChainState(pending=_chain(0, 0)))
    assert planted.read_bytes() == b"attacker" and not victim.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.is_symlink()


def test_a_symlink_at_the_chain_path_is_refused(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"")
    (tmp_path / "c.chain").symlink_to(target)
    with pytest.raises(ChainFileError):
        ChainFile(tmp_path / "c.chain", D).save(ChainState(pending=_chain(0, 0)))
    assert target.read_bytes() == b""
