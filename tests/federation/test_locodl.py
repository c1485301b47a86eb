"""LoCoDL (docs/ALGORITHMS.md §5.1): exact linear convergence, the invariant, the Scaffnew reduction."""

import numpy as np
import pytest

from federation.baselines import scaffnew_iterates
from federation.compressors import Identity, LatticeCompressor, Natural, RandK
from federation.convex import softmax_regression
from federation.datasets import make_fedprox_synthetic
from federation.learning_errors import AlgorithmError
from federation.locodl import (
    LoCoDLParameters,
    LoCoDLState,
    expected_rate,
    locodl_iteration,
    locodl_parameters,
    run_locodl,
)

CLIENTS = 10


@pytest.fixture(scope="module")
def problem():
    """10 heterogeneous FedProx-synthetic clients, 3-class logistic regression with L2 (d = 33)."""
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=CLIENTS, dimension=10, num_classes=3, seed=0)
    objective = softmax_regression(data.clients, 3, l2=2.0, shared_fraction=0.5)
    optimum = objective.solve(tolerance=1e-12)
    assert np.linalg.norm(objective.gradient(optimum)) <= 1e-12
    return objective, optimum, objective.objective(optimum)


COMPRESSORS = [
    pytest.param(Identity(), id="identity"),
    pytest.param(RandK(16, shared=True), id="rand-k-shared"),
    pytest.param(RandK(4, shared=False), id="rand-k-independent"),
    pytest.param(Natural(), id="natural"),
    pytest.param(LatticeCompressor("E8", resolution=2.0), id="lattice-E8"),
    pytest.param(LatticeCompressor("Z", resolution=4.0, rotate=False), id="lattice-Z-unrotated"),
]


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_distance_to_optimum_falls_geometrically_to_1e_10_without_plateau(problem, compressor):
    objective, optimum, optimal_value = problem
    d = objective.dimension
    parameters = locodl_parameters(
        objective.smoothness, objective.strong_convexity,
        compressor.omega(d), compressor.omega_average(d, CLIENTS),
    )
    trace, state = run_locodl(
        objective, compressor, parameters, 800, seed=1, optimum=optimum, optimal_value=optimal_value, record_every=50
    )
    on_cadence = trace.iterations % 100 == 0
    distances = trace.distance[on_cadence]
    # Geometric decrease: every 100 iterations the distance shrinks at least 4x until it reaches
    # the float64 floor (~1e-14 here); a wrong constant shows up as a window that stalls.
    above_floor = distances[:-1] > 1e-13
    ratios = distances[1:][above_floor] / distances[:-1][above_floor]
    assert ratios.size >= 5
    assert ratios.max() < 0.25, ratios
    # The server model and every client's model reach the exact optimum, not a neighbourhood.
    assert np.linalg.norm(state.y - optimum) < 1e-10
    assert np.linalg.norm(state.x - optimum, axis=1).max() < 1e-10
    assert trace.final_suboptimality < 1e-14
    # The invariant (1/n)Σu_i + v = 0 holds at every recorded iteration to float precision.
    assert np.nanmax(trace.invariant) < 1e-13
    assert trace.communications[-1] > 0


def test_optimum_with_optimal_control_variates_is_a_fixed_point(problem):
    objective, optimum, _ = problem
    n = CLIENTS
    u = objective.client_gradients(np.tile(optimum, (n, 1)))
    v = objective.shared_gradient(optimum)
    assert np.abs(u.mean(axis=0) + v).max() < 1e-12  # ∇F(x*) = 0
    state = LoCoDLState(np.tile(optimum, (n, 1)), u, optimum.copy(), v.copy())
    parameters = locodl_parameters(objective.smoothness, objective.strong_convexity, 1.0, 1.0)
    rng = np.random.default_rng(0)
    for coin in (False, True, True):
        state = locodl_iteration(objective, state, parameters, coin, RandK(5), rng)
    assert np.abs(state.x - optimum).max() < 1e-12 and np.abs(state.y - optimum).max() < 1e-12


def augmented_gradients(objective):
    """∇ of the n + 1 functions (f_1, ..., f_n, g) at (n + 1, d) points."""
    def gradients(points):
        return np.vstack([objective.client_gradients(points[:-1]), objective.shared_gradient(points[-1])[None, :]])
    return gradients


@pytest.mark.parametrize("mixing", [1.0, 0.5])
def test_omega_zero_and_chi_rho_one_is_scaffnew(problem, mixing):
    # LoCoDL with the identity compressor, ω = 0 and χ = ρ = 1 is Scaffnew over the n + 1
    # functions (f_1..f_n, g) with weights (1/(2n), ..., 1/(2n), 1/2): same iterates, same
    # control variates (u_i = h_i, v = h_{n+1}). With χ = ρ = 0.5 (still valid) it is not.
    objective, _, _ = problem
    n, d = CLIENTS, objective.dimension
    gamma, probability, steps = 1.0 / objective.smoothness, 0.3, 60
    coins = np.random.default_rng(4).random(steps) < probability
    coins[[0, 1]] = [False, True]
    parameters = LoCoDLParameters(gamma, mixing, mixing, probability, 0.0, 0.0)
    weights = np.array([1 / (2 * n)] * n + [0.5])
    history = scaffnew_iterates(augmented_gradients(objective), weights, gamma, probability, coins, np.zeros(d))
    state = LoCoDLState.initial(n, d)
    deviation = 0.0
    for t, coin in enumerate(coins):
        state = locodl_iteration(objective, state, parameters, bool(coin), Identity(), np.random.default_rng(0))
        x, h = history[t]
        deviation = max(
            deviation,
            np.abs(state.x - x[:-1]).max(), np.abs(state.y - x[-1]).max(),
            np.abs(state.u - h[:-1]).max(), np.abs(state.v - h[-1]).max(),
        )
    if mixing == 1.0:
        assert deviation < 1e-12
    else:
        assert deviation > 1e-3


def test_theory_parameters_follow_section_5_1():
    parameters = locodl_parameters(100.0, 1.0, omega=3.0, omega_average=0.3)
    assert parameters.gamma == pytest.approx(0.01)
    assert parameters.chi == parameters.rho == pytest.approx(1 / 1.3)
    assert parameters.probability == pytest.approx(np.sqrt(7 * 1.3 / 100))
    assert parameters.control_coefficient == pytest.approx(parameters.probability * parameters.chi / (0.01 * 7))
    # p²χ/(1 + 2ω) = 1/κ with this p, so the rate is 1 − 1/κ (it dominates (1 − γμ)² here).
    assert expected_rate(parameters, 100.0, 1.0) == pytest.approx(1 - 1 / 100)
    assert locodl_parameters(4.0, 1.0, 10.0, 10.0).probability == 1.0  # capped


def test_invalid_parameters_are_refused():
    with pytest.raises(AlgorithmError, match="lower chi or rho"):
        LoCoDLParameters(0.1, 1.0, 1.0, 0.5, 1.0, 1.0)  # 2 − 2 − 1 < 0
    with pytest.raises(AlgorithmError, match="probability"):
        LoCoDLParameters(0.1, 0.5, 0.5, 1.5, 0.0, 0.0)
    with pytest.raises(AlgorithmError, match="gamma"):
        LoCoDLParameters(0.0, 0.5, 0.5, 0.5, 0.0, 0.0)
    with pytest.raises(AlgorithmError, match="exceeds smoothness"):
        locodl_parameters(1.0, 2.0, 0.0, 0.0)


def test_run_locodl_validates_its_arguments(problem):
    objective, _, _ = problem
    parameters = locodl_parameters(objective.smoothness, objective.strong_convexity, 0.0, 0.0)
    with pytest.raises(AlgorithmError, match="iterations"):
        run_locodl(objective, Identity(), parameters, 0)
    with pytest.raises(AlgorithmError, match="coins"):
        run_locodl(objective, Identity(), parameters, 5, coins=np.ones(4, dtype=bool))
    with pytest.raises(AlgorithmError, match="start"):
        run_locodl(objective, Identity(), parameters, 5, start=np.zeros(3))
