"""The deletion flow: remove one client's contribution from a run's model (docs/ALGORITHMS.md §6.4).

Steps, each persisted by the deletion-request state machine of ``storage`` (requested → opened →
unlearned → shredded), so running :func:`unlearn_client` again after a crash at any point resumes
where it stopped and reaches the same model bits (the correction is deterministic; healing and
retraining train again, with fresh round seeds, when they are resumed before their model was
stored):

1. **authenticate** the signed request against the client's enrolled key, its freshness, and the
   released secret against the stored commitment (``unlearning.requests``); a refused request
   changes nothing;
2. **begin**: create the request, or resume the client's open one;
3. **open**: the secret checked out; the request is ``opened``;
4. **unlearn**: compute the new model and store it as a new model version, atomically with the
   request becoming ``unlearned``:
   - ``medu``: stream the client's sealed records from storage in round order, open them
     (``records.open_history``: one reconstruction at a time), join them with every stored
     round's public survivor weights p_k and walk the Fast-FedUL/MEDU correction
     (``rules.fast_fedul_correction``) — O(model size) memory however long the run; then,
     optionally, heal with a few rounds of the remaining clients (FedEraser-style);
   - ``retrain``: the exact oracle, retraining without the client;
5. **shred** the client's records, mark it deleted (later rounds refuse it) and close the request,
   in one transaction;
6. **audit**: append ``unlearning.completed`` (once per request).

The released secret lives only in memory for the call: it is never stored, logged or audited.
Training (healing, retraining) is delegated to a :class:`RemainingClientsTrainer` (the real
coordinator: ``unlearning.retrain.CoordinatorTrainer``), so this module needs only storage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from storage.entities import CheckpointWrite, DeletionRequestInfo, RoundInfo
from storage.errors import ClientNotFoundError
from storage.repositories import Repository
from unlearning.deletion_errors import (
    ClientNotActiveError,
    DeletionRequestError,
    IncompleteHistoryError,
    RetrainError,
)
from unlearning.errors import (
    BrokenChainError,
    HistorySecretError,
    MalformedRecordError,
    RecordAuthenticationError,
    RecordBoundError,
    UnlearningConfigurationError,
    UnlearningError,
    UnlearningInputError,
)
from unlearning.history_policy import HistoryPolicy
from unlearning.records import RecordConfig, open_history
from unlearning.requests import DEFAULT_MAX_AGE_SECONDS, DeletionRequest, authenticate_deletion_request
from unlearning.rules import DEFAULT_ALPHA, DEFAULT_THETA, RoundWeights, fast_fedul_correction, join_round_history
from unlearning.run_records import run_record_config

METHODS = ("medu", "retrain")
COMPLETED_EVENT = "unlearning.completed"
#: Errors after which the request cannot succeed as made: it moves to ``failed`` (a new
#: request, e.g. with ``method="retrain"`` or without healing, may follow). Anything else (a
#: crash, a locked database) leaves it where it was, to be resumed.
_PERMANENT_ERRORS = (IncompleteHistoryError, BrokenChainError, RecordAuthenticationError, RecordBoundError,
                     MalformedRecordError, HistorySecretError, RetrainError)


@dataclass(frozen=True)
class UnlearningSettings:
    """How to unlearn. method: "medu" (records + correction) or "retrain" (exact oracle).
    alpha, theta: Fast-FedUL's contraction and scale. heal_rounds: rounds of the remaining
    clients after the correction (medu only). max_age_seconds: request freshness window."""

    method: str = "medu"
    alpha: float = DEFAULT_ALPHA
    theta: float = DEFAULT_THETA
    heal_rounds: int = 0
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UnlearningConfigurationError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("alpha", "theta", "max_age_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UnlearningConfigurationError(f"{name} must be a finite number, got {value!r}")
        if self.alpha < 0:
            raise UnlearningConfigurationError(f"alpha must be >= 0, got {self.alpha}")
        if self.max_age_seconds <= 0:
            raise UnlearningConfigurationError(f"max_age_seconds must be > 0, got {self.max_age_seconds}")
        if isinstance(self.heal_rounds, bool) or not isinstance(self.heal_rounds, int) or self.heal_rounds < 0:
            raise UnlearningConfigurationError(f"heal_rounds must be an int >= 0, got {self.heal_rounds!r}")
        if self.method == "retrain" and self.heal_rounds:
            raise UnlearningConfigurationError("heal_rounds applies to method 'medu'; retraining needs no healing")

    def as_details(self) -> dict:
        """What the request stores (a resumed request must use the same settings)."""
        return {"method": self.method, "alpha": float(self.alpha), "theta": float(self.theta),
                "heal_rounds": self.heal_rounds}


class RemainingClientsTrainer(Protocol):
    """Trains with every client except ``exclude`` through the run's own federated machinery."""

    def heal(self, repository: Repository, run_id: int, parameters: np.ndarray, rounds: int,
             exclude: Collection[int]) -> np.ndarray:
        """``rounds`` rounds from ``parameters`` ((d,) float32); returns the healed (d,) float32."""

    def retrain(self, repository: Repository, run_id: int, exclude: Collection[int]) -> RetrainedModel:
        """Retrain the run's committed rounds without ``exclude`` (the exact oracle)."""


@dataclass(frozen=True)
class RetrainedModel:
    """The oracle: ``parameters`` (d,) float32 after the rounds up to ``round_index``, retrained from
    the model after ``start_round - 1`` (the initial model when 0) over ``rounds_run`` rounds."""

    parameters: np.ndarray
    round_index: int
    start_round: int
    rounds_run: int
    rounds_completed: int
    seconds: float


@dataclass(frozen=True)
class MeduCorrection:
    """The correction's result: ``parameters`` (d,) float32 = w_T + θU at round ``round_index``;
    ``records_opened`` records walked over ``rounds_walked`` stored rounds; ``correction_norm`` ‖θU‖."""

    parameters: np.ndarray
    round_index: int
    records_opened: int
    rounds_walked: int
    correction_norm: float


@dataclass(frozen=True)
class DeletionOutcome:
    """What one call of :func:`unlearn_client` did (``resumed``: an open request was continued;
    ``already_done``: the client had been unlearned before, nothing new was computed)."""

    request_id: int
    run_id: int
    client_id: int
    method: str
    model_version: int
    round_index: int
    records_opened: int
    records_shredded: int
    rounds_walked: int
    heal_rounds: int
    seconds: float
    resumed: bool
    already_done: bool


# --- reading a run from storage ------------------------------------------------------------


def current_model(repository: Repository, run_id: int) -> tuple[np.ndarray, int]:
    """The run's newest model (d,) float32 and the last round folded into it.

    The newest checkpoint, then the stored mean updates of later rounds replayed exactly as the
    coordinator steps (float32: θ ← θ + float32(η)·mean Δ), so this equals the coordinator's model.
    """
    checkpoint = repository.load_checkpoint(run_id)
    if checkpoint is None:
        raise UnlearningError(f"run {run_id} has no stored model version yet (no checkpoint); "
                              "unlearn after its first checkpoint")
    model = np.asarray(checkpoint.tensors["flat"], dtype=np.float32)
    last = checkpoint.info.round_index
    learning_rate = np.float32(repository.get_run(run_id).config.get("server_learning_rate", 1.0))
    for aggregate in repository.iter_aggregates(run_id, "mean_update"):
        if aggregate.round_index > checkpoint.info.round_index:
            model = model + learning_rate * np.asarray(aggregate.values, dtype=np.float32)
            last = aggregate.round_index
    last_round = repository.last_committed_round(run_id)
    return model, (last if last_round is None else max(last, last_round))


def record_config_for_run(run_config: dict, rounds: list[RoundInfo]) -> RecordConfig | None:
    """The run's record format, from its stored config and the public parameters of its first
    completed round (None when no round completed: nothing can have been recorded)."""
    first = next((r for r in rounds if r.status == "completed"), None)
    if first is None:
        return None
    p = first.parameters
    return run_record_config(
        dimension=int(p["dimension"]), clip_norm=float(p["clip_norm"]),
        bits_per_entry=float(run_config.get("history_bits_per_entry", 2.0)),
        lattice=run_config.get("history_lattice", "Z"), codec_lattice=p["lattice"], step=float(p["step"]),
        noise_mode=p["noise"], noise_mechanism=p["mechanism"],
        # "noise_parameter": the name in runs stored before the noise plan's rename to "noise_scale"
        noise_parameter=float(p.get("noise_scale", p.get("noise_parameter", 0.0))))


def expected_record_rounds(run_config: dict, rounds: list[RoundInfo], client_id: int) -> list[int]:
    """The rounds whose aggregate holds the client's update AND for which the history policy
    kept its record: exactly the records an honest run stored for it."""
    if not run_config.get("history", True):
        return [r.round_index for r in rounds if client_id in r.survivors]  # each one is missing
    policy = HistoryPolicy(run_config.get("history_max_records"))
    expected = []
    for info in rounds:
        if info.status != "completed" or client_id not in info.survivors:
            continue
        kept = policy.select(info.cohort, bytes.fromhex(info.parameters["round_seed"]), info.round_index)
        if client_id in kept:
            expected.append(info.round_index)
    return expected


def round_weights(run_config: dict, rounds: list[RoundInfo], removed: Collection[int]) -> Iterator[RoundWeights]:
    """Each stored round's public weights p_k of its survivors (clients in ``removed``, deleted
    earlier, are no longer in the model and are left out) and the record inclusion probability."""
    policy = HistoryPolicy(run_config.get("history_max_records"))
    for info in rounds:
        weights = {client: weight for client, weight in info.client_weights.items() if client not in removed}
        probability = policy.inclusion_probability(len(info.cohort)) if info.cohort else 1.0
        yield RoundWeights(info.round_index, weights, probability)


def medu_correction(repository: Repository, run_id: int, client_id: int, history_secret: bytes, *,
                    alpha: float = DEFAULT_ALPHA, theta: float = DEFAULT_THETA) -> MeduCorrection:
    """Open the client's records and apply the Fast-FedUL/MEDU correction to the current model.

    Streams: rounds' metadata (no vectors) and the client's records one at a time from storage,
    decoded one at a time, folded into one O(d) accumulator. Raises HistorySecretError before
    anything is decrypted if the secret is wrong, and IncompleteHistoryError unless the opened
    records are exactly the rounds the client's update entered (then nothing is written).
    """
    run = repository.get_run(run_id)
    client = repository.get_client(run_id, client_id)
    rounds = repository.list_rounds(run_id)
    model, last_round = current_model(repository, run_id)
    expected = expected_record_rounds(run.config, rounds, client_id)
    config = record_config_for_run(run.config, rounds)
    opened_rounds: list[int] = []

    def decoded() -> Iterator[tuple[int, np.ndarray]]:
        sealed = ((row.round_index, row.ciphertext) for row in repository.iter_sealed_records(run_id, client_id))
        for record in open_history(sealed, history_secret=history_secret, commitment=client.history_commitment,
                                   run_id=run_id, client_id=client_id, config=config):
            opened_rounds.append(record.round_index)
            yield record.round_index, record.update

    if config is None:
        correction = np.zeros(model.shape[0], dtype=np.float64)
    else:
        if config.dimension != model.shape[0]:
            raise UnlearningError(f"records cover {config.dimension} parameters, the model has {model.shape[0]}")
        removed = {c.client_id for c in repository.list_clients(run_id, status="deleted")} - {client_id}
        history = join_round_history(round_weights(run.config, rounds, removed), {client_id: decoded()})
        correction = fast_fedul_correction(history, {client_id}, model.shape[0], alpha=alpha, theta=theta,
                                           server_learning_rate=float(run.config.get("server_learning_rate", 1.0)))
    if opened_rounds != expected:
        missing = sorted(set(expected) - set(opened_rounds))
        raise IncompleteHistoryError(
            f"client {client_id}'s update entered rounds without a stored record ({_rounds_text(missing)}); "
            "the correction cannot remove it: use method 'retrain'")
    parameters = (model.astype(np.float64) + correction).astype(np.float32)
    return MeduCorrection(parameters, last_round, len(opened_rounds), len(rounds), float(np.linalg.norm(correction)))


def _rounds_text(rounds: list[int]) -> str:
    shown = ", ".join(str(r) for r in rounds[:8])
    return f"rounds {shown}{', ...' if len(rounds) > 8 else ''}" if rounds else "records out of place"


# --- the flow (one function per step, so a crash can be injected between any two) ------------


def _authenticate(repository: Repository, request: DeletionRequest, settings: UnlearningSettings,
                  now: float | None) -> None:
    try:
        client = repository.get_client(request.run_id, request.client_id)
    except ClientNotFoundError:
        raise ClientNotActiveError(f"client {request.client_id} is not enrolled in run {request.run_id}") from None
    authenticate_deletion_request(request, enrolled_identity_key=client.identity_public_key,
                                  history_commitment=client.history_commitment, now=now,
                                  max_age_seconds=settings.max_age_seconds)


def _begin(repository: Repository, request: DeletionRequest, settings: UnlearningSettings) -> DeletionRequestInfo:
    info = repository.create_deletion_request(request.run_id, request.client_id,
                                              details={**settings.as_details(), "signed_at": request.timestamp})
    stored = {key: info.details.get(key) for key in settings.as_details()}
    if stored != settings.as_details():
        raise DeletionRequestError(
            f"deletion request {info.id} is in progress with settings {stored}; resume it with the same "
            "settings (it is idempotent)")
    return info


def _open(repository: Repository, info: DeletionRequestInfo) -> DeletionRequestInfo:
    return repository.transition_deletion_request(info.id, "opened")


def _unlearn(repository: Repository, info: DeletionRequestInfo, history_secret: bytes,
             settings: UnlearningSettings, trainer: RemainingClientsTrainer | None) -> DeletionRequestInfo:
    run_id, client_id = info.run_id, info.client_id
    started = time.perf_counter()
    removed = sorted({c.client_id for c in repository.list_clients(run_id, status="deleted")} | {client_id})
    details: dict = {"request_id": info.id, "client_id": client_id, **settings.as_details()}
    if settings.method == "medu":
        result = medu_correction(repository, run_id, client_id, history_secret, alpha=settings.alpha,
                                 theta=settings.theta)
        parameters, round_index = result.parameters, result.round_index
        details.update(records_opened=result.records_opened, rounds_walked=result.rounds_walked,
                       correction_norm=result.correction_norm)
        if settings.heal_rounds:
            parameters = trainer.heal(repository, run_id, parameters, settings.heal_rounds, removed)
    else:
        oracle = trainer.retrain(repository, run_id, removed)
        parameters, round_index = oracle.parameters, oracle.round_index
        details.update(records_opened=0, rounds_walked=oracle.rounds_run, retrain_start_round=oracle.start_round,
                       rounds_completed=oracle.rounds_completed)
    details["seconds"] = time.perf_counter() - started
    checkpoint = CheckpointWrite({"flat": np.asarray(parameters, dtype=np.float32)}, codec="raw",
                                 source="unlearning", round_index=round_index, details=details)
    repository.save_checkpoint(run_id, checkpoint, unlearned_request_id=info.id)
    return repository.get_deletion_request(info.id)


def _shred(repository: Repository, info: DeletionRequestInfo) -> DeletionRequestInfo:
    repository.shred_client_records(info.run_id, info.client_id, request_id=info.id)
    return repository.get_deletion_request(info.id)


def _unlearning_checkpoint(repository: Repository, run_id: int, model_version: int):
    return next(c for c in repository.list_checkpoints(run_id) if c.model_version == model_version)


def _record_completion(repository: Repository, info: DeletionRequestInfo) -> dict:
    checkpoint = _unlearning_checkpoint(repository, info.run_id, info.details["model_version"])
    payload = {"request_id": info.id, "model_version": checkpoint.model_version,
               "round_index": checkpoint.round_index, "checkpoint_sha256": checkpoint.sha256,
               "records_shredded": int(info.details.get("records", 0)),
               **{key: checkpoint.details.get(key) for key in
                  ("method", "alpha", "theta", "heal_rounds", "records_opened", "rounds_walked", "seconds")}}
    done = [entry for entry in repository.audit_entries(info.run_id, event=COMPLETED_EVENT)
            if entry.payload.get("request_id") == info.id]
    if not done:
        repository.append_audit(info.run_id, COMPLETED_EVENT, payload, client_id=info.client_id)
    return payload


def unlearn_client(repository: Repository, request: DeletionRequest, *,
                   settings: UnlearningSettings = UnlearningSettings(),
                   trainer: RemainingClientsTrainer | None = None, now: float | None = None) -> DeletionOutcome:
    """Remove ``request.client_id``'s contribution from run ``request.run_id`` (idempotent, resumable).

    trainer: required for ``method="retrain"`` and for healing rounds. now: the server clock for
    the freshness check (Unix seconds; default now).
    Raises (with nothing changed): RequestSignatureError, StaleRequestError, HistorySecretError,
    ClientNotActiveError, DeletionRequestError. After the request exists, an error that can never
    pass (IncompleteHistoryError, a record that fails to authenticate or decode) moves it to
    ``failed`` and is raised; any other error leaves it to be resumed by calling again.
    """
    if not isinstance(repository, Repository):
        raise UnlearningInputError(f"repository must be a storage Repository, got {type(repository).__name__}")
    if not isinstance(settings, UnlearningSettings):
        raise UnlearningInputError("settings must be UnlearningSettings")
    if trainer is None and (settings.method == "retrain" or settings.heal_rounds):
        raise UnlearningConfigurationError(
            "retraining and healing rounds train the remaining clients: pass trainer= "
            "(unlearning.retrain.CoordinatorTrainer)")
    started = time.perf_counter()
    _authenticate(repository, request, settings, now)
    run_id, client_id = request.run_id, request.client_id
    open_request = repository.open_deletion_request(run_id, client_id)
    if open_request is None and repository.get_client(run_id, client_id).status == "deleted":
        return _finished(repository, run_id, client_id, started)
    info = _begin(repository, request, settings)
    resumed = open_request is not None
    try:
        if info.state == "requested":
            info = _open(repository, info)
        if info.state == "opened":
            info = _unlearn(repository, info, request.history_secret, settings, trainer)
    except _PERMANENT_ERRORS as error:
        repository.transition_deletion_request(info.id, "failed", reason=f"{type(error).__name__}: {error}")
        raise
    if info.state == "unlearned":
        info = _shred(repository, info)
    payload = _record_completion(repository, info)
    return _outcome(info, payload, started, resumed=resumed, already_done=False)


def _finished(repository: Repository, run_id: int, client_id: int, started: float) -> DeletionOutcome:
    shredded = [r for r in repository.list_deletion_requests(run_id, client_id) if r.state == "shredded"]
    if not shredded:
        raise ClientNotActiveError(f"client {client_id} of run {run_id} was deleted without a deletion request")
    info = shredded[-1]
    payload = _record_completion(repository, info)  # a crash may have come just before it
    return _outcome(info, payload, started, resumed=True, already_done=True)


def _outcome(info: DeletionRequestInfo, payload: dict, started: float, *, resumed: bool,
             already_done: bool) -> DeletionOutcome:
    return DeletionOutcome(
        request_id=info.id, run_id=info.run_id, client_id=info.client_id, method=payload["method"],
        model_version=payload["model_version"], round_index=payload["round_index"],
        records_opened=int(payload["records_opened"] or 0), records_shredded=payload["records_shredded"],
        rounds_walked=int(payload["rounds_walked"] or 0), heal_rounds=int(payload["heal_rounds"] or 0),
        seconds=time.perf_counter() - started, resumed=resumed, already_done=already_done)
