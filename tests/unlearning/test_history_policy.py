"""Specification of the history (user sparsification) policy."""

from collections import Counter
from itertools import combinations

import pytest

from unlearning.errors import UnlearningConfigurationError, UnlearningInputError
from unlearning.history_policy import HistoryPolicy


def _seed(i):
    return i.to_bytes(32, "big")


def test_default_policy_records_every_participant():
    assert HistoryPolicy().select([5, 3, 9], _seed(0), 4) == {3, 5, 9}
    assert HistoryPolicy().inclusion_probability(3) == 1.0


def test_subset_has_m_participants_and_is_reproducible_from_the_public_seed():
    policy = HistoryPolicy(max_records_per_round=3)
    chosen = policy.select(range(10), _seed(1), 7)
    assert len(chosen) == 3 and chosen <= set(range(10))
    assert policy.select(list(reversed(range(10))), _seed(1), 7) == chosen  # order-independent
    assert len({policy.select(range(10), _seed(1), r) for r in range(20)}) > 5  # varies by round
    assert policy.inclusion_probability(10) == pytest.approx(0.3)


def test_subset_is_uniform_over_all_m_subsets():
    # 2-subsets of 5 ids: 10 cells, 3000 draws (300 expected each). Chi-square with 9 degrees of
    # freedom; the 0.9999 quantile is 33.7 (false-failure rate 1e-4; seeds are fixed anyway).
    policy = HistoryPolicy(max_records_per_round=2)
    counts = Counter(policy.select(range(5), _seed(s), 0) for s in range(3000))
    assert set(counts) == {frozenset(c) for c in combinations(range(5), 2)}
    chi_square = sum((c - 300) ** 2 / 300 for c in counts.values())
    assert chi_square < 33.7, chi_square


def test_a_budget_above_the_participant_count_keeps_everyone():
    assert HistoryPolicy(max_records_per_round=8).select([1, 2], _seed(0), 0) == {1, 2}


@pytest.mark.parametrize("m", [0, -1, 2.5, True])
def test_bad_budget_is_refused(m):
    with pytest.raises(UnlearningConfigurationError, match="max_records_per_round"):
        HistoryPolicy(max_records_per_round=m)


def test_bad_inputs_are_refused():
    policy = HistoryPolicy(2)
    with pytest.raises(UnlearningInputError, match="duplicate"):
        policy.select([1, 1, 2], _seed(0), 0)
    with pytest.raises(UnlearningInputError, match="32 bytes"):
        policy.select([1, 2, 3], b"seed", 0)
    with pytest.raises(UnlearningInputError, match="round_index"):
        policy.select([1, 2, 3], _seed(0), -1)
