"""Budget ledger: charge before upload, refuse over budget (exactly at the edge), append-only chain."""

from __future__ import annotations

import dataclasses

import pytest

from privacy.accounting import RunningRdp, recompute_epsilon
from privacy.errors import BudgetExceededError, LedgerError
from privacy.events import (
    DiscreteGaussianEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
    SkellamEvent,
    event_from_json,
)
from privacy.ledger import GENESIS_HASH, BudgetLedger, verify_chain

DELTA = 1e-5
RELEASE = DiscreteGaussianEvent(sigma=20.0, l2_sensitivity=2.0)


def _epsilon_after(k: int, event=RELEASE) -> float:
    running = RunningRdp()
    for _ in range(k):
        running.add(event)
    return running.epsilon(DELTA)


def test_refusal_exactly_at_the_budget_edge():
    """Budget = epsilon after 5 releases: the 5th charge lands exactly on it and passes, the 6th
    is refused before anything is recorded."""
    ledger = BudgetLedger(budget_epsilon=_epsilon_after(5), delta=DELTA)
    for round_index in range(5):
        assert ledger.can_participate(7, RELEASE)
        ledger.charge(7, round_index, "update-ldp", RELEASE)
    assert ledger.epsilon(7) == ledger.budget(7)
    assert not ledger.can_participate(7, RELEASE)
    with pytest.raises(BudgetExceededError, match="nothing was charged"):
        ledger.charge(7, 5, "update-ldp", RELEASE)
    assert len(ledger.history(7)) == 5
    assert ledger.epsilon(7) == _epsilon_after(5)


def test_a_budget_a_hair_below_the_edge_refuses_that_charge():
    edge = _epsilon_after(3)
    ledger = BudgetLedger(budget_epsilon=edge * (1 - 1e-12), delta=DELTA)
    ledger.charge(1, 0, "update-ldp", RELEASE)
    ledger.charge(1, 1, "update-ldp", RELEASE)
    with pytest.raises(BudgetExceededError):
        ledger.charge(1, 2, "update-ldp", RELEASE)
    assert len(ledger.history(1)) == 2


def test_streams_compose_within_their_unit_and_units_stay_apart():
    ledger = BudgetLedger(budget_epsilon=50.0, delta=DELTA)
    ldp = SkellamEvent(400.0, 2.0, 4.0)
    sgd = SelfComposedEvent(PoissonSampledEvent(0.01, GaussianEvent(1.0)), 100)
    first = ledger.charge(3, 0, "update-ldp", ldp)
    record = ledger.charge(3, 0, "dp-sgd", sgd)
    second = ledger.charge(3, 1, "update-ldp", ldp)
    assert ledger.stream_epsilon(3, "update-ldp") == pytest.approx(recompute_epsilon([ldp, ldp], DELTA))
    assert ledger.stream_epsilon(3, "dp-sgd") == pytest.approx(recompute_epsilon([sgd], DELTA))
    # client-level (update noise) and record-level (DP-SGD) totals are never added
    assert ledger.epsilon(3) == pytest.approx(recompute_epsilon([ldp, ldp], DELTA), rel=1e-12)
    assert ledger.epsilon(3, "record") == pytest.approx(recompute_epsilon([sgd], DELTA), rel=1e-12)
    assert (first.epsilon_after, record.epsilon_after, second.epsilon_after) == (
        pytest.approx(recompute_epsilon([ldp], DELTA)), pytest.approx(recompute_epsilon([sgd], DELTA)),
        pytest.approx(recompute_epsilon([ldp, ldp], DELTA)))
    assert ledger.stream_epsilon(3, "distributed") == 0.0


def test_each_unit_has_its_own_budget():
    sgd = SelfComposedEvent(PoissonSampledEvent(0.05, GaussianEvent(1.0)), 50)
    ldp = SkellamEvent(400.0, 2.0, 4.0)
    per_round = recompute_epsilon([sgd], DELTA)
    ledger = BudgetLedger(budget_epsilon=50.0, delta=DELTA, record_budget_epsilon=per_round * 1.05)
    ledger.charge(1, 0, "dp-sgd", sgd)
    with pytest.raises(BudgetExceededError, match="record-level epsilon"):
        ledger.charge(1, 1, "dp-sgd", sgd)  # the record budget is spent ...
    ledger.charge(1, 1, "update-ldp", ldp)  # ... the client-level one is not
    assert ledger.budget(1, "record") == per_round * 1.05 and ledger.budget(1) == 50.0
    assert ledger.can_participate(1, ldp) and not ledger.can_participate(1, sgd, "record")


def test_entries_store_replayable_events_and_epsilon_after():
    ledger = BudgetLedger(budget_epsilon=20.0, delta=DELTA)
    events = [RELEASE, DistributedSkellamEvent(4.0, 10, 1.0, 1.0, survivors=12), RELEASE]
    entries = [ledger.charge(2, index, "update-ldp" if index != 1 else "distributed", e) for index, e in enumerate(events)]
    replay = RunningRdp()
    for entry, event in zip(entries, events):
        assert event_from_json(entry.event_json) == event
        replay.add(event_from_json(entry.event_json))
        assert entry.epsilon_after == pytest.approx(replay.epsilon(entry.delta), rel=1e-12)
        assert entry.delta == DELTA


def test_entries_convert_to_the_storage_write_record():
    from storage.entities import LedgerEntryWrite

    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA)
    entry = ledger.charge(4, 0, "update-ldp", RELEASE)
    write = LedgerEntryWrite(**dataclasses.asdict(entry))
    assert write.client_id == 4 and write.stream == "update-ldp"
    assert event_from_json(dict(write.event_json)) == RELEASE


def test_hash_chain_verifies_and_detects_tampering():
    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA)
    for round_index in range(4):
        ledger.charge(9, round_index, "update-ldp", RELEASE)
    chain = list(ledger.history(9))
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.entry_hash for earlier, later in zip(chain, chain[1:]))
    verify_chain(chain)

    edited_entry = dataclasses.replace(chain[2].entry, epsilon_after=0.0)
    edited = chain[:2] + [dataclasses.replace(chain[2], entry=edited_entry)] + chain[3:]
    with pytest.raises(LedgerError, match="entry 2: content"):
        verify_chain(edited)
    with pytest.raises(LedgerError):
        verify_chain(chain[:1] + chain[2:])  # a deleted entry
    with pytest.raises(LedgerError):
        verify_chain([chain[1], chain[0]] + chain[2:])  # reordered


def test_replay_rebuilds_the_ledger_and_checks_stored_epsilons():
    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA)
    for client in (1, 2):
        for round_index in range(3):
            ledger.charge(client, round_index, "update-ldp", RELEASE)
    rebuilt = BudgetLedger.replay(10.0, DELTA, [ledger.history(1), ledger.history(2)])
    assert rebuilt.epsilon(1) == ledger.epsilon(1) and rebuilt.epsilon(2) == ledger.epsilon(2)
    assert rebuilt.history(2) == ledger.history(2)


def test_the_ledger_is_append_only_in_rounds():
    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA)
    ledger.charge(5, 3, "update-ldp", RELEASE)
    ledger.charge(5, 3, "dp-sgd", GaussianEvent(5.0))
    with pytest.raises(LedgerError, match="append-only"):
        ledger.charge(5, 2, "update-ldp", RELEASE)
    assert len(ledger.history(5)) == 2


def test_per_client_budgets_and_server_side_eligibility():
    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA, budgets={2: _epsilon_after(1) * 1.0001})
    ledger.charge(2, 0, "update-ldp", RELEASE)
    ledger.charge(1, 0, "update-ldp", RELEASE)
    assert ledger.eligible([1, 2, 3], RELEASE) == [1, 3]
    assert ledger.max_epsilon() == pytest.approx(_epsilon_after(1))
    assert ledger.clients() == (1, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger: ledger.charge(1, 0, "telemetry", RELEASE),
        lambda ledger: ledger.charge(-1, 0, "update-ldp", RELEASE),
        lambda ledger: ledger.charge(1, True, "update-ldp", RELEASE),
        lambda ledger: ledger.charge(1, 0, "update-ldp", {"type": "gaussian"}),
    ],
)
def test_bad_charges_are_refused_and_record_nothing(call):
    from privacy.errors import EventFormatError

    ledger = BudgetLedger(budget_epsilon=10.0, delta=DELTA)
    with pytest.raises((LedgerError, EventFormatError)):
        call(ledger)
    assert ledger.clients() == ()


def test_ledger_parameters_are_validated():
    with pytest.raises(LedgerError):
        BudgetLedger(budget_epsilon=0.0, delta=DELTA)
    with pytest.raises(LedgerError):
        BudgetLedger(budget_epsilon=1.0, delta=1.0)
    with pytest.raises(LedgerError):
        BudgetLedger(budget_epsilon=1.0, delta=DELTA, budgets={3: float("inf")})
