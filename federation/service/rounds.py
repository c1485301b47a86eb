"""The HTTP service's round manager: SecAgg+ stage by stage, with deadlines, over a database.

Clients are real processes that come and go. The manager keeps one round open at a time:

1. **Start**: when at least ``min_clients`` enrolled clients polled recently ("online") and their
   budgets allow another release, it Poisson-samples a cohort (rate q, OS CSPRNG), opens the
   round (``federation.round_logic.open_round``) and journals its configuration.
2. **Stages**: a stage closes when every asked client has answered, or at its deadline (the first
   stage's deadline covers local training); the clients that did not answer are dropped
   (``SecAggServer.advance``). Before the masked-input requests are served, every client asked for
   its masked input is charged in the ledger, durably (``Repository.append_ledger_entries``).
3. **Finish**: the unmasked sum is decoded, the model stepped and evaluated, and the round
   committed in one transaction; or, on abort, an aborted round is committed (charges stand).

Crash safety: every accepted message and every stage close is appended to the round journal
(``federation.service.journal``) and fsync'ed before the client hears "accepted". A restarted
manager on the same database and state directory replays the journal into a fresh
``SecAggServer`` (same instance nonce, same accepted messages, same closes) and resumes the round
with fresh deadlines; a round it cannot rebuild is committed as aborted. Committed rounds, ledger
entries and audit entries are only ever written by database transactions, so a crash loses none.

Thread safety: every public method takes one lock; ``tick`` is called by a driver thread.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from federation.config import RunConfig
from federation.errors import ConfigError
from federation.privacy_plan import PrivacyPlanner
from federation.round_logic import (
    RoundSetup,
    aborted_round_write,
    aggregate_round,
    completed_round_write,
    lattice_step,
    open_round,
    restore_model,
    secure_sum_bits,
)
from federation.round_plan import RoundPlan
from federation.service.errors import (
    AuthenticationFailedError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
)
from federation.service.journal import JournalRecord, RoundJournal
from federation.service.state import StateDirectory
from secagg.errors import MalformedMessageError, ProtocolError, RoundAbortedError, SecAggError
from secagg.server import SecAggServer
from secagg.wire import AdvertiseKeysRequest
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK
from privacy.errors import PrivacyError
from storage.entities import ClientEnrolment, SealedRecordWrite
from storage.errors import ClientNotFoundError, RoundNotFoundError, StorageError
from storage.repositories import Repository
from unlearning.deletion import DeletionOutcome
from unlearning.requests import DeletionRequest
from unlearning.secrets import RECORD_FORMAT_VERSION

log = logging.getLogger("fedvault.service")

MAX_SAMPLE_EVENTS = 64
_SAMPLING_BITS = 53

__all__ = ["ClientReport", "ClientTask", "RoundManager", "RoundOutcome", "RoundStatus", "ServiceSettings"]


@dataclass(frozen=True)
class ServiceSettings:
    """How the server paces rounds (seconds).

    ``min_clients``: online, eligible clients needed before a round starts (>= 2).
    ``train_timeout``: deadline of the first stage, which includes the clients' local training.
    ``stage_timeout``: deadline of each later stage.
    ``online_window``: a client that polled within this window counts as online.
    ``round_interval``: pause between the end of a round and the start of the next.
    ``retry_interval``: how long to wait before sampling again when too few clients are online.
    """

    min_clients: int = 2
    train_timeout: float = 120.0
    stage_timeout: float = 30.0
    online_window: float = 60.0
    round_interval: float = 0.0
    retry_interval: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.min_clients, bool) or not isinstance(self.min_clients, int) or self.min_clients < 2:
            raise ConfigError(f"min_clients must be an int >= 2, got {self.min_clients!r}")
        for name in ("train_timeout", "stage_timeout", "online_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
                raise ConfigError(f"{name} must be a number of seconds in (0, 1e6), got {value!r}")
        for name in ("round_interval", "retry_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ConfigError(f"{name} must be a number of seconds in [0, 1e6), got {value!r}")


@dataclass(frozen=True)
class ClientReport:
    """What a client reports after local training (public): examples, loss, DP-SGD events (JSON)."""

    num_samples: int
    train_loss: float | None = None
    sample_events: tuple[Mapping[str, Any], ...] = ()

    def to_meta(self) -> dict:
        return {"num_samples": self.num_samples, "train_loss": self.train_loss,
                "sample_events": [dict(e) for e in self.sample_events]}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ClientReport:
        return cls(int(meta["num_samples"]), meta.get("train_loss"), tuple(meta.get("sample_events", ())))


@dataclass(frozen=True)
class RoundOutcome:
    """How a finished round ended (what clients and operators are told).

    ``records_stored``: the clients whose sealed history record was committed with the round (each
    is told, so it codes its next record against this one).
    """

    round_index: int
    status: str  # "completed" | "aborted"
    cohort: int
    survivors: int
    reason: str | None = None
    accuracy: float | None = None
    loss: float | None = None
    seconds: float | None = None
    server_cpu_seconds: float | None = None
    records_stored: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ClientTask:
    """What one client should do now.

    ``request``: this client's SecAgg+ request of the open stage (wire bytes) when it is asked and
    has not answered; ``plan``: the round plan's bytes (with the first stage's request);
    ``record``: whether the history policy asks this client for a sealed record this round;
    ``version`` changes whenever a round or stage opens or closes (for long polling);
    ``record_stored``: whether this client's record of ``last_round`` was committed.
    """

    run_status: str
    version: int
    round_index: int | None = None
    stage: str | None = None
    selected: bool = False
    answered: bool = False
    request: bytes | None = None
    plan: bytes | None = None
    record: bool = False
    stage_seconds_left: float | None = None
    last_round: RoundOutcome | None = None
    record_stored: bool = False


@dataclass(frozen=True)
class RoundStatus:
    """A round's state: ``open`` (with its stage), ``completed`` or ``aborted``."""

    round_index: int
    state: str
    stage: str | None
    cohort: int
    survivors: int | None = None
    reason: str | None = None
    stage_seconds_left: float | None = None


@dataclass
class _DeletionTicket:
    """A deletion request waiting for the gap between rounds (its secret lives only here, in memory)."""

    request: DeletionRequest
    done: threading.Event = field(default_factory=threading.Event)
    outcome: DeletionOutcome | None = None
    error: Exception | None = None


@dataclass
class _OpenRound:
    setup: RoundSetup
    server: SecAggServer
    started_at: datetime
    started_clock: float
    cpu_started: float
    deadline: float
    parameters: bytes
    recorded: frozenset[int] = frozenset()
    reports: dict[int, ClientReport] = field(default_factory=dict)
    records: dict[int, bytes] = field(default_factory=dict)
    accepted: dict[tuple[str, int], bytes] = field(default_factory=dict)
    dropped: dict[str, frozenset[int]] = field(default_factory=dict)
    upload_bytes: int = 0
    resumed: bool = False
    abort_reason: str | None = None
    abort_stage: str | None = None

    @property
    def round_index(self) -> int:
        return self.setup.plan.round_index

    @property
    def cohort(self) -> tuple[int, ...]:
        return self.setup.round_config.client_ids


class RoundManager:
    """Runs the rounds of one stored run for networked clients.

    Args:
        repository: the run's database.
        run_id: the run (its stored config drives everything).
        state: the server's state directory (the round journal).
        settings: pacing and deadlines.
        model: the server's model (``flat``, ``load_flat``, ``apply_update``, ``evaluate``,
            ``parameter_count``); the run's ``GlobalModel`` by default.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, repository: Repository, run_id: int, state: StateDirectory,
                 settings: ServiceSettings | None = None, *, model=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.repository = repository
        self.run_id = run_id
        self.state = state
        self.settings = settings or ServiceSettings()
        self._clock = clock
        self.config = RunConfig.from_dict(repository.get_run(run_id).config)
        if model is None:
            from federation.evaluation import GlobalModel

            model = GlobalModel.for_config(self.config)
        self.model = model
        self.dimension = int(model.parameter_count)
        self.step = lattice_step(self.config, self.dimension)
        self.privacy = PrivacyPlanner(self.config, self.dimension, self.step)
        self.bits = secure_sum_bits(self.config, self.dimension, self.step, self.privacy.noise_share.std)
        self._lock = threading.RLock()
        self._wakeup = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._version = 0
        self._journal = RoundJournal(state.journal_path)
        self._open: _OpenRound | None = None
        self._seen: dict[int, float] = {}
        self._outcomes: dict[int, RoundOutcome] = {}
        self._deletions: list[_DeletionTicket] = []
        self._last: RoundOutcome | None = None
        self._next_start = 0.0
        restore_model(repository, run_id, self.model, self.config.server_learning_rate)
        self.privacy.restore(repository.ledger_entries(run_id))
        self._keys = self._load_keys()
        self._next_round = repository.next_round_index(run_id)
        self._last = self._committed_outcome(self._next_round - 1)
        self._completed = self._next_round >= self.config.rounds
        if repository.get_run(run_id).status != "running" and not self._completed:
            repository.set_run_status(run_id, "running")
        self._recover()

    # --- public read-only state --------------------------------------------------------------

    @property
    def coordinates(self) -> int:
        """m, coordinates of every masked vector of this run."""
        return self._probe_plan().coordinates()

    @property
    def completed(self) -> bool:
        with self._lock:
            return self._completed

    @property
    def version(self) -> int:
        """Changes whenever a round or stage opens or closes (lock-free read)."""
        return self._version

    @property
    def wakeup(self) -> threading.Event:
        """Set when the open stage can close early (every asked client answered)."""
        return self._wakeup

    def max_message_bytes(self) -> int:
        """The largest protocol message a client may send in this run (the body-size limit)."""
        masked = -(-self.coordinates * self.bits // 8)
        per_peer = 1024  # a sealed share pair, or two revealed shares, with framing
        record = self._record_bytes(self._probe_plan()) if self.config.history else 0
        return max(masked, record, self.config.clients * per_peer) + 64 * 1024

    def _probe_plan(self) -> RoundPlan:
        return RoundPlan(round_index=0, round_seed=bytes(32), dimension=self.dimension, lattice=self.config.lattice,
                         step=self.step, bits=self.bits, clip_norm=self.config.clip_norm,
                         noise=self.privacy.noise_share)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from any thread, must not block) whenever the version changes."""
        with self._lock:
            self._listeners.append(listener)

    def _notify(self) -> None:
        self._version += 1
        for listener in self._listeners:
            listener()

    # --- enrolment and identities ------------------------------------------------------------

    def _load_keys(self) -> dict[int, bytes]:
        return {c.client_id: c.identity_public_key for c in self.repository.list_clients(self.run_id, status="active")}

    def public_key_of(self, client_id: int) -> bytes | None:
        """The enrolled identity key of an active client, or None.

        Lock-free (``_keys`` is only ever replaced or extended whole-entry), so request
        authentication on the event loop never waits for a round being finished."""
        return self._keys.get(client_id)

    def directory(self) -> dict[int, bytes]:
        """Every active client's enrolled Ed25519 key (what a client verifies neighbours with); lock-free."""
        return dict(self._keys)

    def enrol(self, client_id: int, identity_public_key: bytes, history_commitment: bytes) -> bool:
        """Bind ``identity_public_key`` to ``client_id`` (the caller checked the enrolment token and
        the proof of possession). Returns False when the same key was already enrolled (idempotent).

        Raises:
            BadRequestError: the id has no data shard in this run.
            ConflictError: the id is bound to another key, or was deleted.
        """
        if not 0 <= client_id < self.config.clients:
            raise BadRequestError(f"run {self.run_id} has clients 0..{self.config.clients - 1}; got {client_id}")
        with self._lock:
            try:
                existing = self.repository.get_client(self.run_id, client_id)
            except ClientNotFoundError:
                existing = None
            if existing is not None:
                if existing.status != "active":
                    raise ConflictError(f"client {client_id} was deleted from run {self.run_id}; it cannot re-enrol")
                same_key = hmac.compare_digest(existing.identity_public_key, identity_public_key)
                same_commitment = hmac.compare_digest(existing.history_commitment, history_commitment)
                if same_key and same_commitment:
                    return False
                raise ConflictError(f"client {client_id} is already enrolled with a different identity key "
                                    "or history commitment")
            self.repository.enrol_clients(self.run_id, [ClientEnrolment(
                client_id, identity_public_key, history_commitment, self.config.client_budget, self.config.delta)])
            self._keys[client_id] = identity_public_key
            return True

    # --- what a client sees ------------------------------------------------------------------

    def task(self, client_id: int) -> ClientTask:
        """This client's current task; also marks it online."""
        with self._lock:
            now = self._clock()
            self._seen[client_id] = now
            run_status = "completed" if self._completed else "running"
            current = self._open
            last = self._last
            stored = last is not None and client_id in last.records_stored
            if current is None or current.server.stage is None:
                return ClientTask(run_status, self._version, last_round=last, record_stored=stored)
            server = current.server
            stage = server.stage
            requests = server.broadcast()
            asked = client_id in requests
            answered = asked and client_id not in server.pending()
            waiting = asked and not answered
            return ClientTask(
                run_status, self._version, round_index=current.round_index, stage=stage,
                selected=client_id in current.cohort, answered=answered,
                request=requests[client_id] if waiting else None,
                plan=current.setup.round_config.application_config if waiting and stage == ADVERTISE_KEYS else None,
                record=waiting and stage == ADVERTISE_KEYS and client_id in current.recorded,
                stage_seconds_left=max(0.0, current.deadline - now), last_round=last, record_stored=stored)

    def model_parameters(self, round_index: int) -> bytes:
        """θ at the start of the open round ``round_index``: (d,) float32 little-endian bytes."""
        with self._lock:
            return self._require_open(round_index).parameters

    def round_status(self, round_index: int) -> RoundStatus:
        with self._lock:
            current = self._open
            if current is not None and current.round_index == round_index:
                stage = current.server.stage
                return RoundStatus(round_index, "open", stage, len(current.cohort),
                                   stage_seconds_left=max(0.0, current.deadline - self._clock()))
            outcome = self._outcomes.get(round_index)
            if outcome is not None:
                return RoundStatus(round_index, outcome.status, None, outcome.cohort, outcome.survivors, outcome.reason)
        try:
            info = self.repository.get_round(self.run_id, round_index)
        except RoundNotFoundError:
            raise NotFoundError(f"round {round_index} of run {self.run_id} has not run") from None
        reason = None
        if info.status == "aborted":
            reason = self._abort_reason_from_audit(round_index)
        return RoundStatus(round_index, info.status, None, len(info.cohort), len(info.survivors), reason)

    def _abort_reason_from_audit(self, round_index: int) -> str | None:
        for entry in self.repository.audit_entries(self.run_id, event="round.committed"):
            if entry.round_index == round_index:
                details = entry.payload.get("details", entry.payload)
                if isinstance(details, dict) and isinstance(details.get("reason"), str):
                    return details["reason"]
        return None

    # --- what a client sends -----------------------------------------------------------------

    def report(self, client_id: int, round_index: int, report: ClientReport) -> bool:
        """Record the client's training report (before its advertise_keys message).

        Returns True for an identical repeat. Raises ConflictError when the stage is not open or
        the client is not asked, BadRequestError for malformed privacy events.
        """
        with self._lock:
            current = self._require_open(round_index)
            previous = current.reports.get(client_id)
            if previous is not None:
                if previous == report:
                    return True
                raise ConflictError(f"client {client_id} already reported for round {round_index}")
            self._require_asked(current, client_id, ADVERTISE_KEYS)
            self._check_events(report)
            self._append(current, JournalRecord("report", {"client": client_id, **report.to_meta()}))
            current.reports[client_id] = report
        self._sync()
        return False

    def submit_record(self, client_id: int, round_index: int, sealed: bytes) -> bool:
        """Accept the client's sealed history record of this round (before its advertise_keys
        message; stored with the round only if the client survives). True for an identical repeat.

        Raises ConflictError when the stage is not open or the policy did not ask this client,
        BadRequestError when the record does not have this run's fixed record size.
        """
        with self._lock:
            current = self._require_open(round_index)
            previous = current.records.get(client_id)
            if previous is not None:
                if hmac.compare_digest(previous, sealed):
                    return True
                raise ConflictError(f"client {client_id} already sent its record for round {round_index}")
            self._require_asked(current, client_id, ADVERTISE_KEYS)
            if client_id not in current.recorded:
                raise ConflictError(f"the history policy keeps no record of client {client_id} in round {round_index}")
            expected = self._record_bytes(current.setup.plan)
            if len(sealed) != expected:
                raise BadRequestError(f"a sealed record of this run is exactly {expected} bytes, got {len(sealed)}")
            self._append(current, JournalRecord("record", {"client": client_id}, sealed))
            current.records[client_id] = bytes(sealed)
        self._sync()
        return False

    def _record_bytes(self, plan: RoundPlan) -> int:
        from unlearning.run_records import run_record_config

        config = run_record_config(
            dimension=plan.dimension, clip_norm=plan.clip_norm, bits_per_entry=self.config.history_bits_per_entry,
            lattice=self.config.history_lattice, codec_lattice=plan.lattice, step=plan.step,
            noise_mode=plan.noise.mode, noise_mechanism=plan.noise.mechanism, noise_parameter=plan.noise.scale)
        return config.sealed_bytes

    def _recorded(self, plan: RoundPlan, cohort) -> frozenset[int]:
        """Who uploads a history record: a subset computed from the public seed (unlearning.history_policy)."""
        if not self.config.history:
            return frozenset()
        from unlearning.history_policy import HistoryPolicy

        return HistoryPolicy(self.config.history_max_records).select(cohort, plan.round_seed, plan.round_index)

    def _check_events(self, report: ClientReport) -> None:
        if len(report.sample_events) > MAX_SAMPLE_EVENTS:
            raise BadRequestError(f"at most {MAX_SAMPLE_EVENTS} sample events per report")
        if self.config.trainer != "dpsgd":
            if report.sample_events:
                raise BadRequestError("this run's trainer is not DP-SGD; sample_events must be empty")
            return
        from privacy.events import event_from_json

        for event in report.sample_events:
            try:
                event_from_json(dict(event))
            except Exception as error:  # noqa: BLE001 - any parse failure is the client's bad input
                raise BadRequestError(f"malformed privacy event {str(event)[:80]}: {error}") from None

    def submit(self, client_id: int, round_index: int, stage: str, message: bytes) -> bool:
        """Accept one SecAgg+ reply; durable before this returns. True for an identical repeat.

        Raises:
            BadRequestError: unknown stage, or bytes that do not parse.
            ConflictError: the round or stage is not open, the client is not asked, it answered
                already with different bytes, or the message fails a protocol check.
        """
        if stage not in STAGES:
            raise BadRequestError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        digest = hashlib.sha256(message).digest()
        with self._lock:
            self._seen[client_id] = self._clock()
            current = self._require_open(round_index)
            previous = current.accepted.get((stage, client_id))
            if previous is not None:
                if hmac.compare_digest(previous, digest):
                    return True  # a retry of a message whose acknowledgement was lost
                raise ConflictError(f"client {client_id} already answered {stage} of round {round_index} "
                                    "with a different message")
            self._require_asked(current, client_id, stage)
            if stage == ADVERTISE_KEYS and client_id not in current.reports:
                raise ConflictError(f"send round {round_index}'s training report before the advertise_keys message")
            try:
                current.server.receive(client_id, message)
            except MalformedMessageError as error:
                raise BadRequestError(f"malformed {stage} message: {error}") from None
            except SecAggError as error:
                raise ConflictError(f"{stage} message refused: {error}") from None
            self._append(current, JournalRecord("message", {"client": client_id, "stage": stage}, message))
            current.accepted[(stage, client_id)] = digest
            current.upload_bytes += len(message)
            if not current.server.pending():
                self._wakeup.set()
        self._sync()  # outside the lock: concurrent clients' fsyncs overlap (group commit)
        return False

    def _require_open(self, round_index: int) -> _OpenRound:
        current = self._open
        if current is None or current.server.stage is None:
            raise ConflictError(f"round {round_index} is not open; no round is open now")
        if current.round_index != round_index:
            raise ConflictError(f"round {round_index} is not open; the open round is {current.round_index}")
        return current

    @staticmethod
    def _require_asked(current: _OpenRound, client_id: int, stage: str) -> None:
        open_stage = current.server.stage
        if stage != open_stage:
            raise ConflictError(f"stage {stage} of round {current.round_index} is not open (open: {open_stage})")
        if client_id not in current.server.pending():
            if client_id not in current.cohort:
                raise ConflictError(f"client {client_id} is not in round {current.round_index}'s cohort")
            raise ConflictError(f"client {client_id} is not asked in {stage} of round {current.round_index} "
                                "(it answered already or dropped at an earlier stage)")

    def _append(self, current: _OpenRound, record: JournalRecord) -> None:
        """Write one record (under the lock; made durable by ``_sync`` before the client hears back)."""
        try:
            self._journal.append(record, sync=False)
        except OSError as error:
            self._journal_failed(current, error)

    def _sync(self) -> None:
        try:
            self._journal.sync()
        except OSError as error:
            with self._lock:
                if self._open is not None:
                    self._journal_failed(self._open, error)

    def _journal_failed(self, current: _OpenRound, error: OSError) -> None:
        # The message cannot be made durable: fail closed, tell the client to retry later.
        current.abort_reason = f"round journal write failed: {error}"
        current.abort_stage = current.server.stage
        self._wakeup.set()
        raise UnavailableError(f"the server could not persist the message ({error}); retry later") from None

    # --- deletion requests -------------------------------------------------------------------

    def request_deletion(self, request: DeletionRequest, *, timeout: float) -> DeletionOutcome | None:
        """Unlearn the requesting client between rounds (``unlearning.deletion.unlearn_client``,
        method medu: its sealed records, streamed). Authenticates first, so a forged, stale or
        wrong-secret request is refused at once and changes nothing; then waits up to ``timeout``
        seconds for the gap between rounds (None: still queued; the client asks again: requests
        are idempotent and resume). No new round starts while a deletion waits.

        Raises:
            AuthenticationFailedError / ForbiddenError / ConflictError (see ``_check_deletion``).
        """
        self._check_deletion(request)
        ticket = _DeletionTicket(request)
        with self._lock:
            self._deletions.append(ticket)
        self._wakeup.set()
        if not ticket.done.wait(timeout):
            return None
        if ticket.error is not None:
            raise ticket.error
        return ticket.outcome

    def _check_deletion(self, request: DeletionRequest) -> None:
        from unlearning.deletion_errors import RequestSignatureError, StaleRequestError
        from unlearning.errors import HistorySecretError
        from unlearning.requests import authenticate_deletion_request

        if request.run_id != self.run_id:
            raise ForbiddenError(f"the deletion request is for run {request.run_id}; this server runs {self.run_id}")
        try:
            client = self.repository.get_client(self.run_id, request.client_id)
        except ClientNotFoundError:
            raise NotFoundError(f"client {request.client_id} is not enrolled in run {self.run_id}") from None
        try:
            authenticate_deletion_request(request, enrolled_identity_key=client.identity_public_key,
                                          history_commitment=client.history_commitment)
        except RequestSignatureError as error:
            raise AuthenticationFailedError(str(error)) from None
        except StaleRequestError as error:
            raise AuthenticationFailedError(str(error)) from None
        except HistorySecretError as error:
            raise ForbiddenError(str(error)) from None

    def _process_deletions(self) -> None:
        from unlearning.deletion import UnlearningSettings, current_model, unlearn_client
        from unlearning.errors import UnlearningError

        tickets, self._deletions = self._deletions, []
        changed = False
        for ticket in tickets:
            try:
                ticket.outcome = unlearn_client(self.repository, ticket.request, settings=UnlearningSettings())
                changed = changed or not ticket.outcome.already_done
            except UnlearningError as error:
                ticket.error = ConflictError(f"deletion of client {ticket.request.client_id} failed: {error}")
            except Exception as error:  # noqa: BLE001 - reported to the waiting request, never lost
                log.exception("deletion of client %d failed", ticket.request.client_id)
                ticket.error = UnavailableError(f"deletion of client {ticket.request.client_id} could not run "
                                                f"now ({type(error).__name__}); send it again (a request "
                                                "failed by the error is replaced, one whose model is stored "
                                                "is finished)")
            finally:
                ticket.done.set()
        if changed:
            parameters, _ = current_model(self.repository, self.run_id)
            self.model.load_flat(parameters)  # the next round starts from the unlearned model
            self._keys = self._load_keys()
            self._notify()

    # --- driving rounds ----------------------------------------------------------------------

    def tick(self) -> None:
        """Advance whatever is due: start a round, close a stage, finish or abort a round, or
        (between rounds) process deletion requests."""
        with self._lock:
            now = self._clock()
            current = self._open
            if current is None and self._deletions:
                self._process_deletions()
                return
            if self._completed:
                return
            if current is None:
                self._maybe_start(now)
            elif current.abort_reason is not None or current.server.aborted is not None:
                self._commit_abort(current)
            elif current.server.stage is None:
                self._finish(current)
            elif not current.server.pending() or now >= current.deadline:
                self._close_stage(current, now)

    def _online_eligible(self, now: float) -> list[int]:
        window = self.settings.online_window
        online = sorted(c for c, seen in self._seen.items() if now - seen <= window and c in self._keys)
        return [c for c in online if self.privacy.can_participate(c)]

    def _maybe_start(self, now: float) -> None:
        if now < self._next_start:
            return
        round_index = self._next_round
        if round_index >= self.config.rounds:
            self._mark_completed()
            return
        if len(self._online_eligible(now)) < self.settings.min_clients:
            return
        self._keys = self._load_keys()  # the unlearning job may have deleted clients meanwhile
        eligible = self._online_eligible(now)
        if len(eligible) < self.settings.min_clients:
            return
        cohort = [c for c in eligible if _sampled(self.config.sample_rate)]
        needed = max(2, self.privacy.noise_share.floor)
        if len(cohort) < needed:
            self._next_start = now + self.settings.retry_interval
            return
        setup = open_round(self.config, round_index=round_index, cohort=cohort, dimension=self.dimension,
                           step=self.step, bits=self.bits, noise=self.privacy.noise_share)
        server = SecAggServer(setup.round_config, {c: self._keys[c] for c in cohort})
        started_at = datetime.now(UTC)
        # The first request carries the whole RoundConfig (nonce, graph, plan): replaying it
        # rebuilds the identical server.
        first_request = server.broadcast()[cohort[0]]
        self._journal.start(JournalRecord("start", {"round_index": round_index, "cohort": cohort,
                                                    "started_at": started_at.isoformat()}, first_request))
        self._open = _OpenRound(setup, server, started_at, now, time.process_time(),
                                now + self.settings.train_timeout, self._parameters_bytes(),
                                recorded=self._recorded(setup.plan, cohort))
        self.repository.append_audit(self.run_id, "round.started", {
            "cohort": len(cohort), "neighbours": setup.neighbours, "threshold": setup.threshold,
            "online": len(eligible)}, round_index=round_index)
        log.info("round %d opened: %d clients (k=%d, t=%d)", round_index, len(cohort), setup.neighbours,
                 setup.threshold)
        self._notify()

    def _parameters_bytes(self) -> bytes:
        return np.ascontiguousarray(self.model.flat(), dtype="<f4").tobytes()

    def _close_stage(self, current: _OpenRound, now: float) -> None:
        server = current.server
        stage = server.stage
        current.dropped[stage] = server.pending()
        try:
            server.advance()
        except RoundAbortedError as error:
            current.abort_reason, current.abort_stage = str(error), stage
            self._commit_abort(current)
            return
        if stage == SHARE_KEYS:
            try:
                self._charge_before_upload(current)
            except Exception as error:  # noqa: BLE001 - any failure to charge must stop the upload
                current.abort_reason = f"privacy charge before upload failed: {error}"
                current.abort_stage = MASKED_INPUT
                self._commit_abort(current)
                return
        try:
            self._journal.append(JournalRecord("close", {"stage": stage}))
        except OSError as error:
            current.abort_reason, current.abort_stage = f"round journal write failed: {error}", stage
            self._commit_abort(current)
            return
        self._wakeup.clear()
        if stage == UNMASK:
            self._finish(current)
            return
        current.deadline = now + self.settings.stage_timeout
        log.info("round %d: %s closed (%d dropped), %s open", current.round_index, stage,
                 len(current.dropped[stage]), server.stage)
        self._notify()

    def _charge_before_upload(self, current: _OpenRound) -> None:
        """Charge every client asked for its masked input, durably, unless already charged
        (a resumed round whose charges reached the database before the crash)."""
        round_index = current.round_index
        if any(e.round_index == round_index for e in self.repository.ledger_entries(self.run_id)):
            return
        asked = sorted(current.server.broadcast())
        events = {}
        if self.config.trainer == "dpsgd":
            from privacy.events import event_from_json

            events = {c: [event_from_json(dict(e)) for e in current.reports[c].sample_events]
                      for c in asked if c in current.reports}
        try:
            entries = self.privacy.charge(asked, round_index, sample_events=events)
            if entries:
                self.repository.append_ledger_entries(self.run_id, entries)
        except BaseException:
            self._reload_privacy()  # the in-memory ledger may hold charges the database refused
            raise

    def _reload_privacy(self) -> None:
        self.privacy = PrivacyPlanner(self.config, self.dimension, self.step)
        self.privacy.restore(self.repository.ledger_entries(self.run_id))

    def _finish(self, current: _OpenRound) -> None:
        outcome = current.server.result
        try:
            self.privacy.settle(len(outcome.survivors))
        except PrivacyError as error:  # fewer noise shares than calibrated: release nothing
            current.abort_reason, current.abort_stage = str(error), UNMASK
            self._commit_abort(current)
            return
        aggregate = aggregate_round(current.setup.plan, outcome)
        previous = self.model.flat()
        self.model.apply_update(aggregate.mean_update, self.config.server_learning_rate)
        accuracy, loss = self.model.evaluate()
        cpu = time.process_time() - current.cpu_started
        seconds = self._clock() - current.started_clock
        # Only survivors' records: a record whose update is not in the sum must not be stored.
        stored = frozenset(c for c in aggregate.survivors if c in current.records)
        records = [SealedRecordWrite(c, current.records[c], {"format_version": RECORD_FORMAT_VERSION}, self.dimension)
                   for c in sorted(stored)]
        write = completed_round_write(
            config=self.config, setup=current.setup, aggregate=aggregate, model_parameters=self.model.flat(),
            started_at=current.started_at, finished_at=datetime.now(UTC), dropouts=outcome.dropped,
            bytes_uploaded=current.upload_bytes, sealed_records=records,
            audit_details={"accuracy": accuracy, "loss": loss, "survivors": len(aggregate.survivors),
                           "server_cpu_seconds": cpu, "resumed": current.resumed})
        try:
            self.repository.commit_round(self.run_id, write)
        except BaseException:
            self.model.load_flat(previous)  # retried on the next tick from the same result
            raise
        self._journal.clear()
        self._conclude(RoundOutcome(current.round_index, "completed", len(current.cohort), len(aggregate.survivors),
                                    accuracy=accuracy, loss=loss, seconds=seconds, server_cpu_seconds=cpu,
                                    records_stored=stored))
        log.info("round %d completed: %d/%d survivors, accuracy %.4f", current.round_index,
                 len(aggregate.survivors), len(current.cohort), accuracy)

    def _commit_abort(self, current: _OpenRound) -> None:
        reason = current.abort_reason or current.server.aborted or "aborted"
        active = set(self._load_keys())
        cohort = [c for c in current.cohort if c in active]
        if cohort:
            dropped = {s: [c for c in ids if c in active] for s, ids in current.dropped.items()}
            self.repository.commit_round(self.run_id, aborted_round_write(
                round_index=current.round_index, cohort=cohort, started_at=current.started_at,
                finished_at=datetime.now(UTC), reason=reason, stage=current.abort_stage or "aborted",
                dropouts=dropped, audit_details={"resumed": current.resumed}))
        self._journal.clear()
        self._conclude(RoundOutcome(current.round_index, "aborted", len(current.cohort), 0, reason=reason,
                                    seconds=self._clock() - current.started_clock,
                                    server_cpu_seconds=time.process_time() - current.cpu_started))
        log.warning("round %d aborted: %s", current.round_index, reason)

    def _conclude(self, outcome: RoundOutcome) -> None:
        self._outcomes[outcome.round_index] = outcome
        self._last = outcome
        self._open = None
        self._wakeup.clear()
        self._next_start = self._clock() + self.settings.round_interval
        self._next_round = self.repository.next_round_index(self.run_id)
        if self._next_round >= self.config.rounds:
            self._mark_completed()
        self._notify()

    def _mark_completed(self) -> None:
        if not self._completed:
            self.repository.set_run_status(self.run_id, "completed")
            self._completed = True
            self._notify()

    def _committed_outcome(self, round_index: int) -> RoundOutcome | None:
        """A committed round as an outcome (after a restart, so clients still learn how the last
        round ended and whether their record of it was stored)."""
        if round_index < 0:
            return None
        info = self.repository.get_round(self.run_id, round_index)
        if info.status != "completed":
            return RoundOutcome(round_index, info.status, len(info.cohort), 0,
                                reason=self._abort_reason_from_audit(round_index))
        stored = frozenset()
        if self.config.history and "round_seed" in info.parameters:
            plan_seed = bytes.fromhex(info.parameters["round_seed"])
            from unlearning.history_policy import HistoryPolicy

            kept = HistoryPolicy(self.config.history_max_records).select(info.cohort, plan_seed, round_index)
            stored = frozenset(kept & set(info.survivors))
        return RoundOutcome(round_index, "completed", len(info.cohort), len(info.survivors), records_stored=stored)

    def last_outcome(self, round_index: int) -> RoundOutcome | None:
        with self._lock:
            return self._outcomes.get(round_index)

    # --- recovery ----------------------------------------------------------------------------

    def _recover(self) -> None:
        records = self._journal.read()
        if not records:
            return
        head = records[0]
        next_round = self.repository.next_round_index(self.run_id)
        if head.kind != "start" or head.meta.get("round_index") != next_round:
            self._journal.clear()  # committed before the crash, or not a round journal at all
            return
        try:
            current = self._rebuild(head)
        except (ValueError, KeyError, TypeError, SecAggError, ConfigError, StorageError) as error:
            log.warning("round %s journal unusable (%s); discarding it", head.meta.get("round_index"), error)
            self._journal.clear()
            return
        self._open = current
        try:
            for record in records[1:]:
                self._replay(current, record)
            if current.server.stage in (MASKED_INPUT, UNMASK):
                self._charge_before_upload(current)
        except RoundAbortedError as error:
            current.abort_reason = str(error)
        except Exception as error:  # noqa: BLE001 - whatever fails, the round ends cleanly
            current.abort_reason = f"could not resume round {current.round_index} after a restart: {error}"
        if current.abort_reason is not None:
            current.abort_stage = current.abort_stage or current.server.stage or "aborted"
            self._commit_abort(current)
            return
        stage = current.server.stage
        timeout = self.settings.train_timeout if stage == ADVERTISE_KEYS else self.settings.stage_timeout
        current.deadline = self._clock() + timeout
        self.repository.append_audit(self.run_id, "round.resumed", {
            "stage": stage or "finishing", "messages": len(current.accepted)}, round_index=current.round_index)
        log.info("round %d resumed after a restart at stage %s", current.round_index, stage)

    def _rebuild(self, head: JournalRecord) -> _OpenRound:
        meta = head.meta
        config = AdvertiseKeysRequest.from_bytes(head.blob).config
        cohort = config.client_ids
        if config.round_index != meta["round_index"] or list(cohort) != sorted(meta["cohort"]):
            raise ValueError("the journaled round configuration does not match its header")
        plan = RoundPlan.from_bytes(config.application_config)
        if plan.dimension != self.dimension or plan.bits != self.bits:
            raise ValueError("the journaled plan does not fit this run's model")
        keys = {c.client_id: c.identity_public_key for c in self.repository.list_clients(self.run_id)}
        server = SecAggServer(config, {c: keys[c] for c in cohort})
        now = self._clock()
        return _OpenRound(RoundSetup(plan, config, config.neighbours_k, config.threshold), server,
                          datetime.fromisoformat(meta["started_at"]), now, time.process_time(), now,
                          self._parameters_bytes(), recorded=self._recorded(plan, cohort), resumed=True)

    def _replay(self, current: _OpenRound, record: JournalRecord) -> None:
        meta = record.meta
        if record.kind == "report":
            current.reports[int(meta["client"])] = ClientReport.from_meta(meta)
        elif record.kind == "record":
            current.records[int(meta["client"])] = record.blob
        elif record.kind == "message":
            client, stage = int(meta["client"]), meta["stage"]
            current.server.receive(client, record.blob)
            current.accepted[(stage, client)] = hashlib.sha256(record.blob).digest()
            current.upload_bytes += len(record.blob)
        elif record.kind == "close":
            stage = current.server.stage
            if meta.get("stage") != stage:
                raise ProtocolError(f"journal closes {meta.get('stage')} while {stage} is open")
            current.dropped[stage] = current.server.pending()
            current.server.advance()
        else:
            raise ProtocolError(f"unknown journal record {record.kind!r}")

    # --- operator views ----------------------------------------------------------------------

    def open_round_view(self) -> dict | None:
        """The open round for the operator: index, stage, cohort, who answered, deadline."""
        with self._lock:
            current = self._open
            if current is None:
                return None
            stage = current.server.stage
            pending = sorted(current.server.pending())
            return {"round_index": current.round_index, "stage": stage, "cohort": list(current.cohort),
                    "pending": pending, "resumed": current.resumed,
                    "stage_seconds_left": max(0.0, current.deadline - self._clock()),
                    "upload_bytes": current.upload_bytes}


def _sampled(rate: float) -> bool:
    """One Poisson-sampling coin with probability ``rate``, from the OS CSPRNG (amplification by
    sampling is part of the privacy guarantee, so the coin must be unpredictable)."""
    return secrets.randbits(_SAMPLING_BITS) < rate * (1 << _SAMPLING_BITS)
