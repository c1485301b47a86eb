"""LoCoDL: local training with compressed, SecAgg-summable communication (docs/ALGORITHMS.md §5.1).

Condat, Maranjyan, Richtárik, "LoCoDL: Communication-Efficient Distributed Learning with Local
Training and Compression", ICLR 2025 (arXiv 2403.04348). Problem: min f + g with
f = (1/n)Σ f_i, each f_i L-smooth and μ-strongly convex, g L-smooth convex, held as the consensus
x_i = y. Clients hold (x_i, u_i); the shared pair (y, v) is held by the server and replayed by
every client from the broadcast d̄, so nothing but d_i goes up and only d̄ comes down.

One iteration, with stepsizes γ, χ, ρ, probability p and unbiased compressors in U(ω):

1. x̂_i = x_i − γ∇f_i(x_i) + γu_i;  ŷ = y − γ∇g(y) + γv.
2. A coin θ ~ Bernoulli(p) shared by everyone (from the round seed).
3. θ = 1: upload d_i = C_i(x̂_i − ŷ); d̄ = (1/(2n))Σ_j d_j;
   x_i = (1 − ρ)x̂_i + ρ(ŷ + d̄);  u_i += (pχ/(γ(1 + 2ω)))(d̄ − d_i);
   y = ŷ + ρd̄;                     v += (pχ/(γ(1 + 2ω)))d̄.
4. θ = 0: x_i = x̂_i, y = ŷ.

(1/n)Σu_i + v = 0 is preserved by step 3 (its increments sum to zero), and x_i = y = x*,
u_i = ∇f_i(x*), v = ∇g(x*) is a fixed point, so the method converges to the EXACT optimum.
d̄ is a plain sum: exactly what secure aggregation delivers.

This module is float64 numpy. The per-client and server update rules are public functions so a
coordinator can run them one client at a time; :func:`run_locodl` runs all clients vectorized
over a :class:`federation.convex.SoftmaxRegression`-like objective for experiments and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from federation.compressors import Compressor
from federation.learning_errors import AlgorithmError
from federation.traces import Trace, TraceRecorder


class FederatedObjective(Protocol):
    """What the float64 algorithms need from a problem (``SoftmaxRegression`` provides it)."""

    @property
    def num_clients(self) -> int: ...

    @property
    def dimension(self) -> int: ...

    def client_gradients(self, points: np.ndarray) -> np.ndarray: ...

    def shared_gradient(self, y: np.ndarray) -> np.ndarray: ...

    def objective(self, x: np.ndarray) -> float: ...


def _finite_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not math.isfinite(value) or value <= 0:
        raise AlgorithmError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LoCoDLParameters:
    """γ (stepsize), χ, ρ (mixing), p (communication probability), ω and ω_av of the compressor.

    Valid when γ > 0, 0 < ρ <= 1, 0 < χ <= 1, 0 < p <= 1, ω >= 0, ω_av >= 0 and
    2ρ − ρ²(1 + ω_av) − χ >= 0 (§5.1).
    """

    gamma: float
    chi: float
    rho: float
    probability: float
    omega: float
    omega_average: float

    def __post_init__(self) -> None:
        _finite_positive(self.gamma, "gamma")
        for name in ("chi", "rho", "probability"):
            value = _finite_positive(getattr(self, name), name)
            if value > 1.0:
                raise AlgorithmError(f"{name} must be <= 1, got {value}")
        for name in ("omega", "omega_average"):
            value = getattr(self, name)
            if not (isinstance(value, int | float | np.floating) and math.isfinite(value) and value >= 0):
                raise AlgorithmError(f"{name} must be a finite number >= 0, got {value!r}")
        slack = 2 * self.rho - self.rho**2 * (1 + self.omega_average) - self.chi
        if slack < -1e-12:
            raise AlgorithmError(
                f"2rho - rho^2(1 + omega_av) - chi = {slack:.3g} < 0: lower chi or rho "
                f"(chi = rho = 1/(1 + omega_av) is the largest valid pair)"
            )

    @property
    def control_coefficient(self) -> float:
        """pχ/(γ(1 + 2ω)): the factor of the u_i and v updates."""
        return self.probability * self.chi / (self.gamma * (1.0 + 2.0 * self.omega))


def locodl_parameters(smoothness: float, strong_convexity: float, omega: float, omega_average: float) -> LoCoDLParameters:
    """The §5.1 choice: γ = 1/L, χ = ρ = 1/(1 + ω_av), p = min(1, √((1 + 2ω)(1 + ω_av)/κ)), κ = L/μ.

    Expected rate per iteration: max((1 − γμ)², (1 − γL)², 1 − p²χ/(1 + 2ω)).
    """
    smoothness = _finite_positive(smoothness, "smoothness")
    strong_convexity = _finite_positive(strong_convexity, "strong_convexity")
    if strong_convexity > smoothness:
        raise AlgorithmError(f"strong convexity {strong_convexity} exceeds smoothness {smoothness}")
    kappa = smoothness / strong_convexity
    mixing = 1.0 / (1.0 + omega_average)
    probability = min(1.0, math.sqrt((1.0 + 2.0 * omega) * (1.0 + omega_average) / kappa))
    return LoCoDLParameters(1.0 / smoothness, mixing, mixing, probability, float(omega), float(omega_average))


def expected_rate(parameters: LoCoDLParameters, smoothness: float, strong_convexity: float) -> float:
    """The contraction factor per iteration of the Lyapunov function (§5.1)."""
    gamma = parameters.gamma
    return max(
        (1 - gamma * strong_convexity) ** 2,
        (1 - gamma * smoothness) ** 2,
        1 - parameters.probability**2 * parameters.chi / (1 + 2 * parameters.omega),
    )


# --- the update rules, usable per client (d,) or for all clients at once (n, d) ---------------

def local_step(x: np.ndarray, u: np.ndarray, gradient: np.ndarray, gamma: float) -> np.ndarray:
    """x̂ = x − γ∇f_i(x) + γu (clients) or ŷ = y − γ∇g(y) + γv (shared pair)."""
    return x - gamma * (gradient - u)


def client_after_communication(
    x_hat: np.ndarray, u: np.ndarray, y_hat: np.ndarray, sent: np.ndarray, mean_sent: np.ndarray,
    parameters: LoCoDLParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for clients: (x_i, u_i) from x̂_i, u_i, ŷ, d_i (``sent``) and d̄ (``mean_sent``)."""
    x = (1.0 - parameters.rho) * x_hat + parameters.rho * (y_hat + mean_sent)
    return x, u + parameters.control_coefficient * (mean_sent - sent)


def shared_after_communication(
    y_hat: np.ndarray, v: np.ndarray, mean_sent: np.ndarray, parameters: LoCoDLParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for the shared pair: (y, v) from ŷ, v and d̄."""
    return y_hat + parameters.rho * mean_sent, v + parameters.control_coefficient * mean_sent


def mean_of_uploads(sent: np.ndarray) -> np.ndarray:
    """d̄ = (1/(2n))Σ_j d_j from the (n, d) uploads: the y pair counts as half the average."""
    return sent.sum(axis=0) / (2.0 * sent.shape[0])


@dataclass(frozen=True)
class LoCoDLState:
    """x (n, d), u (n, d) for the clients; y (d,), v (d,) shared. Float64."""

    x: np.ndarray
    u: np.ndarray
    y: np.ndarray
    v: np.ndarray

    @classmethod
    def initial(cls, clients: int, dimension: int, start: np.ndarray | None = None) -> LoCoDLState:
        """x_i = y = ``start`` (zeros by default), u_i = v = 0."""
        y = np.zeros(dimension) if start is None else np.array(start, dtype=np.float64)
        if y.shape != (dimension,):
            raise AlgorithmError(f"start must have shape ({dimension},), got {y.shape}")
        return cls(np.tile(y, (clients, 1)), np.zeros((clients, dimension)), y.copy(), np.zeros(dimension))

    def invariant_residual(self) -> float:
        """max |(1/n)Σu_i + v|: zero up to float rounding at every iteration."""
        return float(np.abs(self.u.mean(axis=0) + self.v).max())


def locodl_iteration(
    problem: FederatedObjective,
    state: LoCoDLState,
    parameters: LoCoDLParameters,
    coin: bool,
    compressor: Compressor,
    rng: np.random.Generator,
) -> LoCoDLState:
    """One LoCoDL iteration for all clients (steps 1–4); ``coin`` is the shared θ."""
    gamma = parameters.gamma
    x_hat = local_step(state.x, state.u, problem.client_gradients(state.x), gamma)
    y_hat = local_step(state.y, state.v, problem.shared_gradient(state.y), gamma)
    if not coin:
        return LoCoDLState(x_hat, state.u, y_hat, state.v)
    sent = compressor.compress(x_hat - y_hat, rng)
    mean_sent = mean_of_uploads(sent)
    x, u = client_after_communication(x_hat, state.u, y_hat, sent, mean_sent, parameters)
    y, v = shared_after_communication(y_hat, state.v, mean_sent, parameters)
    return LoCoDLState(x, u, y, v)


def run_locodl(
    problem: FederatedObjective,
    compressor: Compressor,
    parameters: LoCoDLParameters,
    iterations: int,
    *,
    seed: int = 0,
    optimum: np.ndarray | None = None,
    optimal_value: float | None = None,
    coins: np.ndarray | None = None,
    start: np.ndarray | None = None,
    record_every: int = 1,
    stop_below: float | None = None,
    name: str | None = None,
) -> tuple[Trace, LoCoDLState]:
    """Run LoCoDL for ``iterations`` iterations; returns (trace of y, final state).

    Coins are Bernoulli(p) from a generator seeded with (seed, 0) unless given explicitly
    ((iterations,) bool); the compressor's randomness comes from (seed, 1). Uplink bits are
    charged per client per communication. ``stop_below`` ends the run once F(y) − F* falls below
    it (needs ``optimal_value``).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise AlgorithmError(f"iterations must be an int >= 1, got {iterations!r}")
    if coins is None:
        coins = np.random.default_rng([seed, 0]).random(iterations) < parameters.probability
    coins = np.asarray(coins, dtype=bool)
    if coins.shape != (iterations,):
        raise AlgorithmError(f"coins must have shape ({iterations},), got {coins.shape}")
    rng = np.random.default_rng([seed, 1])
    clients, dimension = problem.num_clients, problem.dimension
    bits = compressor.uplink_bits(dimension, clients)
    state = LoCoDLState.initial(clients, dimension, start)
    recorder = TraceRecorder(
        name or f"LoCoDL/{compressor.name}", problem, optimum, optimal_value, record_every, stop_below
    )
    recorder.record(0, 0, state.y, invariant=state.invariant_residual())
    communications = 0
    for t in range(iterations):
        state = locodl_iteration(problem, state, parameters, bool(coins[t]), compressor, rng)
        communications += int(coins[t])
        last = t + 1 == iterations
        # Record just before each communication (bits are flat in between) and on the cadence.
        upcoming = not last and bool(coins[t + 1])
        if recorder.due(t + 1, force=last or upcoming):
            recorder.record(t + 1, communications * bits, state.y, invariant=state.invariant_residual(),
                            communications=communications)
            if recorder.stopped:
                break
    return recorder.finish(), state
