"""The trajectory correction: the unlearned model as a linearized replay of the run without the targets.

Notation (fedvault's convention, Δ = w_local − w_global). Round t starts from w_t, its survivors S_t
carry public weights p_k (Σ p_k = 1), and the server steps w_{t+1} = w_t + η·ḡ_t with ḡ_t = Σ p_k·Δ_t^k
the stored aggregate. Retraining without the targets 𝒯 runs the same rounds from the same start,
the survivors' weights renormalized: ŵ_{t+1} = ŵ_t + η·r_t(ŵ_t), where r_t(·) is the weighted mean
update of the remaining clients S_t ∖ 𝒯 (the same cohorts, seeds and schedule).

What the server knows after opening the targets' sealed records: ḡ_t for every round (public),
the targets' own Δ_t^c (their records) and the weights. So it knows the remaining clients' mean
*at the trained trajectory*,

    r_t(w_t) = (ḡ_t − Σ_{c∈𝒯∩S_t} p_c·Δ_t^c) / (1 − P_t),     P_t = Σ_{c∈𝒯∩S_t} p_c,

but not at the retrained one. Writing e_t = ŵ_t − w_t and linearizing r_t around w_t with its
Jacobian J_t (how the remaining clients' mean update responds to a change of the model),

    e_{t+1} = (I + η·J_t)·e_t + η·(P_t·r_t(w_t) − Σ_c p_c·Δ_t^c),          e_0 = 0,

and the unlearned model is w_T + e_T. Three things separate this from Fast-FedUL's rule
U ← β_t·U − η·Σ_c p_c·Δ_t^c with β_t = 1 − α·Σ_{k∉𝒯} p_k (``unlearning.rules``):

1. **Renormalization** (the P_t·r_t term): without the targets the remaining clients' mean gets
   the whole step, not 1 − P_t of it. Removing a heavy client's updates without it over-removes:
   the rest of the federation would have kept pushing towards its own optimum, which includes the
   heavy client's class as the others hold it.
2. **The interaction J_t·e_t**, direction by direction instead of one scalar β_t. FedAvg's local
   training is a (stochastic) gradient map, so J_t ≈ −(local steps)·(Hessian of the remaining
   clients' loss): it is negative semi-definite, strongly so along directions the remaining data
   constrain (a removed client's class that others also hold: its correction decays, as retraining
   recovers it) and nearly zero along directions it does not (a backdoor trigger's weights, which
   clean data barely touch: its correction must not decay). A fixed β_t shrinks both alike, which
   is why no single α fits both cases.
3. **Estimated from the stored history**, FedRecover-style on aggregates: consecutive rounds give
   secant pairs s_j = w_{j+1} − w_j = η·ḡ_j and y_j = r_{j+1}(w_{j+1}) − r_j(w_j). Over a window
   of the last ``window`` pairs, with Q an orthonormal basis of span{s_j}, the Jacobian's
   restriction B = Qᵀ·J·Q is the ridge least-squares fit of B·(Qᵀs_j) ≈ Qᵀy_j, symmetrized, and its
   eigenvalues clipped to [−κ_max/η, 0] so that I + η·J is a contraction (a training map does not
   expand errors, and an estimate from noisy pairs must not make the replay unstable). Outside the
   explored span J is taken as 0 (no decay), which is the honest default for directions the
   remaining clients' training never moved.

Assumptions (checked by the tests on quadratic problems, where J is known exactly): the remaining
clients' update map is smooth enough that J varies slowly over ``window`` rounds; the cohorts of
consecutive rounds are similar enough that y_j reflects curvature more than composition changes
(the ridge term and the eigenvalue clip bound the damage when they are not). With J = 0 the rule is
exact subtraction plus renormalization; on a quadratic problem with deterministic local steps it is
exact retraining once the window spans the directions the correction moves in.

Memory: O((window + 3)·d) floats, streaming over the rounds (each round's arrays may be freed once
the next is read). Time: O(T·window·d).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from unlearning.errors import UnlearningConfigurationError, UnlearningInputError
from unlearning.rules import RoundHistory, _check_targets, _check_vector

DEFAULT_WINDOW = 16
DEFAULT_RIDGE = 1e-3
DEFAULT_MAX_CONTRACTION = 0.3


@dataclass(frozen=True)
class ObservedRound:
    """One stored round as the correction needs it: the round's public weights and the targets'
    opened updates (``history``) and the aggregate the server stepped with, ``aggregate`` =
    ḡ_t = Σ_{k∈S_t} p_k·Δ_t^k, (d,) (the run's stored ``mean_update``)."""

    history: RoundHistory
    aggregate: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.history, RoundHistory):
            raise UnlearningInputError(f"history must be a RoundHistory, got {type(self.history).__name__}")
        object.__setattr__(self, "aggregate", _check_vector(f"round {self.history.round_index} aggregate",
                                                            self.aggregate))


@dataclass(frozen=True)
class CorrectionSettings:
    """window: secant pairs kept (0: no interaction term, i.e. exact subtraction plus renormalization).
    ridge: relative ridge of the secant fit (× the mean squared step). max_contraction: κ_max, the
    largest per-round shrink of the correction along one direction (0 ≤ κ_max ≤ 1)."""

    window: int = DEFAULT_WINDOW
    ridge: float = DEFAULT_RIDGE
    max_contraction: float = DEFAULT_MAX_CONTRACTION

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise UnlearningConfigurationError(f"window must be an int >= 0, got {self.window!r}")
        for name in ("ridge", "max_contraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UnlearningConfigurationError(f"{name} must be a finite number, got {value!r}")
        if self.ridge <= 0:
            raise UnlearningConfigurationError(f"ridge must be > 0, got {self.ridge}")
        if not 0.0 <= self.max_contraction <= 1.0:
            raise UnlearningConfigurationError(f"max_contraction must be in [0, 1], got {self.max_contraction}")


@dataclass(frozen=True)
class SecantJacobian:
    """J ≈ Q·B·Qᵀ on the span of the window's steps, kept implicitly: Q = Sᵀ·W (S the (m, d) steps,
    W (m, r) their whitening), so applying it costs two products with S and no (d, r) matrix."""

    steps: np.ndarray
    whiten: np.ndarray
    matrix: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.matrix.shape[0])

    def basis(self) -> np.ndarray:
        """Q, (d, r) with orthonormal columns spanning the steps."""
        return self.steps.T @ self.whiten

    def apply(self, vector: np.ndarray) -> np.ndarray:
        """J·v = Q·B·Qᵀ·v, (d,)."""
        # einsum, not BLAS matrix-vector products: those are slow under a contended thread pool.
        coefficients = self.whiten @ (self.matrix @ (self.whiten.T @ np.einsum("md,d->m", self.steps, vector)))
        return np.einsum("m,md->d", coefficients, self.steps)


def secant_jacobian(steps: np.ndarray, responses: np.ndarray, *, ridge: float = DEFAULT_RIDGE,
                    lowest: float = -math.inf) -> SecantJacobian:
    """The Jacobian estimate on the span of the steps, from secant pairs.

    steps: (m, d) s_j; responses: (m, d) y_j ≈ J·s_j. With Q an orthonormal basis of span{s_j}
    (rank r ≤ m, numerically dependent steps dropped), B (r, r) is the ridge least-squares solution
    of B·C ≈ Qᵀ·Y (C = Qᵀ·S, ridge λ = ridge·‖S‖²_F/m), symmetrized, its eigenvalues clipped to
    [lowest, 0]; J ≈ Q·B·Qᵀ.
    """
    s = np.asarray(steps, dtype=np.float64)
    y = np.asarray(responses, dtype=np.float64)
    if s.ndim != 2 or s.shape != y.shape:
        raise UnlearningInputError(f"steps and responses must be (m, d) of one shape, got {s.shape}, {y.shape}")
    m = s.shape[0]
    scale = float(np.sum(s * s))
    if m == 0 or scale == 0.0:
        return SecantJacobian(s, np.zeros((m, 0)), np.zeros((0, 0)))
    # The basis from the steps' Gram matrix (products with S and an m×m eigendecomposition only:
    # a tall QR is far slower on multithreaded BLAS).
    gram_values, gram_vectors = np.linalg.eigh(s @ s.T)
    keep = gram_values > 1e-12 * gram_values.max()
    gram_values, gram_vectors = gram_values[keep], gram_vectors[:, keep]
    whiten = gram_vectors / np.sqrt(gram_values)  # (m, r): Q = Sᵀ·whiten
    c = (gram_vectors * np.sqrt(gram_values)).T  # (r, m): the steps' coordinates in Q
    z = whiten.T @ (s @ y.T)  # (r, m): the responses projected on Q
    regularizer = ridge * scale / m
    b = z @ c.T @ np.linalg.inv(c @ c.T + regularizer * np.eye(c.shape[0]))
    b = 0.5 * (b + b.T)
    values, vectors = np.linalg.eigh(b)
    values = np.clip(values, lowest, 0.0)
    return SecantJacobian(s, whiten, (vectors * values) @ vectors.T)


def calibrated_correction(rounds: Iterable[ObservedRound], targets: Collection[int], dimension: int, *,
                          server_learning_rate: float = 1.0,
                          settings: CorrectionSettings = CorrectionSettings()) -> np.ndarray:
    """e_T, the correction to add to the final model w_T (see the module docstring).

    rounds: every completed round whose aggregate entered w_T, in strictly increasing round order,
        consumed once. A round whose survivors are all targets contributes −η·ḡ_t (retraining
        would not have moved). inclusion_probability π_t < 1 (a random-subset record policy)
        scales the targets' terms by 1/π_t (Horvitz–Thompson), as in Fast-FedUL's rule.
    Returns (dimension,) float64.
    """
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
        raise UnlearningInputError(f"dimension must be a positive int, got {dimension!r}")
    if not isinstance(settings, CorrectionSettings):
        raise UnlearningInputError("settings must be CorrectionSettings")
    rate = float(server_learning_rate)
    if not math.isfinite(rate) or rate <= 0.0:
        raise UnlearningConfigurationError(f"server_learning_rate must be finite and > 0, got {server_learning_rate}")
    target_set = _check_targets(targets)
    error = np.zeros(int(dimension), dtype=np.float64)
    # The window's pairs in ring buffers (the fit does not depend on their order): no copies per round.
    steps = np.zeros((settings.window, int(dimension)))
    responses = np.zeros((settings.window, int(dimension)))
    pairs = 0
    previous: tuple[np.ndarray, np.ndarray] | None = None  # (η·ḡ_{t−1}, r_{t−1})
    previous_round = -1
    lowest = -settings.max_contraction / rate
    for observed in rounds:
        if not isinstance(observed, ObservedRound):
            raise UnlearningInputError(f"rounds must yield ObservedRound, got {type(observed).__name__}")
        history, aggregate = observed.history, observed.aggregate
        if history.round_index <= previous_round:
            raise UnlearningInputError(f"rounds must be strictly increasing: round {history.round_index} "
                                       f"after {previous_round}")
        previous_round = history.round_index
        if aggregate.shape[0] != dimension:
            raise UnlearningInputError(f"round {history.round_index}: aggregate has length {aggregate.shape[0]}, "
                                       f"expected {dimension}")
        removed_weight = 0.0
        removed_sum = np.zeros(int(dimension), dtype=np.float64)
        scale = 1.0 / history.inclusion_probability
        for client, update in history.target_updates.items():
            if client not in target_set:
                continue
            if update.shape[0] != dimension:
                raise UnlearningInputError(f"round {history.round_index}: update of client {client} has length "
                                           f"{update.shape[0]}, expected {dimension}")
            removed_sum += (scale * history.weights[client]) * update
            removed_weight += scale * history.weights[client]
        total_weight = math.fsum(history.weights.values())
        remaining_weight = total_weight - removed_weight
        if remaining_weight <= 1e-12 * max(total_weight, 1.0):
            remaining = None  # nobody left: the retrained model does not move this round
            drive = -aggregate
        else:
            remaining = (aggregate - removed_sum) / (remaining_weight / total_weight)
            drive = remaining - aggregate
        # The newest secant pair: r_t(w_t) − r_{t−1}(w_{t−1}) against w_t − w_{t−1} = η·ḡ_{t−1}.
        if remaining is not None and settings.window:
            if previous is not None:
                slot = pairs % settings.window
                steps[slot] = previous[0]
                np.subtract(remaining, previous[1], out=responses[slot])
                pairs += 1
            previous = (rate * aggregate, remaining)
        else:
            previous = None  # a gap: the next round's difference would not be a secant of r
        # The interaction: e ← (I + η·J_t)·e with J_t estimated on the window's span.
        if pairs and np.any(error):
            count = min(pairs, settings.window)
            jacobian = secant_jacobian(steps[:count], responses[:count], ridge=settings.ridge, lowest=lowest)
            if jacobian.rank:
                error = error + rate * jacobian.apply(error)
        error += rate * drive
    return error
