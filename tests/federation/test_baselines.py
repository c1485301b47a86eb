"""Baselines of the LoCoDL experiments: GD, DIANA, Scaffnew converge exactly; FedAvg drifts."""

import math

import numpy as np
import pytest

from federation.baselines import (
    diana_stepsize,
    run_diana,
    run_gradient_descent,
    run_local_gd,
    run_scaffnew,
)
from federation.compressors import FLOAT_BITS, Identity, RandK
from federation.convex import softmax_regression
from federation.datasets import make_fedprox_synthetic
from federation.learning_errors import AlgorithmError


@pytest.fixture(scope="module")
def problem():
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=8, dimension=10, num_classes=3, seed=2)
    objective = softmax_regression(data.clients, 3, l2=2.0, shared_fraction=0.5)
    optimum = objective.solve()
    # Smoothness of φ_i = f_i + g, the functions the baselines see.
    smoothness = float(objective.client_smoothness.max() + objective.shared_l2)
    return objective, optimum, objective.objective(optimum), smoothness


def test_gradient_descent_converges_and_pays_full_precision_every_iteration(problem):
    objective, optimum, value, smoothness = problem
    trace = run_gradient_descent(objective, 1 / smoothness, 600, optimum=optimum, optimal_value=value, record_every=100)
    assert trace.final_suboptimality < 1e-12
    assert trace.uplink_bits[-1] == 600 * FLOAT_BITS * objective.dimension


@pytest.mark.parametrize("compressor", [Identity(), RandK(8, shared=False)], ids=["identity", "rand-k"])
def test_diana_converges_linearly_to_the_exact_optimum(problem, compressor):
    objective, optimum, value, smoothness = problem
    trace = run_diana(objective, compressor, smoothness, 1500, optimum=optimum, optimal_value=value, record_every=100)
    assert trace.final_suboptimality < 1e-12
    assert trace.distance[-1] < 1e-6
    assert trace.uplink_bits[-1] == 1500 * compressor.uplink_bits(objective.dimension, 8)


def test_diana_stepsize_uses_omega_average():
    assert diana_stepsize(10.0, 0.5) == pytest.approx(1 / (4 * 10.0))
    with pytest.raises(AlgorithmError):
        diana_stepsize(0.0, 0.5)


def test_scaffnew_converges_with_few_communications(problem):
    objective, optimum, value, smoothness = problem
    kappa = smoothness / objective.l2
    trace = run_scaffnew(objective, 1 / smoothness, 1 / math.sqrt(kappa), 800, optimum=optimum, optimal_value=value)
    assert trace.final_suboptimality < 1e-12
    # Communicates with probability 1/√κ: far fewer rounds than iterations.
    assert trace.communications[-1] < 0.5 * 800
    assert trace.uplink_bits[-1] == trace.communications[-1] * FLOAT_BITS * objective.dimension


def test_local_gd_drifts_on_heterogeneous_clients_but_one_step_is_gradient_descent(problem):
    objective, optimum, value, smoothness = problem
    drifting = run_local_gd(objective, 1 / smoothness, 10, 200, optimum=optimum, optimal_value=value)
    exact = run_local_gd(objective, 1 / smoothness, 1, 600, optimum=optimum, optimal_value=value)
    # Without control variates the fixed point of K > 1 local steps is not x*.
    assert drifting.final_suboptimality > 1e-6
    assert abs(drifting.suboptimality[-1] - drifting.suboptimality[-20]) < 1e-3 * drifting.suboptimality[-1]
    assert exact.final_suboptimality < 1e-12


def test_bits_to_reach_reads_the_first_record_below_the_threshold(problem):
    objective, optimum, value, smoothness = problem
    trace = run_gradient_descent(objective, 1 / smoothness, 200, optimum=optimum, optimal_value=value)
    index = int(np.argmax(trace.suboptimality <= 1e-6))
    assert trace.bits_to_reach(1e-6) == trace.uplink_bits[index]
    assert trace.bits_to_reach(-1.0) is None
    assert trace.to_json()["method"] == "GD"
