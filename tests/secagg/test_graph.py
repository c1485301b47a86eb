"""The Harary neighbour graph and the default (k, t) table (docs/ALGORITHMS.md §1.4)."""

import math

import pytest
from scipy.stats import chi2

from secagg.config import RoundConfig
from secagg.errors import ConfigurationError
from secagg.graph import HararyGraph, default_parameters, harary_neighbours

SEED = bytes(range(32))


@pytest.mark.parametrize("n, k", [(2, 1), (3, 2), (4, 1), (4, 2), (4, 3), (10, 4), (10, 5), (11, 10), (50, 12)])
def test_graph_is_k_regular_symmetric_and_loop_free(n, k):
    ids = list(range(100, 100 + n))
    neighbours = harary_neighbours(ids, k, SEED)
    assert set(neighbours) == set(ids)
    for client_id, adjacent in neighbours.items():
        assert len(adjacent) == k
        assert client_id not in adjacent
        for other in adjacent:
            assert client_id in neighbours[other]


@pytest.mark.parametrize("n", [2, 3, 7, 8, 31])
def test_degree_n_minus_one_is_the_complete_graph(n):
    neighbours = harary_neighbours(range(n), n - 1, SEED)
    for client_id, adjacent in neighbours.items():
        assert adjacent == frozenset(range(n)) - {client_id}


def test_even_degree_connects_the_k_over_2_ring_neighbours_on_each_side():
    graph = HararyGraph.build(list(range(20)), 6, SEED)
    ring = graph.ring
    for index, client_id in enumerate(ring):
        expected = {ring[(index + offset) % 20] for offset in (-3, -2, -1, 1, 2, 3)}
        assert graph.neighbours(client_id) == expected


def test_odd_degree_adds_the_diametrically_opposite_client():
    graph = HararyGraph.build(list(range(12)), 5, SEED)
    ring = graph.ring
    for index, client_id in enumerate(ring):
        expected = {ring[(index + offset) % 12] for offset in (-2, -1, 1, 2, 6)}
        assert graph.neighbours(client_id) == expected


def test_the_ring_is_fixed_by_the_seed_and_changes_with_it():
    ids = list(range(30))
    assert HararyGraph.build(ids, 4, SEED).ring == HararyGraph.build(list(reversed(ids)), 4, SEED).ring
    assert HararyGraph.build(ids, 4, SEED).ring != HararyGraph.build(ids, 4, bytes(32)).ring


def test_ring_position_of_a_client_is_uniform_over_seeds():
    # 3000 deterministic seeds; position of client 0 among n = 6 slots. Chi-square with 5 degrees
    # of freedom at a false-failure rate of 1e-6 for a truly uniform permutation.
    n, trials = 6, 3000
    counts = [0] * n
    for trial in range(trials):
        ring = HararyGraph.build(list(range(n)), 2, trial.to_bytes(32, "big")).ring
        counts[ring.index(0)] += 1
    expected = trials / n
    statistic = sum((count - expected) ** 2 / expected for count in counts)
    assert statistic < chi2.ppf(1 - 1e-6, n - 1)


def test_shamir_points_are_distinct_nonzero_and_equal_across_owners_in_a_sparse_graph():
    graph = HararyGraph.build(list(range(40)), 8, SEED)
    point_sets = set()
    for owner in graph.ring:
        points = [graph.abscissa(owner, holder) for holder in graph.holders(owner)]
        assert len(set(points)) == 9 and min(points) >= 1 and max(points) <= 40
        assert graph.abscissa(owner, owner) == 1
        point_sets.add(frozenset(points))
    # Relative ring offsets: every owner's holders use the same points (one Lagrange cache entry).
    assert len(point_sets) == 1


def test_shamir_points_in_the_complete_graph_are_ring_positions():
    graph = HararyGraph.build(list(range(9)), 8, SEED)
    for owner in graph.ring:
        assert {graph.abscissa(owner, holder) for holder in graph.holders(owner)} == set(range(1, 10))
        for holder in graph.holders(owner):
            assert graph.abscissa(owner, holder) == graph.ring.index(holder) + 1


def test_abscissa_refuses_a_non_holder():
    graph = HararyGraph.build(list(range(20)), 2, SEED)
    owner = graph.ring[0]
    stranger = graph.ring[10]
    with pytest.raises(ConfigurationError, match="holds no share"):
        graph.abscissa(owner, stranger)


@pytest.mark.parametrize(
    "ids, k, seed, message",
    [
        ([1, 2, 3], 0, SEED, "degree_k"),
        ([1, 2, 3], 3, SEED, "degree_k"),
        ([1, 2, 3, 4, 5], 3, SEED, "n\\*k must be even"),
        ([1, 1, 2], 1, SEED, "repeat"),
        ([1], 0, SEED, "at least 2"),
        ([1, -2, 3], 2, SEED, "ints in"),
        ([1, 2, 3], 2, b"", "permutation_seed"),
        ("abc", 2, SEED, "sequence"),
    ],
)
def test_invalid_graph_parameters_are_refused(ids, k, seed, message):
    with pytest.raises(ConfigurationError, match=message):
        harary_neighbours(ids, k, seed)


# --- default parameters ------------------------------------------------------------------------

ROWS = (100, 1_000, 10_000, 100_000, 1_000_000)
TABLE = {  # docs/ALGORITHMS.md §1.4, curious-server columns: (adversarial, dropout) -> (k, t) per n
    (0.05, 0.05): dict(zip(ROWS, [(12, 6), (30, 17), (34, 20), (36, 21), (38, 22)])),
    (0.05, 0.33): dict(zip(ROWS, [(28, 6), (72, 24), (86, 29), (96, 32), (102, 34)])),
    (0.33, 0.33): dict(zip(ROWS, [(68, 34), (286, 150), (422, 221), (480, 251), (518, 270)])),
    (0.45, 0.45): dict(zip(ROWS, [(92, 46), (822, 417), (3494, 1771), (5508, 2788), (6240, 3156)])),
}


@pytest.mark.parametrize("fractions", list(TABLE))
def test_default_parameters_reproduce_the_published_table(fractions):
    adversarial, dropout = fractions
    for n, expected in TABLE[fractions].items():
        if expected[0] < n - 1:
            assert default_parameters(n, dropout=dropout, adversarial=adversarial) == expected


def test_default_parameters_pick_the_cheapest_column_covering_the_request():
    assert default_parameters(1000, dropout=0.10, adversarial=0.05) == (72, 24)
    assert default_parameters(1000, dropout=0.10, adversarial=0.10) == (286, 150)
    assert default_parameters(1000, dropout=0.0, adversarial=0.0) == (30, 17)


def test_default_parameters_round_n_up_to_the_next_table_row():
    assert default_parameters(101) == (30, 17)
    assert default_parameters(999) == (30, 17)
    assert default_parameters(65) == (12, 6)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 10, 20, 64])
def test_small_rounds_use_the_complete_graph(n):
    k, t = default_parameters(n)
    assert k == n - 1
    assert 2 <= t <= n


def test_complete_graph_threshold_is_secure_and_live_when_both_are_possible():
    for n in range(3, 65):
        for adversarial, dropout in [(0.05, 0.05), (0.05, 0.33), (0.33, 0.33), (0.45, 0.45)]:
            k, t = default_parameters(n, dropout=dropout, adversarial=adversarial)
            assert k == n - 1
            assert t > adversarial * n and t >= 2
            if math.floor(adversarial * n) + 1 <= n - math.ceil(dropout * n) and n - math.ceil(dropout * n) >= 2:
                assert t <= n - math.ceil(dropout * n)


def test_every_default_is_a_valid_round_configuration():
    for n in list(range(2, 130)) + [500, 1000, 5000]:
        k, t = default_parameters(n)
        RoundConfig(0, bytes(32), tuple(range(n)), k, t, 16, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 1}, "2\\.\\.1000000"),
        ({"n": 1_000_001}, "explicitly"),
        ({"n": 100, "dropout": 0.45, "adversarial": 0.46}, "exceeds 0.9"),
        ({"n": 100, "dropout": 0.46}, "explicitly"),
        ({"n": 100, "dropout": -0.1}, "fraction"),
        ({"n": 100, "adversarial": 1.0}, "fraction"),
        ({"n": 100.0}, "int"),
    ],
)
def test_default_parameters_refuse_what_the_table_does_not_cover(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        default_parameters(**kwargs)
