"""The privacy-budget ledger's logic (storage-agnostic): charge before upload, refuse over budget.

Every release is charged *before* the client uploads. A charge whose projected epsilon would
pass the client's budget raises :class:`BudgetExceededError` and records nothing; a projected
epsilon exactly at the budget is allowed. Each client has separate streams ("update-ldp" for
update-level LDP, "dp-sgd" for sample-level DP-SGD, "distributed" for its share of distributed
noise). Streams are in units (``privacy.units``): "distributed" and "update-ldp" are
client-level, "dp-sgd" is record-level. Each unit has its own budget and its own total (RDP
addition over that unit's streams): a record-level ε and a client-level ε measure different
things and are never added. ``epsilon_after`` is the total of the charged stream's unit.

Entries are append-only. Each is also kept as a :class:`ChainedLedgerEntry` whose SHA-256 hash
covers the entry (with its event JSON), its sequence number and its predecessor's hash, so
whoever persists them can verify the chain (:func:`verify_chain`). The ledger's
``epsilon_after`` is the running RDP accountant's (``privacy.accounting.RunningRdp``) at the
ledger's delta, so any auditor can replay it from the stored events.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy.accounting import RunningRdp
from privacy.errors import BudgetExceededError, LedgerError
from privacy.events import Event, _check_event, event_from_json, event_to_json
from privacy.units import CLIENT, RECORD, unit_of_stream

STREAMS = ("update-ldp", "dp-sgd", "distributed")
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class LedgerEntry:
    """One charge: ``event_json`` is :func:`privacy.events.event_to_json` of the release's event,
    ``epsilon_after`` the client's total epsilon in the stream's unit at ``delta`` once charged."""

    client_id: int
    round_index: int
    stream: str
    event_json: dict[str, Any]
    epsilon_after: float
    delta: float


@dataclass(frozen=True)
class ChainedLedgerEntry:
    """A ledger entry in its client's hash chain: ``entry_hash`` = SHA-256 of the canonical JSON
    of (entry fields, ``sequence``, ``prev_hash``)."""

    entry: LedgerEntry
    sequence: int
    prev_hash: str
    entry_hash: str


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: LedgerEntry, sequence: int, prev_hash: str) -> str:
    """The chain hash of ``entry`` at ``sequence`` after ``prev_hash`` (hex SHA-256)."""
    content = {
        "client_id": entry.client_id,
        "round_index": entry.round_index,
        "stream": entry.stream,
        "event": entry.event_json,
        "epsilon_after": entry.epsilon_after,
        "delta": entry.delta,
        "sequence": sequence,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(content)).hexdigest()


def verify_chain(chain: Sequence[ChainedLedgerEntry]) -> None:
    """Check one client's chain: sequences 0, 1, 2, ..., each hash recomputes and links to its
    predecessor, one client id, non-decreasing rounds, parseable events. Raises LedgerError
    naming the first bad entry."""
    previous = GENESIS_HASH
    client = None
    last_round = -1
    for position, item in enumerate(chain):
        entry = item.entry
        if item.sequence != position:
            raise LedgerError(f"entry {position}: sequence {item.sequence}, expected {position}")
        if client is None:
            client = entry.client_id
        elif entry.client_id != client:
            raise LedgerError(f"entry {position}: client {entry.client_id} in the chain of client {client}")
        if item.prev_hash != previous:
            raise LedgerError(f"entry {position}: prev_hash does not match entry {position - 1}")
        if entry_hash(entry, item.sequence, item.prev_hash) != item.entry_hash:
            raise LedgerError(f"entry {position}: content does not match its hash")
        if entry.round_index < last_round:
            raise LedgerError(f"entry {position}: round {entry.round_index} after round {last_round}")
        event_from_json(entry.event_json)
        last_round = entry.round_index
        previous = item.entry_hash


@dataclass
class _ClientAccount:
    units: dict[str, RunningRdp] = field(default_factory=dict)
    streams: dict[str, RunningRdp] = field(default_factory=dict)
    chain: list[ChainedLedgerEntry] = field(default_factory=list)


def _check_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LedgerError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _check_budget(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LedgerError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise LedgerError(f"{name} must be finite and > 0, got {value}")
    return value


class BudgetLedger:
    """Per-client privacy budgets at one delta, one per unit.

    ``budget_epsilon`` is every client's client-level budget unless ``budgets`` overrides it for
    some clients; ``record_budget_epsilon`` every client's record-level budget (default: the
    same number as ``budget_epsilon``, in the other unit).
    """

    def __init__(
        self, budget_epsilon: float, delta: float, budgets: Mapping[int, float] | None = None,
        record_budget_epsilon: float | None = None,
    ) -> None:
        self._default_budget = _check_budget(budget_epsilon, "budget_epsilon")
        self._record_budget = self._default_budget if record_budget_epsilon is None else \
            _check_budget(record_budget_epsilon, "record_budget_epsilon")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < float(delta) < 1:
            raise LedgerError(f"delta must be in (0, 1), got {delta!r}")
        self._delta = float(delta)
        self._budgets = {
            _check_id(client, "client id"): _check_budget(value, f"budget of client {client}")
            for client, value in (budgets or {}).items()
        }
        self._accounts: dict[int, _ClientAccount] = {}

    @property
    def delta(self) -> float:
        return self._delta

    def budget(self, client_id: int, unit: str = CLIENT) -> float:
        """The epsilon budget of ``client_id`` in ``unit``."""
        client_id = _check_id(client_id, "client_id")
        if unit == RECORD:
            return self._record_budget
        return self._budgets.get(client_id, self._default_budget)

    def epsilon(self, client_id: int, unit: str = CLIENT) -> float:
        """The client's total epsilon so far in ``unit`` (its streams of that unit composed)."""
        account = self._accounts.get(_check_id(client_id, "client_id"))
        if account is None or unit not in account.units:
            return 0.0
        return account.units[unit].epsilon(self._delta)

    def stream_epsilon(self, client_id: int, stream: str) -> float:
        """epsilon of one of the client's streams on its own."""
        self._check_stream(stream)
        account = self._accounts.get(_check_id(client_id, "client_id"))
        if account is None or stream not in account.streams:
            return 0.0
        return account.streams[stream].epsilon(self._delta)

    def projected_epsilon(self, client_id: int, event: Event, unit: str = CLIENT) -> float:
        """The client's total epsilon in ``unit`` if ``event`` (of that unit) were charged next."""
        _check_event(event, "event")
        account = self._accounts.get(_check_id(client_id, "client_id"))
        running = RunningRdp() if account is None else account.units.get(unit, RunningRdp())
        return running.projected_epsilon(event, self._delta)

    def can_participate(self, client_id: int, event: Event, unit: str = CLIENT) -> bool:
        """Whether charging ``event`` would keep the client within its budget (equal is within)."""
        return self.projected_epsilon(client_id, event, unit) <= self.budget(client_id, unit)

    def eligible(self, client_ids: Iterable[int], event: Event) -> list[int]:
        """The clients of ``client_ids`` that can take part in a release of ``event`` (the server
        samples only among these)."""
        return [client for client in client_ids if self.can_participate(client, event)]

    def charge(self, client_id: int, round_index: int, stream: str, event: Event) -> LedgerEntry:
        """Charge ``event`` to the client's ``stream`` before its upload; returns the entry.

        Raises BudgetExceededError (nothing recorded) when the projected epsilon exceeds the
        client's budget, LedgerError for a bad stream or a round earlier than the client's last.
        """
        client_id = _check_id(client_id, "client_id")
        round_index = _check_id(round_index, "round_index")
        self._check_stream(stream)
        _check_event(event, "event")
        account = self._accounts.get(client_id)
        if account is not None and account.chain and round_index < account.chain[-1].entry.round_index:
            raise LedgerError(
                f"client {client_id}: round {round_index} charged after round {account.chain[-1].entry.round_index}; "
                "the ledger is append-only"
            )
        unit = unit_of_stream(stream)
        projected = self.projected_epsilon(client_id, event, unit)
        budget = self.budget(client_id, unit)
        if projected > budget:
            raise BudgetExceededError(
                f"client {client_id} would reach {unit}-level epsilon {projected:.6g} > budget {budget:g} "
                f"(delta {self._delta:g}) with this {stream} release in round {round_index}; nothing was charged"
            )
        if account is None:
            account = self._accounts[client_id] = _ClientAccount()
        account.units.setdefault(unit, RunningRdp()).add(event)
        account.streams.setdefault(stream, RunningRdp()).add(event)
        entry = LedgerEntry(
            client_id=client_id,
            round_index=round_index,
            stream=stream,
            event_json=event_to_json(event),
            # The same vector sum and conversion as the projection: bit-identical to
            # account.units[unit].epsilon(delta), without converting twice.
            epsilon_after=projected,
            delta=self._delta,
        )
        sequence = len(account.chain)
        previous = account.chain[-1].entry_hash if account.chain else GENESIS_HASH
        account.chain.append(ChainedLedgerEntry(entry, sequence, previous, entry_hash(entry, sequence, previous)))
        return entry

    def history(self, client_id: int) -> tuple[ChainedLedgerEntry, ...]:
        """The client's chained entries, oldest first (a snapshot; the ledger only appends)."""
        account = self._accounts.get(_check_id(client_id, "client_id"))
        return () if account is None else tuple(account.chain)

    def clients(self) -> tuple[int, ...]:
        """Clients with at least one charge, sorted."""
        return tuple(sorted(self._accounts))

    def max_epsilon(self, unit: str = CLIENT) -> float:
        """The largest total epsilon in ``unit`` of any client (0 for an empty ledger)."""
        return max((self.epsilon(client, unit) for client in self._accounts), default=0.0)

    @classmethod
    def replay(
        cls,
        budget_epsilon: float,
        delta: float,
        chains: Iterable[Sequence[ChainedLedgerEntry]],
        budgets: Mapping[int, float] | None = None,
    ) -> "BudgetLedger":
        """Rebuild a ledger from stored chains: verify each chain, re-charge its events in order
        and check every stored ``epsilon_after`` (to 1e-9 relative); LedgerError on any mismatch."""
        ledger = cls(budget_epsilon, delta, budgets)
        for chain in chains:
            verify_chain(chain)
            for item in chain:
                stored = item.entry
                if stored.delta != ledger.delta:
                    raise LedgerError(f"entry {item.sequence}: delta {stored.delta} differs from the ledger's {delta}")
                recharged = ledger.charge(
                    stored.client_id, stored.round_index, stored.stream, event_from_json(stored.event_json)
                )
                if not math.isclose(recharged.epsilon_after, stored.epsilon_after, rel_tol=1e-9, abs_tol=1e-12):
                    raise LedgerError(
                        f"client {stored.client_id} entry {item.sequence}: stored epsilon_after "
                        f"{stored.epsilon_after} but its events give {recharged.epsilon_after}"
                    )
        return ledger

    @staticmethod
    def _check_stream(stream: str) -> None:
        if stream not in STREAMS:
            raise LedgerError(f"unknown stream {stream!r}; streams are {STREAMS}")
