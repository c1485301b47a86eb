"""Specification of the records a real client runtime uploads: each opens (with the client's
secret) to the client's exact term in the secure sum within the lattice bound, and its chain is
adopted only after the server confirms storage, across restarts."""

import os

import numpy as np
import pytest
import torch

import unlearning.chain_file as chain_file
from federation.client_runtime import ClientRuntime
from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.round_plan import NoiseShare, RoundPlan, default_step
from privacy.clipping import clip_l2
from secagg.codec import plan_bits
from unlearning.errors import BrokenChainError
from unlearning.records import open_record
from unlearning.run_records import run_record_config
from unlearning.secrets import history_commitment

RUN_ID = 5
CLIENT = 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setting():
    config = RunConfig(dataset="digits", split="iid", clients=4, model="logreg", noise="none", lattice="Z",
                       history_bits_per_entry=4.0, workers=1, learning_rate=0.5)
    model = GlobalModel.for_config(config)
    dimension = model.parameter_count
    step = default_step(config.clip_norm, dimension, config.lattice)
    bits = plan_bits(config.clip_norm, step, config.lattice, config.clients, dimension)
    record_config = run_record_config(dimension=dimension, clip_norm=config.clip_norm, bits_per_entry=4.0,
                                      lattice="Z", codec_lattice="Z", step=step, noise_mode="none",
                                      noise_mechanism="skellam", noise_parameter=0.0)
    return config, model.flat(), step, bits, record_config


def _plan(setting, round_index):
    config, parameters, step, bits, _ = setting
    return RoundPlan(round_index=round_index, round_seed=os.urandom(32), dimension=parameters.size,
                     lattice=config.lattice, step=step, bits=bits, clip_norm=config.clip_norm, noise=NoiseShare())


def _open(runtime, setting, sealed, round_index, previous=None):
    secret = runtime.history_secret  # this run's secret (federation.run_secrets)
    return open_record(sealed, history_secret=secret, commitment=history_commitment(RUN_ID, CLIENT, secret),
                       run_id=RUN_ID, client_id=CLIENT, round_index=round_index, config=setting[4], previous=previous)


def test_an_opened_record_is_the_clients_term_in_the_sum_within_the_lattice_bound(setting, tmp_path):
    config, parameters, *_ = setting
    runtime = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    plan = _plan(setting, 0)
    report = runtime.prepare(plan.to_bytes(), parameters, True)
    assert len(report.history_record) == setting[4].sealed_bytes  # every record of the run has one size
    # The client's term in the secure sum, recomputed: same training (batch order from the public
    # seed), clip, encode, and decode of its own coordinates.
    trained = runtime.learner.train(parameters, plan.round_seed)
    clipped, _ = clip_l2(trained.update.astype(np.float64), config.clip_norm)
    codec = plan.codec()
    term = codec.decode(codec.encode(clipped, plan.round_seed, CLIENT), plan.round_seed, CLIENT, parameters.size)
    opened = _open(runtime, setting, report.history_record, 0)
    assert opened.parent_round is None
    assert np.max(np.abs(opened.update - term)) <= opened.error_bound + 1e-9
    assert np.linalg.norm(opened.update - term) < 0.25 * np.linalg.norm(term)  # R = 4: a faithful copy


def test_no_record_when_the_policy_skips_the_client_or_history_is_off(setting, tmp_path):
    config, parameters, *_ = setting
    skipped = ClientRuntime(CLIENT, config, RUN_ID, tmp_path).prepare(_plan(setting, 0).to_bytes(), parameters, False)
    off = ClientRuntime(CLIENT, config.replace(history=False), RUN_ID, tmp_path / "off").prepare(
        _plan(setting, 0).to_bytes(), parameters, True)
    assert skipped.history_record is None and off.history_record is None
    assert not list(tmp_path.rglob("*.chain"))


def test_a_record_is_a_parent_only_once_the_server_confirmed_it_even_across_restarts(setting, tmp_path):
    config, parameters, *_ = setting
    runtime = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    runtime.prepare(_plan(setting, 0).to_bytes(), parameters, True)  # never confirmed: not stored
    first = runtime.prepare(_plan(setting, 1).to_bytes(), parameters, True).history_record
    opened_first = _open(runtime, setting, first, 1)
    assert opened_first.parent_round is None  # coded without the unconfirmed round-0 record
    assert runtime.confirm_record(1) and not runtime.confirm_record(1)
    second = runtime.prepare(_plan(setting, 2).to_bytes(), parameters, True).history_record
    with pytest.raises(BrokenChainError):
        _open(runtime, setting, second, 2)  # differential: needs its parent
    opened_second = _open(runtime, setting, second, 2, previous=opened_first)
    assert opened_second.parent_round == 1

    # A crash after the server stored round 2 but before it confirmed: the pending chain survives
    # the restart and the server's repeated confirmation adopts it.
    again = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    assert again.confirm_record(2)
    third = again.prepare(_plan(setting, 3).to_bytes(), parameters, True).history_record
    opened_third = _open(again, setting, third, 3, previous=opened_second)
    assert opened_third.parent_round == 2


def test_a_confirmation_lost_in_a_crash_makes_the_next_record_a_key_frame(setting, tmp_path):
    """The confirmation of round 1 reached the client but not its disk (it is written with the
    next record); after the crash nobody confirms round 1 again, so the client cannot know that
    the server stored it: its next record must open without it."""
    config, parameters, *_ = setting
    runtime = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    zero = _open(runtime, setting, runtime.prepare(_plan(setting, 0).to_bytes(), parameters, True).history_record, 0)
    assert runtime.confirm_record(0)
    first = runtime.prepare(_plan(setting, 1).to_bytes(), parameters, True).history_record
    assert _open(runtime, setting, first, 1, previous=zero).parent_round == 0  # the in-memory confirmation counts
    assert runtime.confirm_record(1)
    restarted = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)  # crashed before writing round 1's confirmation
    second = restarted.prepare(_plan(setting, 2).to_bytes(), parameters, True).history_record
    assert _open(restarted, setting, second, 2).parent_round is None  # opens on its own


def test_a_record_the_server_did_not_confirm_is_never_a_parent(setting, tmp_path):
    """A client that dropped out after uploading (its record was not stored) codes its next record
    as a key frame: the server's stored chain never sees a parent it lacks."""
    config, parameters, *_ = setting
    runtime = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    runtime.prepare(_plan(setting, 0).to_bytes(), parameters, True)
    assert runtime.confirm_record(0)
    runtime.prepare(_plan(setting, 1).to_bytes(), parameters, True)  # dropped: never stored or confirmed
    assert not runtime.confirm_record(0)
    third = runtime.prepare(_plan(setting, 2).to_bytes(), parameters, True).history_record
    assert _open(runtime, setting, third, 2).parent_round is None


def test_one_chain_file_write_per_recorded_round_and_none_for_a_confirmation(setting, tmp_path, monkeypatch):
    config, parameters, *_ = setting
    writes, flushes = [], []
    real_write, real_flush = chain_file._write_all, chain_file._flush

    def counting_write(descriptor, data, offset):
        writes.append(len(data))
        real_write(descriptor, data, offset)

    def counting_flush(descriptor, *, metadata=False):
        flushes.append(metadata)
        real_flush(descriptor, metadata=metadata)

    monkeypatch.setattr(chain_file, "_write_all", counting_write)
    monkeypatch.setattr(chain_file, "_flush", counting_flush)
    runtime = ClientRuntime(CLIENT, config, RUN_ID, tmp_path)
    per_round = []
    for round_index in range(5):
        before = (len(writes), len(flushes))
        record = round_index != 3  # the history policy skips the client in round 3
        runtime.prepare(_plan(setting, round_index).to_bytes(), parameters, record)
        if record:
            runtime.confirm_record(round_index)
        per_round.append((len(writes) - before[0], len(flushes) - before[1]))
    # Round 0 creates the file (temporary file and directory flushed); later rounds write in place.
    assert per_round == [(1, 2), (1, 1), (1, 1), (0, 0), (1, 1)]
    assert flushes[2:] == [False] * 3  # data-only flushes of the in-place writes
    assert chain_file.ChainFile(chain_file.chain_path(tmp_path / f"client-{CLIENT}.key", RUN_ID),
                                parameters.size).sequence == 4
