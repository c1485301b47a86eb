"""LoCoDL as a round protocol (per-client objects, shared coins from round seeds) equals the
vectorized algorithm, and converges through the lattice codec's secure-sum decode."""

import hashlib

import numpy as np
import pytest

from federation.compressors import Identity, LatticeCompressor
from federation.convex import softmax_regression
from federation.datasets import make_fedprox_synthetic
from federation.learning_errors import AlgorithmError
from federation.locodl import locodl_parameters, run_locodl
from federation.locodl_clients import LoCoDLClient, LoCoDLServer, LoCoDLSetup, local_steps_in_round

CLIENTS = 6


def round_seed(index: int) -> bytes:
    return hashlib.sha256(f"test round {index}".encode()).digest()


@pytest.fixture(scope="module")
def federation():
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=CLIENTS, dimension=8, num_classes=3, seed=5)
    objective = softmax_regression(data.clients, 3, l2=2.0)
    return data, objective, objective.solve()


def make_setup(objective, omega=0.0, omega_average=0.0):
    parameters = locodl_parameters(objective.smoothness, objective.strong_convexity, omega, omega_average)
    return LoCoDLSetup(3, 8, 2.0, parameters)


def test_round_protocol_reproduces_the_vectorized_algorithm(federation):
    data, objective, _ = federation
    setup = make_setup(objective)
    clients = [LoCoDLClient(c, setup) for c in data.clients]
    server = LoCoDLServer(setup)
    coins = []
    for r in range(25):
        steps = server.local_round(round_seed(r))
        uploads = np.stack([client.local_round(round_seed(r)).update for client in clients])
        assert all(client.shared.y_hat is not None for client in clients)
        mean_sent = server.finish_round(uploads.sum(axis=0), CLIENTS)
        for client, sent in zip(clients, uploads):
            client.finish_round(sent, mean_sent)
        coins += [False] * (steps - 1) + [True]
    _, state = run_locodl(objective, Identity(), setup.parameters, len(coins), coins=np.array(coins))
    assert np.allclose(np.stack([c.x for c in clients]), state.x, rtol=0, atol=1e-12)
    assert np.allclose(np.stack([c.u for c in clients]), state.u, rtol=0, atol=1e-12)
    assert np.allclose(server.model, state.y, rtol=0, atol=1e-12)
    # Every client's replica of (y, v) is the server's, bit for bit.
    assert all(np.array_equal(c.shared.y, server.shared.y) and np.array_equal(c.shared.v, server.shared.v) for c in clients)


def test_round_protocol_converges_through_lattice_secure_sums(federation):
    data, objective, optimum = federation
    compressor = LatticeCompressor("E8", resolution=2.0)
    d = objective.dimension
    setup = make_setup(objective, compressor.omega(d), compressor.omega_average(d, CLIENTS))
    clients = [LoCoDLClient(c, setup) for c in data.clients]
    server = LoCoDLServer(setup)
    rng = np.random.default_rng(0)
    for r in range(100):
        server.local_round(round_seed(r))
        uploads = np.stack([client.local_round(round_seed(r)).update for client in clients])
        decoded, decoded_sum = compressor.compress_with_sum(uploads, rng)
        mean_sent = server.finish_round(decoded_sum, CLIENTS)
        for client, sent in zip(clients, decoded):
            client.finish_round(sent, mean_sent)
    assert np.linalg.norm(server.model - optimum) < 1e-9
    invariant = np.mean([c.u for c in clients], axis=0) + server.shared.v
    assert np.abs(invariant).max() < 1e-10  # decode_sum vs Σ decodes differ only by rounding


def test_local_steps_follow_the_shared_geometric_coin():
    counts = np.array([local_steps_in_round(round_seed(r), 0.2, 1000) for r in range(3000)])
    # Geometric(0.2): mean 5, variance 20; 6 standard errors.
    assert abs(counts.mean() - 5.0) < 6 * np.sqrt(20 / 3000)
    assert counts.min() == 1
    assert local_steps_in_round(round_seed(0), 1e-9, 7) == 7  # truncated


def test_protocol_objects_refuse_misuse(federation):
    data, objective, _ = federation
    setup = make_setup(objective)
    client = LoCoDLClient(data.clients[0], setup)
    with pytest.raises(AlgorithmError, match="before local_round"):
        client.finish_round(np.zeros(setup.dimension), np.zeros(setup.dimension))
    with pytest.raises(AlgorithmError, match="setup says"):
        LoCoDLClient(data.clients[0], LoCoDLSetup(3, 9, 2.0, setup.parameters))
    with pytest.raises(AlgorithmError, match="clients"):
        LoCoDLServer(setup).finish_round(np.zeros(setup.dimension), 0)
