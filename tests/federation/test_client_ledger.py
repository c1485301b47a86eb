import os

import pytest

from federation.client_ledger import ClientLedger
from federation.client_runtime import ClientRefusedError, ClientRuntime
from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.round_plan import NoiseShare, RoundPlan, default_step
from privacy.errors import BudgetExceededError
from privacy.events import GaussianEvent
from privacy.mechanisms import DistributedNoise

DELTA = 1e-5


def test_charges_persist_and_replay(tmp_path):
    path = tmp_path / "client-1.ledger.json"
    ledger = ClientLedger(path, 1, budget_epsilon=10.0, delta=DELTA)
    ledger.charge(0, [("distributed", GaussianEvent(3.0))])
    ledger.charge(1, [("distributed", GaussianEvent(3.0)), ("dp-sgd", GaussianEvent(5.0))])
    again = ClientLedger(path, 1, budget_epsilon=10.0, delta=DELTA)
    assert again.epsilon == pytest.approx(ledger.epsilon, rel=1e-12) and again.epsilon > 0


def test_a_release_past_the_budget_is_refused_and_nothing_is_charged(tmp_path):
    ledger = ClientLedger(tmp_path / "c.json", 0, budget_epsilon=1.0, delta=DELTA)
    ledger.charge(0, [("distributed", GaussianEvent(8.0))])
    before = ledger.epsilon
    with pytest.raises(BudgetExceededError, match="declines round 1"):
        ledger.charge(1, [("distributed", GaussianEvent(1.0))])
    assert ledger.epsilon == before
    assert ClientLedger(tmp_path / "c.json", 0, budget_epsilon=1.0, delta=DELTA).epsilon == before


def test_the_runtime_declines_a_round_its_own_ledger_cannot_afford(tmp_path):
    config = RunConfig(clients=4, model="logreg", rounds=2, target_epsilon=2.0, budget_epsilon=0.5)
    model = GlobalModel.for_config(config)
    step = default_step(config.clip_norm, model.parameter_count, config.lattice)
    noise = DistributedNoise("skellam", 1.0, 2, 0, 50.0, 500.0, 1024)  # far too little noise for ε ≤ 0.5
    plan = RoundPlan(0, os.urandom(32), model.parameter_count, config.lattice, step, 20, config.clip_norm,
                     NoiseShare.of(noise))
    runtime = ClientRuntime(0, config, run_id=1, key_directory=tmp_path)
    with pytest.raises(ClientRefusedError, match="declines round 0"):
        runtime.prepare(plan.to_bytes(), model.flat())
    assert runtime._pending_input is None  # nothing was prepared for upload
