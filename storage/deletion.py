"""The deletion-request state machine (pure; the repository persists it).

::

    requested ──► opened ──► unlearned ──► shredded
        │            │            │
        └────────────┴────────────┴──────► failed (with a reason)

``requested``: the client asked, authenticated by its identity key. ``opened``: it released its
history secret, the commitment matched and its records can be opened. ``unlearned``: a new model
version without its contribution is stored. ``shredded``: its records are destroyed and the
client is marked deleted. ``shredded`` and ``failed`` are terminal; after ``failed`` a new request
may be made. Moving to the state a request is already in is an idempotent no-op, so a step
retried after a crash does not fail.
"""

from __future__ import annotations

from types import MappingProxyType

from storage.errors import InvalidTransitionError, StorageValueError
from storage.schema import DELETION_STATES, DELETION_TERMINAL_STATES

ALLOWED_TRANSITIONS = MappingProxyType(
    {
        "requested": frozenset({"opened", "failed"}),
        "opened": frozenset({"unlearned", "failed"}),
        "unlearned": frozenset({"shredded", "failed"}),
        "shredded": frozenset(),
        "failed": frozenset(),
    }
)


def check_transition(current: str, target: str, *, reason: str | None) -> bool:
    """Whether moving ``current`` -> ``target`` changes anything (False: already there).

    Raises InvalidTransitionError for an edge the machine does not have, and StorageValueError
    for an unknown state or a ``failed`` transition without a reason.
    """
    for state in (current, target):
        if state not in DELETION_STATES:
            raise StorageValueError(f"unknown deletion state {state!r}; states are {', '.join(DELETION_STATES)}")
    if target == "failed" and not (isinstance(reason, str) and reason.strip()):
        raise StorageValueError("a deletion request can only fail with a reason")
    if reason is not None and target != "failed":
        raise StorageValueError("only a transition to 'failed' takes a reason")
    if current == target:
        return False
    if target not in ALLOWED_TRANSITIONS[current]:
        if current in DELETION_TERMINAL_STATES:
            raise InvalidTransitionError(f"deletion request is {current}, a final state; it cannot become {target}")
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current]))
        raise InvalidTransitionError(f"deletion request cannot go from {current} to {target} (from {current}: {allowed})")
    return True
