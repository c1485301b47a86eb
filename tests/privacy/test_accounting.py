"""Events, RDP curves and accountants against published oracles (docs/ALGORITHMS.md §3.3-3.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis import rdp as opacus_rdp

from privacy import rdp as curves
from privacy.accounting import (
    RDP_ORDERS,
    RunningRdp,
    epsilon_from_rdp,
    rdp_of,
    recompute_epsilon,
    to_dp_accounting_event,
)
from privacy.errors import AccountingError, EventFormatError, UnsupportedEventError
from privacy.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
    SkellamEvent,
    event_from_json,
    event_to_json,
    leaf_events,
)
from privacy.skellam import skellam_pmf

DELTA = 1e-5
MNIST_RATE = 256 / 60000


def _dpsgd(sigma: float, rate: float, steps: int) -> SelfComposedEvent:
    return SelfComposedEvent(PoissonSampledEvent(rate, GaussianEvent(sigma)), steps)


# --- oracles -----------------------------------------------------------------------------------


def test_tf_privacy_mnist_default_matches_opacus_rdp_and_prv():
    event = _dpsgd(1.1, MNIST_RATE, 14_062)  # 60 epochs
    rdp = recompute_epsilon([event], DELTA, "rdp")
    assert rdp == pytest.approx(2.5966, abs=5e-5)
    assert recompute_epsilon([event], DELTA, "opacus-rdp") == pytest.approx(rdp, rel=1e-12)
    prv = recompute_epsilon([event], DELTA, "prv")
    assert prv == pytest.approx(2.3917, abs=0.01)
    assert prv <= rdp


def test_second_oracle_row_sigma_point_seven():
    event = _dpsgd(0.7, MNIST_RATE, 10_546)  # 45 epochs, int(45 * 60000 / 256)
    assert recompute_epsilon([event], DELTA, "rdp") == pytest.approx(6.3181, abs=5e-5)
    assert recompute_epsilon([event], DELTA, "prv") == pytest.approx(5.6498, abs=0.01)


def test_opacus_own_test_values():
    assert recompute_epsilon([_dpsgd(1.5, 0.04, 2250)], DELTA, "rdp") == pytest.approx(7.32911117143, abs=1e-9)
    assert recompute_epsilon([_dpsgd(1.5, 0.04, 2249)], DELTA, "prv") == pytest.approx(6.777395712150674, abs=1e-6)


@pytest.mark.parametrize(
    "accountant,sigma,steps",
    [("rdp", 1.416015625, 2250), ("rdp", 1.356201171875, 2000), ("prv", 1.34765625, 2250), ("prv", 1.29150390625, 2000)],
)
def test_opacus_get_noise_multiplier_outputs_spend_just_under_eight(accountant, sigma, steps):
    """Opacus' calibrated sigmas (q = 0.04, eps = 8, tolerance 0.01) sit just inside the budget."""
    epsilon = recompute_epsilon([_dpsgd(sigma, 0.04, steps)], DELTA, accountant)
    assert 7.99 - 0.01 <= epsilon <= 8.0


def test_balle_conversion_matches_dp_accounting_constant_rdp_oracle():
    orders = np.arange(2, 33, dtype=np.float64)
    epsilon, order = epsilon_from_rdp(np.full(orders.size, 1.1), DELTA, orders)
    assert epsilon == pytest.approx(1.32783806176, abs=1e-10)
    assert order == 32


@pytest.mark.parametrize("sigma,steps", [(1.1, 14_062), (0.7, 10_546)])
def test_cross_check_with_dp_accounting_rdp_and_pld(sigma, steps):
    event = _dpsgd(sigma, MNIST_RATE, steps)
    rdp = recompute_epsilon([event], DELTA, "rdp")
    assert recompute_epsilon([event], DELTA, "dp-accounting-rdp") == pytest.approx(rdp, abs=2e-3)
    pld = recompute_epsilon([event], DELTA, "pld")
    prv = recompute_epsilon([event], DELTA, "prv")
    assert abs(pld - prv) <= 0.02 * prv
    assert pld <= rdp and prv <= rdp


def test_discrete_gaussian_rdp_matches_dp_accounting_zcdp_to_four_decimals():
    events = [DiscreteGaussianEvent(4.0, 2.0), SelfComposedEvent(DiscreteGaussianEvent(10.0, 3.0), 20)]
    ours = recompute_epsilon(events, DELTA, "rdp")
    theirs = recompute_epsilon(events, DELTA, "dp-accounting-rdp")
    assert ours == pytest.approx(theirs, abs=1e-4)


# --- RDP curves ----------------------------------------------------------------------------------


def _exact_skellam_renyi(mu: float, alpha: int) -> float:
    """D_alpha(Sk(mu) || 1 + Sk(mu)) by direct summation in log space."""
    from scipy.special import logsumexp

    k = np.arange(-int(12 * math.sqrt(mu)) - 40, int(12 * math.sqrt(mu)) + 40)
    log_p, log_q = np.log(skellam_pmf(k, mu)), np.log(skellam_pmf(k - 1, mu))
    return float(logsumexp(alpha * log_p + (1 - alpha) * log_q)) / (alpha - 1)


@pytest.mark.parametrize(
    "mu,alpha,exact,bound",
    [(10.0, 2, 0.0997, 0.1225), (10.0, 32, 0.9416, 1.75), (50.0, 2, 0.0200, 0.0209), (50.0, 32, 0.2966, 0.3269)],
)
def test_skellam_rdp_bound_values_and_exact_one_dimensional_divergence(mu, alpha, exact, bound):
    assert curves.skellam_rdp(mu, 1.0, 1.0, [alpha])[0] == pytest.approx(bound, abs=5e-5)
    computed = _exact_skellam_renyi(mu, alpha)
    assert computed == pytest.approx(exact, abs=5e-4)
    assert computed <= bound


def test_discrete_curves_at_fractional_orders_use_the_next_integer_order():
    assert curves.skellam_rdp(20.0, 2.0, 4.0, [2.5])[0] == curves.skellam_rdp(20.0, 2.0, 4.0, [3])[0]


def test_ddgauss_reduces_to_the_central_discrete_gaussian_when_tau_vanishes():
    event = DistributedDiscreteGaussianEvent(5.0, 16, 3.0, 9.0, 1000)
    central = DiscreteGaussianEvent(5.0 * 4, 3.0)
    assert curves.ddgauss_tau(5.0, 16) < 1e-100
    integer = RDP_ORDERS == np.round(RDP_ORDERS)
    assert np.allclose(rdp_of(event)[integer], rdp_of(central)[integer], rtol=1e-12)
    # At fractional orders the DDGauss bound is read at the next integer order: never below.
    assert np.all(rdp_of(event) >= rdp_of(central) * (1 - 1e-12))


def test_ddgauss_pays_for_small_local_noise():
    small = rdp_of(DistributedDiscreteGaussianEvent(0.3, 50, 3.0, 9.0, 1000))
    gaussian = curves.discrete_gaussian_rdp(0.3 * math.sqrt(50), 3.0, RDP_ORDERS)
    assert curves.ddgauss_tau(0.3, 50) > 1e-3
    assert np.all(small >= gaussian)


def test_zhu_wang_bound_is_an_upper_bound_on_the_exact_subsampled_gaussian():
    orders = np.arange(2, 65, dtype=np.float64)
    exact = opacus_rdp.compute_rdp(q=0.01, noise_multiplier=1.0, steps=1, orders=list(orders))
    bound = curves.poisson_subsampled_rdp(0.01, lambda j: j / 2.0, orders)
    assert np.all(bound >= exact * (1 - 1e-9))
    assert bound[0] == pytest.approx(exact[0], rel=1e-6)  # tight at alpha = 2
    assert np.all(bound <= 2.5 * exact)  # the factor 3 of the bound costs at most ~2.3x here
    assert np.allclose(curves.poisson_subsampled_rdp(1.0, lambda j: j / 2.0, orders), orders / 2)


def test_client_sampling_amplifies_the_discrete_mechanisms():
    base = SkellamEvent(400.0, 2.0, 4.0)
    sampled = PoissonSampledEvent(0.05, base)
    assert np.all(rdp_of(sampled)[RDP_ORDERS >= 2] <= rdp_of(base)[RDP_ORDERS >= 2])
    assert recompute_epsilon([sampled], DELTA) < recompute_epsilon([base], DELTA)


def test_distributed_skellam_accounts_the_floor_not_the_survivors():
    event = DistributedSkellamEvent(10.0, 8, 2.0, 4.0, survivors=12)
    assert np.array_equal(rdp_of(event), rdp_of(SkellamEvent(80.0, 2.0, 4.0)))


# --- running accountant --------------------------------------------------------------------------


def test_running_rdp_equals_recomputation_and_composition_commutes():
    events = [
        DiscreteGaussianEvent(6.0, 2.0),
        SkellamEvent(40.0, 2.0, 4.0),
        _dpsgd(1.0, 0.01, 100),
        DistributedSkellamEvent(5.0, 10, 1.0, 1.0),
    ]
    forward, backward = RunningRdp(), RunningRdp()
    for event in events:
        forward.add(event)
    for event in reversed(events):
        backward.add(event)
    assert forward.releases == 4
    assert forward.epsilon(DELTA) == pytest.approx(recompute_epsilon(events, DELTA), rel=1e-12)
    assert forward.epsilon(DELTA) == pytest.approx(backward.epsilon(DELTA), rel=1e-12)
    assert forward.epsilon(DELTA) == pytest.approx(recompute_epsilon([ComposedEvent(tuple(events))], DELTA), rel=1e-12)
    assert RunningRdp().epsilon(DELTA) == 0.0


def test_projected_epsilon_changes_nothing():
    running = RunningRdp()
    running.add(DiscreteGaussianEvent(5.0, 1.0))
    before = running.epsilon(DELTA)
    projected = running.projected_epsilon(DiscreteGaussianEvent(5.0, 1.0), DELTA)
    assert projected > before == running.epsilon(DELTA)
    assert running.releases == 1


def test_orders_cover_integers_to_256_and_opacus_fractional_orders():
    assert set(range(2, 257)) <= set(RDP_ORDERS.tolist())
    assert {1.1, 1.5, 10.9, 63.0} <= set(np.round(RDP_ORDERS, 10).tolist())
    assert not RDP_ORDERS.flags.writeable


def test_prv_refuses_events_it_cannot_interpret():
    with pytest.raises(UnsupportedEventError):
        recompute_epsilon([SkellamEvent(10.0, 1.0, 1.0)], DELTA, "prv")
    with pytest.raises(UnsupportedEventError):
        to_dp_accounting_event(SkellamEvent(10.0, 1.0, 1.0))
    with pytest.raises(AccountingError):
        recompute_epsilon([GaussianEvent(1.0)], DELTA, "moments")
    with pytest.raises(AccountingError):
        recompute_epsilon([GaussianEvent(1.0)], 0.0)


# --- events ---------------------------------------------------------------------------------------

_leaves = st.one_of(
    st.builds(GaussianEvent, st.floats(0.1, 100)),
    st.builds(DiscreteGaussianEvent, st.floats(0.1, 1e4), st.floats(0.1, 1e3)),
    st.builds(SkellamEvent, st.floats(0.1, 1e8), st.floats(0.1, 1e3), st.floats(0.1, 1e6)),
    st.builds(DistributedSkellamEvent, st.floats(0.1, 1e6), st.integers(1, 1000), st.floats(0.1, 10),
              st.floats(0.1, 100), st.one_of(st.none(), st.integers(1, 2000))),
    st.builds(DistributedDiscreteGaussianEvent, st.floats(0.1, 1e3), st.integers(1, 1000), st.floats(0.1, 10),
              st.floats(0.1, 100), st.integers(1, 10**6)),
)
_events = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(PoissonSampledEvent, st.floats(1e-6, 1.0), inner),
        st.builds(SelfComposedEvent, inner, st.integers(1, 10**6)),
        st.builds(ComposedEvent, st.lists(inner, min_size=1, max_size=4).map(tuple)),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(_events)
def test_events_round_trip_through_json(event):
    import json

    data = json.loads(json.dumps(event_to_json(event)))
    assert event_from_json(data) == event
    assert all(type(leaf) in (GaussianEvent, DiscreteGaussianEvent, SkellamEvent, DistributedSkellamEvent,
                              DistributedDiscreteGaussianEvent) for leaf in leaf_events(event))


@pytest.mark.parametrize(
    "data",
    [
        {"type": "laplace", "scale": 1.0},
        {"type": "gaussian"},
        {"type": "gaussian", "noise_multiplier": 1.0, "extra": 2},
        {"type": "gaussian", "noise_multiplier": -1.0},
        {"type": "gaussian", "noise_multiplier": float("inf")},
        {"type": "self_composed", "event": {"type": "gaussian", "noise_multiplier": 1.0}, "count": 2.0},
        {"type": "poisson_sampled", "sampling_rate": 1.5, "event": {"type": "gaussian", "noise_multiplier": 1.0}},
        {"type": "composed", "events": []},
        {"type": "skellam", "mu": True, "l2_sensitivity": 1.0, "l1_sensitivity": 1.0},
        ["gaussian"],
    ],
)
def test_malformed_event_json_is_refused(data):
    with pytest.raises(EventFormatError):
        event_from_json(data)


def test_events_are_immutable_and_validated_on_construction():
    event = DiscreteGaussianEvent(2.0, 1.0)
    with pytest.raises(AttributeError):
        event.sigma = 3.0  # type: ignore[misc]
    with pytest.raises(EventFormatError):
        SelfComposedEvent(object(), 2)  # type: ignore[arg-type]
    with pytest.raises(EventFormatError):
        DistributedSkellamEvent(1.0, 0, 1.0, 1.0)
