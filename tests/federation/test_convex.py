"""The float64 logistic-regression objective: gradients, constants, solver, torch layout."""

import numpy as np
import pytest
import torch

from federation.convex import softmax_regression
from federation.datasets import make_fedprox_synthetic
from federation.learning_errors import AlgorithmError
from federation.models import build_model
from federation.parameters import load_parameters


@pytest.fixture(scope="module")
def objective():
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=6, dimension=7, num_classes=4, seed=3)
    return softmax_regression(data.clients, 4, l2=0.3, shared_fraction=0.25)


def test_gradient_matches_central_differences(objective):
    rng = np.random.default_rng(0)
    x = 0.3 * rng.standard_normal(objective.dimension)
    for _ in range(3):
        direction = rng.standard_normal(objective.dimension)
        h = 1e-6
        numeric = (objective.objective(x + h * direction) - objective.objective(x - h * direction)) / (2 * h)
        assert numeric == pytest.approx(objective.gradient(x) @ direction, rel=1e-6, abs=1e-8)


def test_client_gradients_and_shared_gradient_add_up_to_the_full_gradient(objective):
    x = np.linspace(-1, 1, objective.dimension)
    clients = objective.client_gradients(np.tile(x, (objective.num_clients, 1)))
    assert np.allclose(clients.mean(axis=0) + objective.shared_gradient(x), objective.gradient(x), atol=1e-13)
    assert np.allclose(objective.client_gradient(2, x), clients[2], atol=1e-15)
    assert objective.client_l2 + objective.shared_l2 == pytest.approx(objective.l2)


def test_smoothness_bounds_every_client_gradient_change(objective):
    rng = np.random.default_rng(1)
    for i in range(objective.num_clients):
        for _ in range(5):
            x, y = rng.standard_normal((2, objective.dimension))
            change = np.linalg.norm(objective.client_gradient(i, x) - objective.client_gradient(i, y))
            assert change <= objective.client_smoothness[i] * np.linalg.norm(x - y) * (1 + 1e-12)


def test_solver_reaches_gradient_norm_1e_12(objective):
    optimum = objective.solve(tolerance=1e-12)
    assert np.linalg.norm(objective.gradient(optimum)) <= 1e-12
    # Strong convexity: any other point is worse.
    assert objective.objective(optimum + 1e-3) > objective.objective(optimum)


def test_layout_matches_torch_logistic_regression(objective):
    # x = [W (C, F) row-major, b (C,)] is the flattening of nn.Linear's (weight, bias), so a
    # LoCoDL model can be loaded into the torch model and evaluated there.
    x = np.random.default_rng(2).standard_normal(objective.dimension)
    model = build_model("logreg", (7,), 4).double()
    load_parameters(model, x)
    client = objective.clients[0]
    with torch.no_grad():
        logits = model(torch.tensor(client.features, dtype=torch.float64))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(client.labels)).item()
    single = softmax_regression([client], 4, l2=objective.l2, shared_fraction=objective.shared_fraction)
    assert single.objective(x) == pytest.approx(loss + 0.5 * objective.l2 * (x @ x), rel=1e-12)


def test_objective_validates_its_inputs(objective):
    with pytest.raises(AlgorithmError, match="l2"):
        softmax_regression(objective.clients, 4, l2=0.0)
    with pytest.raises(AlgorithmError, match="shared_fraction"):
        softmax_regression(objective.clients, 4, l2=1.0, shared_fraction=1.0)
    with pytest.raises(AlgorithmError, match="label"):
        softmax_regression(objective.clients, 2, l2=1.0)
    with pytest.raises(AlgorithmError, match="shape"):
        objective.client_gradients(np.zeros((2, objective.dimension)))
