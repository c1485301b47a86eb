"""Unlearning rules: the Fast-FedUL/MEDU streaming correction and FedEraser-style healing steps.

Sign convention. fedvault clients produce Δ = w_local − w_global (the server step *adds* the
weighted mean of the Δ's). Fast-FedUL stores Δ^FF = w_global − w_local. The rule below takes
fedvault updates and converts once, where a target's contribution enters the correction:
Δ^FF = −Δ.

Memory. Every function here holds O(d) floats: the rounds arrive as an iterator of
:class:`RoundHistory` (the public per-round weights plus the *decoded* updates of the targets that
took part in that round), and each round's arrays may be freed as soon as the next one is read.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from unlearning.errors import UnlearningConfigurationError, UnlearningInputError

DEFAULT_ALPHA = 0.07
DEFAULT_THETA = 1.0


def _check_vector(name: str, value: np.ndarray, dimension: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UnlearningInputError(f"{name} must be a 1-D real vector, got shape {array.shape} "
                                   f"and dtype {array.dtype}")
    if dimension is not None and array.shape[0] != dimension:
        raise UnlearningInputError(f"{name} has length {array.shape[0]}, expected {dimension}")
    if not np.all(np.isfinite(array)):
        raise UnlearningInputError(f"{name} contains NaN or infinity")
    return array.astype(np.float64, copy=False)


def _check_client_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UnlearningInputError(f"{what} must be an int client id, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RoundHistory:
    """What the unlearning rule needs from one training round.

    round_index: the round whose aggregate turned w_t into w_{t+1}.
    weights: client id -> p_k for every client whose update entered that round's aggregate (the
        survivors S_t), p_k being the coefficient of Δ_k in the aggregate the server step consumed
        (e.g. n_k/n). Public: stored by the server with the round.
    target_updates: client id -> decoded Δ (d,) float64, fedvault convention (local − global), for
        the targets in S_t whose record the server holds. Targets in S_t without a record
        (history policy did not keep one) contribute nothing in that round.
    inclusion_probability: the probability with which the history policy kept a participant's
        record this round; the rule divides the targets' contributions by it (Horvitz–Thompson),
        so that with a random-subset policy the correction is unbiased over the policy's coins.
        1.0 when every participant is recorded.
    """

    round_index: int
    weights: Mapping[int, float]
    target_updates: Mapping[int, np.ndarray] = field(default_factory=dict)
    inclusion_probability: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.round_index, bool) or not isinstance(self.round_index, (int, np.integer)):
            raise UnlearningInputError(f"round_index must be an int, got {self.round_index!r}")
        if self.round_index < 0:
            raise UnlearningInputError(f"round_index must be >= 0, got {self.round_index}")
        if not isinstance(self.weights, Mapping):
            raise UnlearningInputError("weights must be a mapping client id -> p_k")
        weights: dict[int, float] = {}
        for client, weight in self.weights.items():
            client = _check_client_id(client, "a weights key")
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0.0:
                raise UnlearningInputError(
                    f"round {self.round_index}: weight of client {client} must be finite and >= 0, "
                    f"got {weight}")
            weights[client] = weight
        if not isinstance(self.target_updates, Mapping):
            raise UnlearningInputError("target_updates must be a mapping client id -> update")
        updates: dict[int, np.ndarray] = {}
        for client, update in self.target_updates.items():
            client = _check_client_id(client, "a target_updates key")
            if client not in weights:
                raise UnlearningInputError(
                    f"round {self.round_index}: client {client} has an update but no weight; "
                    "an update can only enter the correction for a round the client took part in")
            updates[client] = _check_vector(f"update of client {client}", update)
        probability = float(self.inclusion_probability)
        if not (0.0 < probability <= 1.0):
            raise UnlearningInputError(
                f"inclusion_probability must be in (0, 1], got {self.inclusion_probability}")
        object.__setattr__(self, "round_index", int(self.round_index))
        object.__setattr__(self, "weights", MappingProxyType(weights))
        object.__setattr__(self, "target_updates", MappingProxyType(updates))
        object.__setattr__(self, "inclusion_probability", probability)


def _check_targets(targets: Collection[int]) -> frozenset[int]:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise UnlearningInputError("targets must be a collection of client ids")
    checked = frozenset(_check_client_id(t, "a target") for t in targets)
    if not checked:
        raise UnlearningInputError("targets is empty: name at least one client to unlearn")
    return checked


def _check_alpha_theta(alpha: float, theta: float) -> tuple[float, float]:
    alpha, theta = float(alpha), float(theta)
    if not math.isfinite(alpha) or alpha < 0.0:
        raise UnlearningConfigurationError(f"alpha must be finite and >= 0, got {alpha}")
    if not math.isfinite(theta):
        raise UnlearningConfigurationError(f"theta must be finite, got {theta}")
    return alpha, theta


def beta_factor(weights: Mapping[int, float], targets: Collection[int], alpha: float) -> float:
    """β_t = 1 − α·Σ_{k ∈ S_t ∖ 𝒯} p_k, the Lipschitz contraction of one round without the targets.

    Huynh et al., Fast-FedUL (ECML-PKDD 2024, arXiv 2405.18040).
    """
    return 1.0 - alpha * math.fsum(p for client, p in weights.items() if client not in targets)


def fast_fedul_correction(rounds: Iterable[RoundHistory], targets: Collection[int], dimension: int,
                          *, alpha: float = DEFAULT_ALPHA, theta: float = DEFAULT_THETA,
                          server_learning_rate: float = 1.0) -> np.ndarray:
    """The correction θ·U to add to the final model w_T to remove the targets' contributions.

    Huynh et al., Fast-FedUL (ECML-PKDD 2024, arXiv 2405.18040), as used by MEDU (Lang et al.,
    arXiv 2505.03388): from U = 0 walk the rounds t = 0..T−1 in order,

        U ← β_t·U + (η/π_t)·Σ_{c ∈ 𝒯 ∩ S_t} p_c·Δ_t^{c,FF},    β_t = 1 − α·Σ_{k ∈ S_t ∖ 𝒯} p_k,

    with Δ^{FF} = −Δ (fedvault's Δ is local − global), η the server learning rate and π_t the
    record inclusion probability. Within a round U is contracted first and that round's
    contribution is added after, as in the reference implementation; rounds after the targets'
    last one keep contracting U (the reference stops there only because its targets take part in
    the final round).

    rounds: every round whose aggregate entered w_T, in strictly increasing round order (rounds
        before a target's first participation may be omitted: they only scale U = 0). Consumed
        once, lazily: peak memory is O(dimension).
    Returns θ·U, (dimension,) float64.
    """
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
        raise UnlearningInputError(f"dimension must be a positive int, got {dimension!r}")
    alpha, theta = _check_alpha_theta(alpha, theta)
    learning_rate = float(server_learning_rate)
    if not math.isfinite(learning_rate) or learning_rate <= 0.0:
        raise UnlearningConfigurationError(
            f"server_learning_rate must be finite and > 0, got {server_learning_rate}")
    target_set = _check_targets(targets)
    correction = np.zeros(int(dimension), dtype=np.float64)
    previous_round = -1
    for history in rounds:
        if not isinstance(history, RoundHistory):
            raise UnlearningInputError(f"rounds must yield RoundHistory, got {type(history).__name__}")
        if history.round_index <= previous_round:
            raise UnlearningInputError(
                f"rounds must be strictly increasing: round {history.round_index} after "
                f"{previous_round}")
        previous_round = history.round_index
        correction *= beta_factor(history.weights, target_set, alpha)
        scale = learning_rate / history.inclusion_probability
        for client, update in history.target_updates.items():
            if client not in target_set:
                continue  # another client's record: never part of this correction
            if update.shape[0] != dimension:
                raise UnlearningInputError(
                    f"round {history.round_index}: update of client {client} has length "
                    f"{update.shape[0]}, expected {dimension}")
            # Δ^FF = −Δ: subtract instead of negating a copy (no extra O(d) buffer).
            correction -= (scale * history.weights[client]) * update
    correction *= theta
    return correction


def unlearn_fast_fedul(final_model: np.ndarray, rounds: Iterable[RoundHistory],
                       targets: Collection[int], *, alpha: float = DEFAULT_ALPHA,
                       theta: float = DEFAULT_THETA, server_learning_rate: float = 1.0) -> np.ndarray:
    """w_T + θ·U: the unlearned flat parameter vector (d,) float64 (see :func:`fast_fedul_correction`)."""
    model = _check_vector("final_model", final_model)
    correction = fast_fedul_correction(rounds, targets, model.shape[0], alpha=alpha, theta=theta,
                                       server_learning_rate=server_learning_rate)
    correction += model
    return correction


@dataclass(frozen=True)
class RoundWeights:
    """The public metadata of one stored round: its index and the survivors' weights p_k."""

    round_index: int
    weights: Mapping[int, float]
    inclusion_probability: float = 1.0


def _tagged(client: int, records: Iterable[tuple[int, np.ndarray]]
            ) -> Iterator[tuple[int, int, np.ndarray]]:
    previous = -1
    for round_index, update in records:
        if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)):
            raise UnlearningInputError(f"client {client}: record round must be an int, "
                                       f"got {round_index!r}")
        if round_index <= previous:
            raise UnlearningInputError(
                f"client {client}: records must be in strictly increasing round order "
                f"({round_index} after {previous})")
        previous = int(round_index)
        yield previous, client, update


def join_round_history(rounds: Iterable[RoundWeights],
                       target_records: Mapping[int, Iterable[tuple[int, np.ndarray]]]
                       ) -> Iterator[RoundHistory]:
    """Merge the public round metadata with the targets' opened records, lazily, by round index.

    rounds: every round of the run in increasing order (from storage).
    target_records: target client id -> its (round_index, decoded update) pairs in increasing
        round order (e.g. ``records.open_history`` of that client). A record for a round the
        client did not survive in is refused: its update never entered an aggregate.
    Yields one :class:`RoundHistory` per round; holds at most one pending record per target.
    """
    if not isinstance(target_records, Mapping):
        raise UnlearningInputError("target_records must be a mapping client id -> records")
    merged = heapq.merge(*(_tagged(_check_client_id(client, "a target"), records)
                           for client, records in target_records.items()),
                         key=lambda item: (item[0], item[1]))
    pending = next(merged, None)
    for meta in rounds:
        if not isinstance(meta, RoundWeights):
            raise UnlearningInputError(f"rounds must yield RoundWeights, got {type(meta).__name__}")
        updates: dict[int, np.ndarray] = {}
        while pending is not None and pending[0] <= meta.round_index:
            round_index, client, update = pending
            if round_index < meta.round_index or client not in meta.weights:
                raise UnlearningInputError(
                    f"client {client} has a record for round {round_index}, which is not a stored "
                    "round it survived in")
            if client in updates:
                raise UnlearningInputError(f"client {client} has two records for round {round_index}")
            updates[client] = update
            pending = next(merged, None)
        yield RoundHistory(meta.round_index, meta.weights, updates, meta.inclusion_probability)
    if pending is not None:
        raise UnlearningInputError(
            f"client {pending[1]} has a record for round {pending[0]}, after the last stored round")


# --- FedEraser-style healing ---------------------------------------------------------------


def _layer_bounds(layer_sizes: Sequence[int] | None, dimension: int) -> list[tuple[int, int]]:
    if layer_sizes is None:
        return [(0, dimension)]
    bounds, start = [], 0
    for size in layer_sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise UnlearningInputError(f"layer sizes must be positive ints, got {size!r}")
        bounds.append((start, start + int(size)))
        start += int(size)
    if start != dimension:
        raise UnlearningInputError(f"layer sizes sum to {start}, the vectors have length {dimension}")
    return bounds


def calibrate_update(reference_update: np.ndarray, new_update: np.ndarray,
                     layer_sizes: Sequence[int] | None = None) -> np.ndarray:
    """FedEraser calibration: per layer, the magnitude of the reference update with the direction
    of the new one, Ũ_l = ‖U_l^ref‖·Û_l/‖Û_l‖ (a layer whose new update is zero stays zero).

    Liu et al., FedEraser (IWQoS 2021). Under secure aggregation the server only knows aggregates,
    so the reference is the stored aggregate of the round being replayed and the new update is the
    remaining clients' fresh secure aggregate (magnitude from the aggregate, as the FedEraser code
    does).
    reference_update, new_update: (d,) flat vectors; layer_sizes: sizes of the layers in flat
    order summing to d (None: one layer). Returns (d,) float64.
    """
    reference = _check_vector("reference_update", reference_update)
    new = _check_vector("new_update", new_update, reference.shape[0])
    calibrated = np.zeros(reference.shape[0], dtype=np.float64)
    for start, stop in _layer_bounds(layer_sizes, reference.shape[0]):
        new_norm = float(np.linalg.norm(new[start:stop]))
        if new_norm > 0.0:
            calibrated[start:stop] = new[start:stop] * (np.linalg.norm(reference[start:stop]) / new_norm)
    return calibrated


def healing_step(model: np.ndarray, reference_aggregate: np.ndarray, new_aggregate: np.ndarray,
                 layer_sizes: Sequence[int] | None = None, *, server_learning_rate: float = 1.0
                 ) -> np.ndarray:
    """One FedEraser healing round: w ← w + η·calibrate(reference_aggregate, new_aggregate).

    model: (d,) current (unlearned) parameters; reference_aggregate: the stored aggregate Δ̄_t of
    the retained round being replayed (fedvault convention, local − global); new_aggregate: the
    remaining clients' aggregate computed from ``model`` in the healing round. Returns (d,) float64.
    """
    parameters = _check_vector("model", model)
    learning_rate = float(server_learning_rate)
    if not math.isfinite(learning_rate) or learning_rate <= 0.0:
        raise UnlearningConfigurationError(
            f"server_learning_rate must be finite and > 0, got {server_learning_rate}")
    step = calibrate_update(reference_aggregate, new_aggregate, layer_sizes)
    if step.shape[0] != parameters.shape[0]:
        raise UnlearningInputError(
            f"the aggregates have length {step.shape[0]}, the model {parameters.shape[0]}")
    return parameters + learning_rate * step
