"""Dropouts at every stage: exact sums down to the threshold, aborts below it that reveal nothing,
and never both secrets of one client in the server's hands (docs/ALGORITHMS.md §1.5-1.6)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ProtocolError, RoundAbortedError
from secagg.simulate import LocalRound, make_config
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK

RNG = np.random.default_rng(99)  # test data only


def random_inputs(ids, length, bits):
    return {i: RNG.integers(0, 2**bits, size=length, dtype=np.uint64).astype(np.uint32) for i in ids}


def exact_sum(vectors, survivors, bits):
    total = np.zeros(len(next(iter(vectors.values()))), dtype=np.uint64)
    for client_id in survivors:
        total += vectors[client_id]
    return (total % (2**bits)).astype(np.uint32)


def run(local, drops):
    """Step every stage, the clients in drops[stage] going silent from that stage on."""
    silent = set()
    for stage in STAGES:
        silent |= set(drops.get(stage, ()))
        local.step(skip=silent)
    return local.server.result


def round_should_complete(graph, ids, drops, threshold):
    """The specification's liveness rule, recomputed independently of the server."""
    advertised = set(ids) - set(drops.get(ADVERTISE_KEYS, ()))
    shared = advertised - set(drops.get(SHARE_KEYS, ()))
    masked = shared - set(drops.get(MASKED_INPUT, ()))
    answered = masked - set(drops.get(UNMASK, ()))

    def enough(owners, live):
        return all(len(graph.holders(owner) & live) >= threshold for owner in owners)

    for live in (advertised, shared, masked):
        if len(live) < threshold or not enough(live, live):
            return False, masked
    if not enough(shared - masked, masked):
        return False, masked
    return enough(masked, answered) and enough(shared - masked, answered), masked


def assert_no_client_revealed_both(local):
    seed_owners = set().union(*(c.revealed_seed_owners for c in local.clients.values()))
    key_owners = set().union(*(c.revealed_key_owners for c in local.clients.values()))
    assert not seed_owners & key_owners


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_at_each_stage_down_to_the_threshold_give_the_exact_sum(stage):
    n, threshold, bits = 7, 4, 16
    vectors = random_inputs(range(n), 129, bits)
    local = LocalRound(make_config(range(n), bits, 129, neighbours_k=n - 1, threshold=threshold), vectors)
    result = run(local, {stage: {1, 4, 6}})
    survivors = {0, 2, 3, 5} if stage != UNMASK else set(range(n))
    assert result.survivors == frozenset(survivors)
    assert result.dropped[stage] == frozenset({1, 4, 6})
    assert np.array_equal(result.sum, exact_sum(vectors, survivors, bits))
    assert_no_client_revealed_both(local)


def test_dropouts_spread_over_all_stages_in_a_sparse_graph():
    n, bits = 40, 12
    vectors = random_inputs(range(n), 64, bits)
    local = LocalRound(make_config(range(n), bits, 64, neighbours_k=10, threshold=4), vectors)
    ring = local.server.graph.ring  # drop clients far apart on the ring
    drops = {ADVERTISE_KEYS: {ring[0]}, SHARE_KEYS: {ring[10]}, MASKED_INPUT: {ring[20], ring[25]}, UNMASK: {ring[30]}}
    result = run(local, drops)
    survivors = set(range(n)) - {ring[0], ring[10], ring[20], ring[25]}
    assert result.survivors == frozenset(survivors)
    assert np.array_equal(result.sum, exact_sum(vectors, survivors, bits))
    assert_no_client_revealed_both(local)


@pytest.mark.parametrize("stage", STAGES)
def test_fewer_survivors_than_the_threshold_aborts_at_that_stage(stage):
    n, threshold = 6, 4
    vectors = random_inputs(range(n), 16, 8)
    local = LocalRound(make_config(range(n), 8, 16, neighbours_k=n - 1, threshold=threshold), vectors)
    with pytest.raises(RoundAbortedError):
        run(local, {stage: {0, 1, 2}})
    assert local.server.stage is None and local.server.aborted
    assert len(local.timings) == STAGES.index(stage) + 1  # aborted when closing that very stage
    with pytest.raises(RoundAbortedError):
        local.server.broadcast()
    with pytest.raises(ProtocolError, match="aborted"):
        local.server.result  # noqa: B018 - the property raises
    if stage != UNMASK:  # nothing was ever requested for unmasking
        assert all(not c.revealed_seed_owners and not c.revealed_key_owners for c in local.clients.values())
    assert_no_client_revealed_both(local)


def test_a_client_with_too_few_live_holders_aborts_the_round_although_many_survive():
    n, k, threshold = 12, 4, 4
    vectors = random_inputs(range(n), 8, 8)
    local = LocalRound(make_config(range(n), 8, 8, neighbours_k=k, threshold=threshold), vectors)
    ring = local.server.graph.ring
    victim = ring[0]
    two_neighbours = {ring[-2], ring[2]}  # victim is the only client adjacent to both
    local.step()
    with pytest.raises(RoundAbortedError, match=f"client {victim} has 3 live holders"):
        local.step(skip=two_neighbours)  # 10 of 12 clients share keys, yet victim has 3 < t holders
    assert all(not c.revealed_seed_owners and not c.revealed_key_owners for c in local.clients.values())


def test_masked_input_after_the_unmask_request_is_discarded():
    n, bits = 5, 10
    vectors = random_inputs(range(n), 32, bits)
    local = LocalRound(make_config(range(n), bits, 32, neighbours_k=4, threshold=3), vectors)
    local.step()
    local.step()
    replies = local.collect()
    late = replies.pop(3)
    local.deliver(replies)
    local.advance()
    assert local.server.stage == UNMASK
    with pytest.raises(ProtocolError, match="after the unmask request; discarded"):
        local.server.receive(3, late)
    local.step()
    result = local.server.result
    assert 3 not in result.survivors
    assert np.array_equal(result.sum, exact_sum(vectors, {0, 1, 2, 4}, bits))


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_dropout_pattern_completes_exactly_or_aborts_exactly_when_the_rules_say(data):
    n = data.draw(st.integers(2, 11), label="n")
    k = data.draw(st.sampled_from([k for k in range(1, n) if (n * k) % 2 == 0]), label="k")
    threshold = data.draw(st.integers(2, k + 1), label="t")
    bits = data.draw(st.sampled_from([1, 5, 16, 32]), label="bits")
    length = data.draw(st.integers(1, 40), label="m")
    # Each client survives with probability 2/3 (about 45% of the rounds complete, the rest abort).
    fate = data.draw(st.lists(st.sampled_from([None] * 8 + list(STAGES)), min_size=n, max_size=n), label="fate")
    drops = {stage: {i for i in range(n) if fate[i] == stage} for stage in STAGES}
    vectors = random_inputs(range(n), length, bits)
    local = LocalRound(make_config(range(n), bits, length, neighbours_k=k, threshold=threshold), vectors)
    completes, survivors = round_should_complete(local.server.graph, range(n), drops, threshold)
    if completes:
        result = run(local, drops)
        assert result.survivors == frozenset(survivors)
        assert np.array_equal(result.sum, exact_sum(vectors, survivors, bits))
    else:
        with pytest.raises(RoundAbortedError):
            run(local, drops)
    assert_no_client_revealed_both(local)
