"""Retraining, the verification oracle and healing on runs with distributed DP noise, where the
clients' budgets are spent and the survivor floor binds: the oracle replays the run's own cohorts
in a scratch space and touches nothing of the run; what releases a model (``--method retrain``,
healing) is charged to the run's ledger, and when it cannot be, the deletion request fails with
the reason and nothing applied."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.keystore import load_keys
from federation.oracle_verification import VERIFIED_EVENT, verify_model_version
from federation.privacy_plan import noise_floor
from federation.retraining import CoordinatorTrainer
from federation.run_secrets import stored_run_history_secret
from storage import Repository
from unlearning.deletion import UnlearningSettings, current_model, unlearn_client
from unlearning.deletion_errors import RetrainError
from unlearning.requests import sign_deletion_request

from tests.unlearning.conftest import copy_database

pytestmark = pytest.mark.slow

CLIENT = 2
# Every client takes part in every round and nobody drops out: the noise floor is the whole
# cohort, so every round without the client is one under it, and the budgets are spent at the end.
TIGHT = RunConfig(dataset="digits", split="iid", clients=8, rounds=2, model="logreg", dropout_rate=0.0,
                  learning_rate=0.5, workers=1, seed=5)
# Dropouts lower the floor under the remaining cohort, and a budget ten times the target leaves
# room for healing rounds (the case that raised LedgerError before).
ROOMY = TIGHT.replace(dropout_rate=0.1, budget_epsilon=80.0, seed=6)


def _trained(tmp_path_factory, config, name):
    directory = tmp_path_factory.mktemp(name)
    with Repository.open(str(directory / "run.db")) as repository:
        Coordinator(config, repository, key_directory=directory / "keys").run()
    return directory


@pytest.fixture(scope="module")
def tight_template(tmp_path_factory):
    return _trained(tmp_path_factory, TIGHT, "tight")


@pytest.fixture(scope="module")
def roomy_template(tmp_path_factory):
    return _trained(tmp_path_factory, ROOMY, "roomy")


def _copy(template, tmp_path):
    copy_database(str(template / "run.db"), str(tmp_path / "run.db"))
    return Repository.open(str(tmp_path / "run.db")), template / "keys"


def _snapshot(repository, keys):
    return (repository.list_rounds(1), repository.list_checkpoints(1), repository.ledger_entries(1),
            repository.list_deletion_requests(1), sorted(os.listdir(keys)),
            [(c.client_id, c.status) for c in repository.list_clients(1)])


def _request(keys, repository, client=CLIENT):
    identity = load_keys(keys / f"client-{client}.key")
    secret = stored_run_history_secret(keys / f"client-{client}.key", identity, repository, 1)
    return sign_deletion_request(identity.identity, secret, 1, client)


def test_the_oracle_of_a_dp_run_replays_its_cohorts_below_the_survivor_floor_and_touches_nothing(tight_template,
                                                                                             tmp_path):
    repository, keys = _copy(tight_template, tmp_path)
    with repository:
        rounds = repository.list_rounds(1)
        assert all(len(r.survivors) == TIGHT.clients for r in rounds) and noise_floor(TIGHT) == TIGHT.clients
        before, head = _snapshot(repository, keys), repository.audit_head(1)
        oracle = CoordinatorTrainer(keys).oracle(repository, 1, {CLIENT})
        assert (oracle.start_round, oracle.rounds_run, oracle.rounds_completed) == (0, 2, 2)
        assert _snapshot(repository, keys) == before and repository.audit_head(1) == head
        current, _ = current_model(repository, 1)
        assert np.all(np.isfinite(oracle.parameters)) and not np.array_equal(oracle.parameters, current)


def test_verifying_a_dp_deletion_writes_only_its_audit_entry(tight_template, tmp_path):
    repository, keys = _copy(tight_template, tmp_path)
    with repository:
        outcome = unlearn_client(repository, _request(keys, repository))
        before, audit = _snapshot(repository, keys), repository.audit_entries(1)
        report, oracle = verify_model_version(repository, 1, CLIENT, outcome.model_version, CoordinatorTrainer(keys))
        assert oracle.rounds_completed == 2 and report.retrained.test_accuracy > 0.2  # chance is 0.1
        assert _snapshot(repository, keys) == before
        assert [e.event for e in repository.audit_entries(1)] == [e.event for e in audit] + [VERIFIED_EVENT]
        (entry,) = repository.audit_entries(1, event=VERIFIED_EVENT)
        assert entry.payload["model_version"] == outcome.model_version and repository.verify_audit_log(1).ok


@pytest.mark.parametrize("settings, reason", [
    (UnlearningSettings(method="retrain"), "every one of the 2 retraining rounds aborted"),
    (UnlearningSettings(heal_rounds=2), "every one of the 2 healing rounds aborted"),
])
def test_releasing_retraining_on_spent_budgets_fails_the_request_with_the_reason(tight_template, tmp_path,
                                                                                 settings, reason):
    repository, keys = _copy(tight_template, tmp_path)
    with repository:
        before = _snapshot(repository, keys)
        with pytest.raises(RetrainError, match=reason):
            unlearn_client(repository, _request(keys, repository), settings=settings, trainer=CoordinatorTrainer(keys))
        (request,) = repository.list_deletion_requests(1, CLIENT)
        assert request.state == "failed" and request.reason.startswith(f"RetrainError: {reason}")
        rounds, checkpoints, ledger, _, files, clients = _snapshot(repository, keys)
        assert (rounds, checkpoints, ledger, files, clients) == (before[0], before[1], before[2], before[4], before[5])
        assert repository.count_sealed_records(1, CLIENT) > 0 and repository.verify_audit_log(1).ok


def test_healing_on_a_larger_budget_is_charged_after_the_runs_rounds_and_completes(roomy_template, tmp_path):
    repository, keys = _copy(roomy_template, tmp_path)
    with repository:
        before = len(repository.ledger_entries(1))
        outcome = unlearn_client(repository, _request(keys, repository), settings=UnlearningSettings(heal_rounds=2),
                                 trainer=CoordinatorTrainer(keys))
        assert repository.get_deletion_request(outcome.request_id).state == "shredded"
        added = repository.ledger_entries(1)[before:]
        assert added and {e.round_index for e in added} == {ROOMY.rounds - 1}
        assert CLIENT not in {e.client_id for e in added}
        assert repository.verify_ledger(1).ok and repository.verify_audit_log(1).ok
    audit = CliRunner().invoke(fedvault, ["audit", "--db", str(tmp_path / "run.db"), "--run", "1"])
    assert audit.exit_code == 0, audit.output  # ε recomputes from the ledger, healing rounds included


def test_retraining_as_the_deletion_method_on_a_larger_budget_stores_a_charged_model(roomy_template, tmp_path):
    repository, keys = _copy(roomy_template, tmp_path)
    with repository:
        before = len(repository.ledger_entries(1))
        outcome = unlearn_client(repository, _request(keys, repository), settings=UnlearningSettings(method="retrain"),
                                 trainer=CoordinatorTrainer(keys))
        assert outcome.method == "retrain" and outcome.rounds_walked == 2
        assert len(repository.ledger_entries(1)) > before and repository.verify_ledger(1).ok
