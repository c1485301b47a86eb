"""The deletion flow: remove one client's contribution from a run's model (docs/ALGORITHMS.md §6.4).

Steps, each persisted by the deletion-request state machine of ``storage`` (requested → opened →
unlearned → shredded, or failed with a reason). Every request ends (docs/UNLEARNING.md, "The life
of a deletion request"):

- an **error** (any exception) while the request is ``requested`` or ``opened`` moves it to
  ``failed`` with the error as its reason and is raised: nothing was applied (the new model
  version is stored atomically with ``unlearned``), and a new request may follow;
- an error once it is ``unlearned`` leaves it there: the model without the client is stored,
  shredding needs no training and no secret, and running :func:`unlearn_client` again finishes it;
- a **crash** (the process killed, ``KeyboardInterrupt``) leaves the request where it stopped;
  running :func:`unlearn_client` again resumes it and reaches the same model bits (the correction
  is deterministic; healing and retraining train again, with fresh round seeds, when they are
  resumed before their model was stored), and :func:`cancel_deletion_request` fails a request
  still ``requested`` or ``opened`` that is not to be resumed.

1. **authenticate** the signed request against the client's enrolled key, its freshness, and the
   released secret against the stored commitment (``unlearning.requests``); a refused request
   changes nothing;
2. **begin**: create the request, or resume the client's open one;
3. **open**: the secret checked out; the request is ``opened``;
4. **unlearn**: compute the new model and store it as a new model version, atomically with the
   request becoming ``unlearned``:
   - ``medu``: stream the client's sealed records from storage in round order, open them
     (``records.open_history``: one reconstruction at a time), join them with every stored
     round's public survivor weights p_k and aggregate, and walk the correction — by default the
     calibrated trajectory correction (``correction.calibrated_correction``: renormalized
     subtraction plus the remaining clients' response estimated from the stored aggregates), or
     Fast-FedUL's fixed-shrink rule (``rules.fast_fedul_correction``, ``rule="fast-fedul"``) —
     O(window × model size) memory however long the run; then, optionally, heal with a few
     rounds of the remaining clients (FedEraser-style);
   - ``retrain``: the exact oracle, retraining without the client;
5. **shred** the client's records, mark it deleted (later rounds refuse it) and close the request,
   in one transaction;
6. **audit**: append ``unlearning.completed`` (once per request).

The released secret lives only in memory for the call: it is never stored, logged or audited.
Training (healing, retraining) is delegated to a :class:`RemainingClientsTrainer` that the caller
passes in (the real coordinator: ``federation.retraining.CoordinatorTrainer``, built by the CLI),
so this module needs only storage and never imports ``federation``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from storage.entities import AggregateRead, CheckpointWrite, DeletionRequestInfo, RoundInfo
from storage.errors import ClientNotFoundError
from storage.repositories import Repository
from unlearning.correction import ObservedRound, calibrated_correction
from unlearning.deletion_errors import ClientNotActiveError, DeletionRequestError, IncompleteHistoryError
from unlearning.errors import UnlearningConfigurationError, UnlearningError, UnlearningInputError
from unlearning.history_policy import HistoryPolicy
from unlearning.records import RecordConfig, open_history
from unlearning.requests import DEFAULT_MAX_AGE_SECONDS, DeletionRequest, authenticate_deletion_request
from unlearning.rules import (
    DEFAULT_ALPHA,
    DEFAULT_THETA,
    RoundHistory,
    RoundWeights,
    fast_fedul_correction,
    join_round_history,
)
from unlearning.run_records import run_record_config

METHODS = ("medu", "retrain")
#: The correction of method "medu": "calibrated" (``unlearning.correction``), "fast-fedul" (the
#: fixed-shrink rule of ``unlearning.rules``, with ``alpha`` and ``theta``) or "auto" (the default:
#: calibrated unless the run's aggregates carry DP noise, see :func:`correction_rule_for`).
RULES = ("auto", "calibrated", "fast-fedul")
COMPLETED_EVENT = "unlearning.completed"
#: The states a request can be failed from without undoing anything: before ``unlearned`` no
#: model version of it exists.
_FAILABLE_STATES = ("requested", "opened")
CANCELLED_PREFIX = "cancelled"


@dataclass(frozen=True)
class UnlearningSettings:
    """How to unlearn. method: "medu" (records + correction) or "retrain" (exact oracle).
    rule: medu's correction, "auto", "calibrated" or "fast-fedul" (see :data:`RULES`).
    alpha, theta: Fast-FedUL's contraction and scale (rule "fast-fedul" only). heal_rounds: rounds
    of the remaining clients after the correction (medu only). max_age_seconds: request freshness
    window."""

    method: str = "medu"
    rule: str = "auto"
    alpha: float = DEFAULT_ALPHA
    theta: float = DEFAULT_THETA
    heal_rounds: int = 0
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UnlearningConfigurationError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.rule not in RULES:
            raise UnlearningConfigurationError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
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
        return {"method": self.method, "rule": self.rule, "alpha": float(self.alpha), "theta": float(self.theta),
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
    """The correction's result: ``parameters`` (d,) float32 = w_T + correction at round ``round_index``;
    ``records_opened`` records walked over ``rounds_walked`` stored rounds; ``correction_norm`` its
    norm; ``rule`` the rule applied ("calibrated" or "fast-fedul", "auto" resolved)."""

    parameters: np.ndarray
    round_index: int
    records_opened: int
    rounds_walked: int
    correction_norm: float
    rule: str = "calibrated"


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


def observed_rounds(history: Iterator[RoundHistory], aggregates: Iterator[AggregateRead]) -> Iterator[ObservedRound]:
    """Pair each round's history with its stored aggregate (``mean_update``), both in round order.

    Rounds without an aggregate (aborted: nothing entered the model) are skipped; one that holds a
    target's record but no aggregate is refused (the record would be of a round that did not count).
    The whole history is consumed, so its own consistency checks run to the end.
    """
    pending = next(aggregates, None)
    for round_history in history:
        while pending is not None and pending.round_index < round_history.round_index:
            pending = next(aggregates, None)
        if pending is not None and pending.round_index == round_history.round_index:
            yield ObservedRound(round_history, np.asarray(pending.values, dtype=np.float64))
        elif round_history.target_updates:
            raise UnlearningError(f"round {round_history.round_index} holds a record but no stored aggregate")


def correction_rule_for(rule: str, rounds: list[RoundInfo]) -> str:
    """The rule ``rule`` resolves to on a run with these stored rounds.

    "auto" is "calibrated" when no completed round added DP noise to its aggregate (round
    parameter ``noise`` = "none"), else "fast-fedul": the calibrated rule estimates the remaining
    clients' response from differences of consecutive aggregates, and DP noise in them (of the
    order of the aggregates themselves or larger) leaves that estimate blind to the directions
    the correction moves in, so the correction would not decay at all; measured on DP runs, the
    fixed shrink tracks retraining better there (docs/UNLEARNING.md, "The correction").
    """
    if rule not in RULES:
        raise UnlearningConfigurationError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule != "auto":
        return rule
    noisy = any(info.parameters.get("noise", "none") != "none" for info in rounds if info.status == "completed")
    return "fast-fedul" if noisy else "calibrated"


def medu_correction(repository: Repository, run_id: int, client_id: int, history_secret: bytes, *,
                    rule: str = "auto", alpha: float = DEFAULT_ALPHA,
                    theta: float = DEFAULT_THETA) -> MeduCorrection:
    """Open the client's records and apply the correction ``rule`` (:data:`RULES`) to the current model.

    Streams: rounds' metadata, the stored aggregates and the client's records one at a time from
    storage, decoded one at a time, folded into O(d) accumulators (the calibrated rule also keeps
    its window of secant pairs, ``correction.DEFAULT_WINDOW`` × 2 vectors). With earlier deleted
    clients the stored aggregates still hold their updates while the current model does not: the
    calibrated rule's remaining-clients estimate is then approximate. Raises HistorySecretError before
    anything is decrypted if the secret is wrong, and IncompleteHistoryError unless the opened
    records are exactly the rounds the client's update entered (then nothing is written).
    """
    run = repository.get_run(run_id)
    client = repository.get_client(run_id, client_id)
    rounds = repository.list_rounds(run_id)
    model, last_round = current_model(repository, run_id)
    rule = correction_rule_for(rule, rounds)
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
        learning_rate = float(run.config.get("server_learning_rate", 1.0))
        if rule == "calibrated":
            observed = observed_rounds(history, repository.iter_aggregates(run_id, "mean_update"))
            correction = calibrated_correction(observed, {client_id}, model.shape[0],
                                               server_learning_rate=learning_rate)
        else:
            correction = fast_fedul_correction(history, {client_id}, model.shape[0], alpha=alpha, theta=theta,
                                               server_learning_rate=learning_rate)
    if opened_rounds != expected:
        missing = sorted(set(expected) - set(opened_rounds))
        raise IncompleteHistoryError(
            f"client {client_id}'s update entered rounds without a stored record ({_rounds_text(missing)}); "
            "the correction cannot remove it: use method 'retrain'")
    parameters = (model.astype(np.float64) + correction).astype(np.float32)
    return MeduCorrection(parameters, last_round, len(opened_rounds), len(rounds), float(np.linalg.norm(correction)),
                          rule)


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
            f"deletion request {info.id} is in progress ({info.state}) with settings {stored}; resume it with the "
            f"same settings (it is idempotent), or cancel it (fedvault unlearn --run {info.run_id} "
            f"--client {info.client_id} --cancel) and ask again")
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
        result = medu_correction(repository, run_id, client_id, history_secret, rule=settings.rule,
                                 alpha=settings.alpha, theta=settings.theta)
        parameters, round_index = result.parameters, result.round_index
        details.update(records_opened=result.records_opened, rounds_walked=result.rounds_walked,
                       correction_norm=result.correction_norm, rule_applied=result.rule)
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
                  ("method", "rule", "rule_applied", "alpha", "theta", "heal_rounds", "records_opened",
                   "rounds_walked", "seconds")}}
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
    ClientNotActiveError, DeletionRequestError. After the request exists, any error before its
    model is stored moves it to ``failed`` (reason: the error) and is raised, with nothing applied;
    an error after that leaves it ``unlearned``, finished by calling again (module docstring).
    """
    if not isinstance(repository, Repository):
        raise UnlearningInputError(f"repository must be a storage Repository, got {type(repository).__name__}")
    if not isinstance(settings, UnlearningSettings):
        raise UnlearningInputError("settings must be UnlearningSettings")
    if trainer is None and (settings.method == "retrain" or settings.heal_rounds):
        raise UnlearningConfigurationError(
            "retraining and healing rounds train the remaining clients: pass trainer= "
            "(federation.retraining.CoordinatorTrainer)")
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
    except Exception as error:  # fail closed: whatever went wrong, the request ends here
        _fail(repository, info.id, f"{type(error).__name__}: {error}", error)
        raise
    if info.state == "unlearned":
        info = _shred(repository, info)
    payload = _record_completion(repository, info)
    return _outcome(info, payload, started, resumed=resumed, already_done=False)


def _fail(repository: Repository, request_id: int, reason: str, error: Exception) -> None:
    """Move the request to ``failed`` unless its model is already stored (then it stays
    ``unlearned``, to be finished). If even that write fails, the request stays where it was
    (resumable or cancellable) and the note on ``error`` says why."""
    try:
        current = repository.get_deletion_request(request_id)
        if current.state in _FAILABLE_STATES:
            repository.transition_deletion_request(request_id, "failed", reason=reason)
    except Exception as storing:  # noqa: BLE001 - reported with the original error, which is raised
        error.add_note(f"deletion request {request_id} could not be marked failed ({type(storing).__name__}: "
                       f"{storing}); resume it with the same command or cancel it with --cancel")


def cancel_deletion_request(repository: Repository, run_id: int, client_id: int, *,
                            reason: str = "by the operator") -> DeletionRequestInfo:
    """End the client's open request that is not to be resumed: ``requested`` or ``opened`` →
    ``failed`` with reason ``"cancelled: <reason>"`` (audited as ``deletion.failed``). Nothing was
    applied in those states, so nothing needs undoing; the client stays active and may ask again.

    Raises DeletionRequestError when the client has no open request, or when it is ``unlearned``
    (its model without the client is stored: it cannot be taken back, only finished by resuming).
    """
    if not isinstance(reason, str) or not reason.strip():
        raise UnlearningInputError("a cancellation needs a non-empty reason")
    info = repository.open_deletion_request(run_id, client_id)
    if info is None:
        raise DeletionRequestError(f"client {client_id} of run {run_id} has no open deletion request to cancel")
    if info.state not in _FAILABLE_STATES:
        raise DeletionRequestError(
            f"deletion request {info.id} is {info.state}: model version {info.details.get('model_version')} without "
            "the client is stored and cannot be taken back; finish it by running the same unlearn command again "
            "(shredding needs no training)")
    return repository.transition_deletion_request(info.id, "failed", reason=f"{CANCELLED_PREFIX}: {reason.strip()}")


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
