"""LoCoDL as a round-based protocol: one stateful client object per client, one for the server.

The coordinator's round is "local steps until the shared coin says communicate, then one secure
sum". Everyone derives the coins θ_1, θ_2, ... of a round from its public round seed
(:func:`federation.compressors.shared_coins`), so all clients and the server take the same number
K of iterations: K − 1 with θ = 0, then one with θ = 1 whose d_i is uploaded. The server (and
each client's replica) advances the shared pair (y, v) the same way and applies d̄ from the
secure sum. Run over the same coins, this is exactly :func:`federation.locodl.run_locodl`
(tested), with the update rules shared from :mod:`federation.locodl`.

Objective per client: f_i(x) = mean cross-entropy of multinomial logistic regression on its own
data + (λ(1 − s)/2)‖x‖², g(y) = (λs/2)‖y‖² (:mod:`federation.convex`); x uses the layout of
``federation.models.LogisticRegression``, so ``y`` can be loaded into the torch model for
evaluation. LoCoDL assumes every client takes part in every communication: with a dropout the
invariant (1/n)Σu_i + v = 0 no longer holds and the method is not exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.compressors import shared_coins
from federation.convex import SoftmaxRegression
from federation.datasets import ClientData
from federation.learning_errors import AlgorithmError
from federation.locodl import (
    LoCoDLParameters,
    client_after_communication,
    local_step,
    shared_after_communication,
)
from federation.trainers import TrainResult

_COIN_LABEL = "locodl"


def local_steps_in_round(round_seed: bytes, probability: float, max_steps: int) -> int:
    """K: the position of the first θ = 1 among the round's shared coins (1-based), at most
    ``max_steps`` (a truncation of the geometric law; with ``max_steps >= 40/p`` it binds with
    probability (1 − p)^max_steps < e^-40)."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise AlgorithmError(f"max_steps must be an int >= 1, got {max_steps!r}")
    coins = shared_coins(round_seed, probability, max_steps, label=_COIN_LABEL)
    hits = np.flatnonzero(coins)
    return int(hits[0]) + 1 if hits.size else max_steps


@dataclass(frozen=True)
class LoCoDLSetup:
    """The public configuration every participant of a LoCoDL run shares.

    ``num_classes``, ``num_features`` fix the dimension d = C(F + 1); ``l2`` is λ and
    ``shared_fraction`` s (as in :class:`federation.convex.SoftmaxRegression`); ``parameters``
    (γ, χ, ρ, p, ω) are usually ``locodl_parameters(L, μ, ω, ω_av)`` from public constants;
    ``max_local_steps`` bounds K (default ⌈40/p⌉).
    """

    num_classes: int
    num_features: int
    l2: float
    parameters: LoCoDLParameters
    shared_fraction: float = 0.5
    max_local_steps: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.parameters, LoCoDLParameters):
            raise AlgorithmError("parameters must be LoCoDLParameters")
        if not (isinstance(self.num_features, int) and self.num_features >= 1):
            raise AlgorithmError(f"num_features must be an int >= 1, got {self.num_features!r}")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise AlgorithmError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise AlgorithmError(f"l2 must be a finite number > 0, got {self.l2!r}")
        if not (0.0 <= self.shared_fraction < 1.0):
            raise AlgorithmError(f"shared_fraction must be in [0, 1), got {self.shared_fraction!r}")
        if self.max_local_steps is None:
            object.__setattr__(self, "max_local_steps", math.ceil(40.0 / self.parameters.probability))
        elif not (isinstance(self.max_local_steps, int) and self.max_local_steps >= 1):
            raise AlgorithmError(f"max_local_steps must be an int >= 1, got {self.max_local_steps!r}")

    @property
    def dimension(self) -> int:
        return self.num_classes * (self.num_features + 1)

    def steps(self, round_seed: bytes) -> int:
        """K for this round (identical for every participant)."""
        return local_steps_in_round(round_seed, self.parameters.probability, self.max_local_steps)

    def shared_gradient(self, y: np.ndarray) -> np.ndarray:
        return self.l2 * self.shared_fraction * y


def _start(setup: LoCoDLSetup, start: np.ndarray | None) -> np.ndarray:
    x = np.zeros(setup.dimension) if start is None else np.array(start, dtype=np.float64)
    if x.shape != (setup.dimension,) or not np.all(np.isfinite(x)):
        raise AlgorithmError(f"start must be a finite ({setup.dimension},) vector")
    return x


class _SharedPair:
    """(y, v), held by the server and replayed identically by every client."""

    def __init__(self, setup: LoCoDLSetup, start: np.ndarray) -> None:
        self._setup = setup
        self.y = start.copy()
        self.v = np.zeros_like(start)
        self.y_hat: np.ndarray | None = None

    def advance(self, steps: int) -> None:
        """K − 1 steps with θ = 0, then the θ = 1 step's ŷ (kept pending)."""
        gamma = self._setup.parameters.gamma
        for _ in range(steps - 1):
            self.y = local_step(self.y, self.v, self._setup.shared_gradient(self.y), gamma)
        self.y_hat = local_step(self.y, self.v, self._setup.shared_gradient(self.y), gamma)

    def load(self, y: np.ndarray, v: np.ndarray) -> None:
        """Take (y, v) as the server holds them (a client syncs to the server's pair each round)."""
        y, v = np.asarray(y, dtype=np.float64), np.asarray(v, dtype=np.float64)
        if y.shape != self.y.shape or v.shape != self.v.shape or not (np.all(np.isfinite(y)) and np.all(np.isfinite(v))):
            raise AlgorithmError(f"y and v must be finite {self.y.shape} vectors")
        self.y, self.v, self.y_hat = y.copy(), v.copy(), None

    def finish(self, mean_sent: np.ndarray) -> None:
        if self.y_hat is None:
            raise AlgorithmError("finish_round called before local_round")
        self.y, self.v = shared_after_communication(self.y_hat, self.v, mean_sent, self._setup.parameters)
        self.y_hat = None


class LoCoDLClient:
    """Client i's side: private state (x_i, u_i) and a replica of (y, v)."""

    def __init__(self, data: ClientData, setup: LoCoDLSetup, start: np.ndarray | None = None) -> None:
        if not isinstance(data, ClientData):
            raise AlgorithmError(f"data must be ClientData, got {type(data).__name__}")
        self._setup = setup
        self._objective = SoftmaxRegression((data,), setup.num_classes, setup.l2, setup.shared_fraction)
        if self._objective.dimension != setup.dimension:
            raise AlgorithmError(f"client features give d = {self._objective.dimension}, setup says {setup.dimension}")
        self.client_id = data.client_id
        self.num_samples = data.num_samples
        x = _start(setup, start)
        self.x = x.copy()
        self.u = np.zeros_like(x)
        self.shared = _SharedPair(setup, x)
        self._x_hat: np.ndarray | None = None

    def local_round(self, round_seed: bytes) -> TrainResult:
        """Run the round's K local iterations; ``update`` = x̂_i − ŷ, the vector to compress
        (float64, (d,)), to be clipped/encoded and secure-summed by the caller."""
        steps = self._setup.steps(round_seed)
        gamma = self._setup.parameters.gamma
        for _ in range(steps - 1):
            self.x = local_step(self.x, self.u, self._objective.client_gradients(self.x[None, :])[0], gamma)
        self._x_hat = local_step(self.x, self.u, self._objective.client_gradients(self.x[None, :])[0], gamma)
        self.shared.advance(steps)
        loss = self._objective.objective(self._x_hat) - 0.5 * self._setup.l2 * float(self._x_hat @ self._x_hat)
        return TrainResult(self._x_hat - self.shared.y_hat, self.num_samples, loss, steps)

    def state(self) -> dict[str, np.ndarray]:
        """The private state: ``x``, ``u`` and, between ``local_round`` and ``finish_round``, the
        pending ``x_hat`` and ``y_hat`` (float64 copies)."""
        state = {"x": self.x.copy(), "u": self.u.copy()}
        if self._x_hat is not None:
            state.update(x_hat=self._x_hat.copy(), y_hat=self.shared.y_hat.copy())
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (a restarted client)."""
        vectors = {name: np.asarray(value, dtype=np.float64) for name, value in state.items()}
        if not {"x", "u"} <= set(vectors) or ("x_hat" in vectors) != ("y_hat" in vectors):
            raise AlgorithmError("a LoCoDL client state needs x and u, and x_hat with y_hat or neither")
        if any(v.shape != self.x.shape or not np.all(np.isfinite(v)) for v in vectors.values()):
            raise AlgorithmError(f"every LoCoDL state vector must be finite with shape {self.x.shape}")
        self.x, self.u = vectors["x"].copy(), vectors["u"].copy()
        self._x_hat = vectors.get("x_hat")
        self.shared.y_hat = vectors.get("y_hat")

    def sync(self, y: np.ndarray, v: np.ndarray) -> None:
        """Start the next round from the server's (y, v) instead of the local replica."""
        self.shared.load(y, v)

    def finish_round(self, sent: np.ndarray, mean_sent: np.ndarray) -> None:
        """Apply the communication: ``sent`` is this client's d_i as the server decodes it (its
        own decoded coordinates), ``mean_sent`` is d̄ = (1/(2n))Σ_j d_j from the secure sum."""
        if self._x_hat is None:
            raise AlgorithmError("finish_round called before local_round")
        sent, mean_sent = np.asarray(sent, dtype=np.float64), np.asarray(mean_sent, dtype=np.float64)
        if sent.shape != self.x.shape or mean_sent.shape != self.x.shape:
            raise AlgorithmError(f"sent and mean_sent must have shape {self.x.shape}")
        self.x, self.u = client_after_communication(
            self._x_hat, self.u, self.shared.y_hat, sent, mean_sent, self._setup.parameters
        )
        self.shared.finish(mean_sent)
        self._x_hat = None


class LoCoDLServer:
    """The server's side: (y, v); ``model`` is y, the global model."""

    def __init__(self, setup: LoCoDLSetup, start: np.ndarray | None = None) -> None:
        self._setup = setup
        self.shared = _SharedPair(setup, _start(setup, start))
        self.steps_taken = 0

    @property
    def model(self) -> np.ndarray:
        return self.shared.y.copy()

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, v) copies: what a client needs to start a round."""
        return self.shared.y.copy(), self.shared.v.copy()

    def restore(self, y: np.ndarray, v: np.ndarray) -> None:
        """Continue from a stored (y, v) (resume)."""
        self.shared.load(y, v)

    def local_round(self, round_seed: bytes) -> int:
        """Advance (y, v) through the round's K iterations; returns K."""
        steps = self._setup.steps(round_seed)
        self.shared.advance(steps)
        self.steps_taken += steps
        return steps

    def finish_round(self, sum_sent: np.ndarray, clients: int) -> np.ndarray:
        """Apply the decoded secure sum Σ_j d_j of ``clients`` clients; returns d̄ to broadcast."""
        if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
            raise AlgorithmError(f"clients must be an int >= 1, got {clients!r}")
        sum_sent = np.asarray(sum_sent, dtype=np.float64)
        if sum_sent.shape != self.shared.y.shape:
            raise AlgorithmError(f"sum_sent must have shape {self.shared.y.shape}")
        mean_sent = sum_sent / (2.0 * clients)
        self.shared.finish(mean_sent)
        return mean_sent
