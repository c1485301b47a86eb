"""SecAgg+ end to end: the secure sum is exactly the sum of the inputs mod 2**b, and one masked
vector, as the server sees it, is indistinguishable from uniform."""

import numpy as np
import pytest
from scipy.stats import chi2

from secagg.errors import ConfigurationError, ProtocolError
from secagg.simulate import LocalRound, make_config, run_secure_sum, simulate_round
from secagg.stages import ADVERTISE_KEYS, CONSISTENCY, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK
from secagg.wire import MaskedInputResponse

RNG = np.random.default_rng(20240611)  # test data only; nothing secret comes from numpy


def random_inputs(ids, length, bits):
    return {i: RNG.integers(0, 2**bits, size=length, dtype=np.uint64).astype(np.uint32) for i in ids}


def exact_sum(vectors, survivors, bits):
    total = sum(int_vector.astype(np.uint64) for i, int_vector in vectors.items() if i in survivors)
    return (total % (2**bits)).astype(np.uint32)


@pytest.mark.parametrize(
    "n, length, bits",
    [(2, 1, 1), (2, 33, 32), (3, 17, 7), (4, 100, 16), (5, 1, 32), (8, 257, 11), (13, 64, 24)],
)
def test_classic_secagg_sum_is_exact(n, length, bits):
    vectors = random_inputs(range(n), length, bits)
    result = run_secure_sum(vectors, bits, neighbours_k=n - 1, threshold=max(2, n // 2 + 1))
    assert result.survivors == frozenset(range(n))
    assert np.array_equal(result.sum, exact_sum(vectors, result.survivors, bits))


@pytest.mark.parametrize("n, k, t", [(10, 2, 2), (12, 3, 3), (16, 4, 3), (21, 6, 4), (30, 8, 5)])
def test_harary_graph_sum_is_exact(n, k, t):
    ids = [1000 + 7 * i for i in range(n)]  # arbitrary, non-contiguous ids
    vectors = random_inputs(ids, 300, 20)
    result = run_secure_sum(vectors, 20, neighbours_k=k, threshold=t)
    assert np.array_equal(result.sum, exact_sum(vectors, result.survivors, 20))


def test_default_parameters_for_seventy_clients_use_a_sparse_graph_and_stay_exact():
    vectors = random_inputs(range(70), 50, 16)
    outcome = simulate_round(vectors, 16)
    assert (outcome.config.neighbours_k, outcome.config.threshold) == (12, 6)
    assert np.array_equal(outcome.result.sum, exact_sum(vectors, range(70), 16))


def test_sum_wraps_mod_2_to_the_b_exactly_at_the_extremes():
    for bits in (1, 8, 31, 32):
        top = np.full(9, 2**bits - 1, dtype=np.uint32)
        vectors = {i: top.copy() for i in range(5)}
        result = run_secure_sum(vectors, bits, neighbours_k=4, threshold=3)
        assert result.sum.tolist() == [(5 * (2**bits - 1)) % 2**bits] * 9


def test_result_is_read_only_and_names_survivors_and_dropouts():
    vectors = random_inputs(range(6), 10, 8)
    result = run_secure_sum(vectors, 8, neighbours_k=5, threshold=3, dropouts={MASKED_INPUT: {2}})
    assert result.sum.dtype == np.uint32 and result.sum.shape == (10,)
    assert not result.sum.flags.writeable
    assert result.survivors == frozenset({0, 1, 3, 4, 5})
    assert dict(result.dropped) == {
        ADVERTISE_KEYS: frozenset(),
        SHARE_KEYS: frozenset(),
        MASKED_INPUT: frozenset({2}),
        CONSISTENCY: frozenset(),
        UNMASK: frozenset(),
    }


def test_only_one_masked_vector_per_client_travels_and_it_is_b_bits_per_coordinate():
    vectors = random_inputs(range(4), 1000, 13)
    outcome = simulate_round(vectors, 13, neighbours_k=3, threshold=2)
    for client_id in range(4):
        sent = outcome.upload_bytes[client_id][MASKED_INPUT]
        assert sent == 46 + 9 + (1000 * 13 + 7) // 8  # header, sender/bits/length, packed


def test_a_second_round_with_the_same_parties_gets_fresh_keys_and_stays_exact():
    vectors = random_inputs(range(5), 20, 10)
    first = LocalRound(make_config(range(5), 10, 20, neighbours_k=4, threshold=3, round_index=1), vectors)
    second = LocalRound(make_config(range(5), 10, 20, neighbours_k=4, threshold=3, round_index=2), vectors)
    for local in (first, second):
        for _ in STAGES:
            local.step()
        assert np.array_equal(local.server.result.sum, exact_sum(vectors, range(5), 10))
    assert first.server.instance_id != second.server.instance_id


def test_simulation_input_validation():
    with pytest.raises(ConfigurationError, match="at least two"):
        run_secure_sum({1: np.zeros(3, dtype=np.uint32)}, 8)
    with pytest.raises(ConfigurationError, match="same length"):
        run_secure_sum({1: np.zeros(3, dtype=np.uint32), 2: np.zeros(4, dtype=np.uint32)}, 8)
    with pytest.raises(ConfigurationError, match="uint32"):
        run_secure_sum({1: np.zeros(3, dtype=np.int64), 2: np.zeros(3, dtype=np.int64)}, 8)
    with pytest.raises(ConfigurationError, match="2\\*\\*4"):
        run_secure_sum({1: np.full(3, 16, dtype=np.uint32), 2: np.zeros(3, dtype=np.uint32)}, 4)
    with pytest.raises(ConfigurationError, match="both"):
        run_secure_sum(random_inputs(range(3), 2, 4), 4, neighbours_k=2)
    with pytest.raises(ConfigurationError, match="unknown client"):
        run_secure_sum(random_inputs(range(3), 2, 4), 4, dropouts={UNMASK: {7}})
    with pytest.raises(ConfigurationError, match="unknown stage"):
        run_secure_sum(random_inputs(range(3), 2, 4), 4, dropouts={"later": {1}})


def test_the_server_view_of_a_masked_vector_is_uniform():
    # Client 0's input is all zeros, the most structured input there is; its masked vector must
    # still look uniform on Z_256. 256 bins, 102_400 coordinates (400 per bin): chi-square with
    # 255 degrees of freedom, rejecting at a false-failure rate of 1e-6.
    bits, length = 8, 102_400
    vectors = {i: np.zeros(length, dtype=np.uint32) for i in range(3)}
    local = LocalRound(make_config(range(3), bits, length, neighbours_k=2, threshold=2), vectors)
    local.step()
    local.step()
    replies = local.collect()
    masked = MaskedInputResponse.from_bytes(replies[0]).vector
    counts = np.bincount(masked, minlength=2**bits)
    expected = length / 2**bits
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(1 - 1e-6, 2**bits - 1)
    # The same zero input of two clients is masked differently (no structure shared across clients).
    assert not np.array_equal(masked, MaskedInputResponse.from_bytes(replies[1]).vector)
    local.deliver(replies)
    local.advance()
    local.step()  # consistency
    local.step()
    assert not local.server.result.sum.any()


def test_a_finished_round_accepts_nothing_more():
    vectors = random_inputs(range(3), 4, 8)
    local = LocalRound(make_config(range(3), 8, 4, neighbours_k=2, threshold=2), vectors)
    for _ in STAGES:
        replies = local.collect()
        local.deliver(replies)
        local.advance()
    assert local.server.stage is None and local.server.pending() == frozenset()
    with pytest.raises(ProtocolError, match="finished"):
        local.server.receive(0, replies[0])
    with pytest.raises(ProtocolError, match="finished"):
        local.server.advance()


def test_the_consistency_round_costs_one_stage_and_changes_no_sum():
    vectors = random_inputs(range(6), 10, 8)
    drops = {MASKED_INPUT: {2}, CONSISTENCY: {4}}
    defended = simulate_round(vectors, 8, neighbours_k=5, threshold=3, dropouts=drops)
    legacy = simulate_round(vectors, 8, neighbours_k=5, threshold=3, dropouts=drops, consistency_check=False)
    assert np.array_equal(defended.result.sum, legacy.result.sum)
    assert np.array_equal(defended.result.sum, exact_sum(vectors, {0, 1, 3, 4, 5}, 8))
    assert defended.result.dropped[CONSISTENCY] == {4} and CONSISTENCY not in legacy.result.dropped
    assert legacy.result.dropped[UNMASK] == {4}  # without the stage the drop lands on the unmask
    # One 64-byte signature and the quorum up per survivor (plus the header); down, the set and
    # as many signatures as the client's quorum (t = 3 here), 4 + 64 bytes each.
    assert defended.upload_bytes[0][CONSISTENCY] == 46 + 4 + 4 + 64
    assert defended.download_bytes[0][UNMASK] - legacy.download_bytes[0][UNMASK] == 3 * (4 + 64)
