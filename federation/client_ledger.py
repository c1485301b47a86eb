"""A client's own privacy ledger: it charges each release before upload and refuses past its budget.

The server keeps the authoritative ledger, but a client does not have to trust it: it replays its
own charges from a local file (beside its key file, replaced atomically) and declines a round whose
releases would take it past its budget, saying why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from federation.keystore import write_private_file
from privacy.errors import BudgetExceededError
from privacy.units import unit_of_stream
from privacy.events import ComposedEvent, event_from_json, event_to_json
from privacy.ledger import BudgetLedger


class ClientLedger:
    def __init__(self, path: Path, client_id: int, budget_epsilon: float, delta: float,
                 record_budget_epsilon: float | None = None) -> None:
        self.path = Path(path)
        self.client_id = client_id
        self._ledger = BudgetLedger(budget_epsilon, delta, record_budget_epsilon=record_budget_epsilon)
        self._entries: list[dict] = []
        if self.path.exists():
            for entry in json.loads(self.path.read_text()):
                self._ledger.charge(client_id, entry["round"], entry["stream"], event_from_json(entry["event"]))
                self._entries.append(entry)

    @property
    def epsilon(self) -> float:
        return self._ledger.epsilon(self.client_id)

    def check(self, round_index: int, releases: Sequence[tuple[str, object]]) -> None:
        """Raise BudgetExceededError (nothing charged) if this round's releases would pass the budget."""
        by_unit: dict[str, list] = {}
        for stream, event in releases:  # each unit against its own budget (privacy.units)
            by_unit.setdefault(unit_of_stream(stream), []).append(event)
        for unit, events in sorted(by_unit.items()):
            projected = self._ledger.projected_epsilon(self.client_id, ComposedEvent(tuple(events)), unit)
            budget = self._ledger.budget(self.client_id, unit)
            if projected > budget:
                raise BudgetExceededError(
                    f"client {self.client_id} declines round {round_index}: its releases would take it to "
                    f"{unit}-level epsilon {projected:.4g} > its budget {budget:g}")

    def charge(self, round_index: int, releases: Sequence[tuple[str, object]]) -> None:
        """Charge every release of the round (checked first as a whole), then persist."""
        self.check(round_index, releases)
        for stream, event in releases:
            self._ledger.charge(self.client_id, round_index, stream, event)
            self._entries.append({"round": round_index, "stream": stream, "event": event_to_json(event)})
        write_private_file(self.path, json.dumps(self._entries).encode())
