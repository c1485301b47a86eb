"""Baselines for the LoCoDL experiments, float64 numpy, same objectives and traces.

All minimize F = (1/n)Σ φ_i with φ_i = f_i + g (the server's g folded into every client, which
leaves F and x* unchanged), over a :class:`federation.locodl.FederatedObjective`:

- :func:`run_gradient_descent`: every iteration uploads ∇φ_i (32d bits).
- :func:`run_diana`: compressed gradient differences with learned shifts (docs/ALGORITHMS.md §5.2).
- :func:`run_scaffnew`: ProxSkip/Scaffnew local training with control variates, full-precision
  uploads with probability p (Mishchenko et al., ICML 2022).
- :func:`run_local_gd`: FedAvg-style local training (K local GD steps, then average); no
  control variates, so on heterogeneous clients it stalls at a biased point (client drift).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from federation.compressors import FLOAT_BITS, Compressor
from federation.learning_errors import AlgorithmError
from federation.locodl import FederatedObjective
from federation.traces import Trace, TraceRecorder


def _check_iterations(iterations: int) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise AlgorithmError(f"iterations must be an int >= 1, got {iterations!r}")
    return iterations


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, int | float | np.floating) and math.isfinite(value) and value > 0):
        raise AlgorithmError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _start(problem: FederatedObjective, start: np.ndarray | None) -> np.ndarray:
    x = np.zeros(problem.dimension) if start is None else np.array(start, dtype=np.float64)
    if x.shape != (problem.dimension,):
        raise AlgorithmError(f"start must have shape ({problem.dimension},), got {x.shape}")
    return x


def _client_gradients(problem: FederatedObjective, points: np.ndarray) -> np.ndarray:
    """(n, d): ∇φ_i(points[i]) = ∇f_i + ∇g."""
    return problem.client_gradients(points) + np.stack([problem.shared_gradient(p) for p in points])


def run_gradient_descent(
    problem: FederatedObjective, stepsize: float, iterations: int, *, optimum=None, optimal_value=None,
    start=None, record_every: int = 1, stop_below: float | None = None,
) -> Trace:
    """x ← x − γ·(1/n)Σ∇φ_i(x); each iteration every client uploads its gradient (32d bits)."""
    gamma, iterations = _positive(stepsize, "stepsize"), _check_iterations(iterations)
    x = _start(problem, start)
    bits = FLOAT_BITS * problem.dimension
    recorder = TraceRecorder("GD", problem, optimum, optimal_value, record_every, stop_below)
    recorder.record(0, 0, x)
    for t in range(1, iterations + 1):
        grads = _client_gradients(problem, np.tile(x, (problem.num_clients, 1)))
        x = x - gamma * grads.mean(axis=0)
        if recorder.due(t, force=t == iterations):
            recorder.record(t, t * bits, x, communications=t)
            if recorder.stopped:
                break
    return recorder.finish()


def diana_stepsize(smoothness: float, omega_average: float) -> float:
    """γ = 1/((1 + 6ω_av)L), the DIANA step of the EF-BV code (ω_av = ω/n for independent C)."""
    return 1.0 / ((1.0 + 6.0 * omega_average) * _positive(smoothness, "smoothness"))


def run_diana(
    problem: FederatedObjective,
    compressor: Compressor,
    smoothness: float,
    iterations: int,
    *,
    seed: int = 0,
    optimum=None,
    optimal_value=None,
    start=None,
    record_every: int = 1,
    stop_below: float | None = None,
    name: str | None = None,
) -> Trace:
    """DIANA (Mishchenko et al., arXiv 1901.09269; §5.2 with ν = 1, λ = 1/(1 + ω)).

    Client i uploads d_i = C_i(∇φ_i(x) − h_i) every iteration; the server steps with
    ĝ = (1/n)Σ(h_i + d_i) and every shift moves h_i ← h_i + λd_i. Shifts start at 0 (no free
    full-precision round). γ from :func:`diana_stepsize` with L = ``smoothness`` of the φ_i.
    """
    iterations = _check_iterations(iterations)
    n, d = problem.num_clients, problem.dimension
    omega = compressor.omega(d)
    gamma = diana_stepsize(smoothness, compressor.omega_average(d, n))
    shift_rate = 1.0 / (1.0 + omega)
    rng = np.random.default_rng([seed, 1])
    bits = compressor.uplink_bits(d, n)
    x = _start(problem, start)
    shifts = np.zeros((n, d))
    recorder = TraceRecorder(name or f"DIANA/{compressor.name}", problem, optimum, optimal_value, record_every, stop_below)
    recorder.record(0, 0, x)
    for t in range(1, iterations + 1):
        sent = compressor.compress(_client_gradients(problem, np.tile(x, (n, 1))) - shifts, rng)
        estimate = (shifts + sent).mean(axis=0)
        shifts = shifts + shift_rate * sent
        x = x - gamma * estimate
        if recorder.due(t, force=t == iterations):
            recorder.record(t, t * bits, x, communications=t)
            if recorder.stopped:
                break
    return recorder.finish()


def scaffnew_iterates(
    gradients: Callable[[np.ndarray], np.ndarray],
    weights: np.ndarray,
    stepsize: float,
    probability: float,
    coins: np.ndarray,
    start: np.ndarray,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scaffnew on min Σ_j w_j F_j (Σw_j = 1), returning (x (m, d), h (m, d)) after each iteration.

    x̂_j = x_j − γ(∇F_j(x_j) − h_j); if θ_t: x_j = Σ_k w_k x̂_k for all j and
    h_j += (p/γ)(x_j − x̂_j); else x_j = x̂_j. ``gradients`` maps (m, d) points to (m, d)
    gradients; ``coins`` is the (T,) bool sequence θ_t. Used to check that LoCoDL with ω = 0,
    χ = ρ = 1 is Scaffnew over the n + 1 functions (f_1..f_n, g) with weights (1/(2n), ..., 1/2).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or np.any(weights <= 0) or abs(weights.sum() - 1.0) > 1e-12:
        raise AlgorithmError("weights must be positive and sum to 1")
    gamma, p = _positive(stepsize, "stepsize"), _positive(probability, "probability")
    x = np.tile(np.asarray(start, dtype=np.float64), (weights.size, 1))
    h = np.zeros_like(x)
    history = []
    for coin in np.asarray(coins, dtype=bool):
        x_hat = x - gamma * (gradients(x) - h)
        if coin:
            x = np.tile(weights @ x_hat, (weights.size, 1))
            h = h + (p / gamma) * (x - x_hat)
        else:
            x = x_hat
        history.append((x.copy(), h.copy()))
    return history


def run_scaffnew(
    problem: FederatedObjective,
    stepsize: float,
    probability: float,
    iterations: int,
    *,
    seed: int = 0,
    optimum=None,
    optimal_value=None,
    start=None,
    record_every: int = 1,
    stop_below: float | None = None,
    name: str = "Scaffnew",
) -> Trace:
    """Scaffnew with uniform weights over the φ_i; γ = 1/L, p = 1/√κ is the theory's choice.

    Each communication uploads x̂_i in full precision (32d bits); the trace follows the average
    of the clients' iterates (the server's model).
    """
    gamma, p, iterations = _positive(stepsize, "stepsize"), _positive(probability, "probability"), _check_iterations(iterations)
    if p > 1:
        raise AlgorithmError(f"probability must be <= 1, got {p}")
    n = problem.num_clients
    coins = np.random.default_rng([seed, 0]).random(iterations) < p
    bits = FLOAT_BITS * problem.dimension
    x = np.tile(_start(problem, start), (n, 1))
    h = np.zeros_like(x)
    recorder = TraceRecorder(name, problem, optimum, optimal_value, record_every, stop_below)
    recorder.record(0, 0, x.mean(axis=0))
    communications = 0
    for t in range(iterations):
        x_hat = x - gamma * (_client_gradients(problem, x) - h)
        if coins[t]:
            x = np.tile(x_hat.mean(axis=0), (n, 1))
            h = h + (p / gamma) * (x - x_hat)
            communications += 1
        else:
            x = x_hat
        last = t + 1 == iterations
        if recorder.due(t + 1, force=last or bool(coins[t + 1])):
            recorder.record(t + 1, communications * bits, x.mean(axis=0), communications=communications)
            if recorder.stopped:
                break
    return recorder.finish()


def run_local_gd(
    problem: FederatedObjective,
    stepsize: float,
    local_steps: int,
    rounds: int,
    *,
    optimum=None,
    optimal_value=None,
    start=None,
    stop_below: float | None = None,
    name: str | None = None,
) -> Trace:
    """FedAvg with full local gradients: each round K = ``local_steps`` GD steps on φ_i from the
    global model, then the server averages; 32d bits per client per round. Recorded per round."""
    gamma, rounds = _positive(stepsize, "stepsize"), _check_iterations(rounds)
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise AlgorithmError(f"local_steps must be an int >= 1, got {local_steps!r}")
    n = problem.num_clients
    bits = FLOAT_BITS * problem.dimension
    x = _start(problem, start)
    recorder = TraceRecorder(name or f"FedAvg (K={local_steps})", problem, optimum, optimal_value, 1, stop_below)
    recorder.record(0, 0, x)
    for r in range(1, rounds + 1):
        local = np.tile(x, (n, 1))
        for _ in range(local_steps):
            local = local - gamma * _client_gradients(problem, local)
        x = local.mean(axis=0)
        recorder.record(r * local_steps, r * bits, x, communications=r)
        if recorder.stopped:
            break
    return recorder.finish()
