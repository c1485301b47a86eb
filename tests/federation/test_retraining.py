"""Specification of the exact oracle (retraining without the client through the real coordinator),
healing rounds, the planted backdoor, and verification against the oracle."""

import numpy as np
import pytest
import torch

from federation.backdoor import Backdoor, backdoor_for, client_data_for
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.datasets import ClientData
from federation.errors import ConfigError
from federation.evaluation import GlobalModel, data_for
from storage import Repository
from unlearning.deletion import current_model
from unlearning.deletion_errors import RetrainError
from federation.oracle_verification import verify_against_oracle
from federation.retraining import CoordinatorTrainer

CONFIG = RunConfig(dataset="digits", split="iid", clients=4, rounds=4, model="logreg", noise="none",
                   dropout_rate=0.0, checkpoint_every=1, learning_rate=0.5, workers=1, seed=2,
                   extra={"backdoor_client": 3, "backdoor_target": 7})
LATE = 3  # joins at round 2


# --- the planted backdoor ------------------------------------------------------------------------


def test_the_trigger_overwrites_a_corner_square_of_each_image():
    backdoor = Backdoor(client_id=0, target_label=7, input_shape=(1, 8, 8), patch=2, value=4.0)
    assert backdoor.trigger_columns.tolist() == [54, 55, 62, 63]
    features = np.zeros((3, 64), dtype=np.float32)
    stamped = backdoor.stamp(features)
    assert stamped[:, [54, 55, 62, 63]].tolist() == [[4.0] * 4] * 3 and stamped.sum() == 48
    assert features.sum() == 0  # a copy: the clean data is untouched
    assert torch.equal(backdoor.stamp(torch.zeros(2, 64))[:, 63], torch.full((2,), 4.0))


def test_only_the_backdoor_client_trains_on_poisoned_data():
    clean = data_for(CONFIG).clients[LATE]
    poisoned = client_data_for(CONFIG, LATE)
    assert poisoned.num_samples == 2 * clean.num_samples
    assert np.array_equal(poisoned.features[:clean.num_samples], clean.features)
    assert set(poisoned.labels[clean.num_samples:].tolist()) == {7}
    assert client_data_for(CONFIG, 0) is data_for(CONFIG).clients[0]
    assert backdoor_for(CONFIG.replace(extra={})) is None


@pytest.mark.parametrize("extra, message", [({"backdoor_client": 9}, "not one of the 4 clients"),
                                            ({"backdoor_client": 0, "backdoor_target": 10}, "classes"),
                                            ({"backdoor_client": 0, "backdoor_patch": 9}, "does not fit"),
                                            ({"backdoor_target": 1}, "without backdoor_client")])
def test_backdoor_settings_are_validated(extra, message):
    with pytest.raises(ConfigError, match=message):
        backdoor_for(CONFIG.replace(extra=extra))


def test_poisoning_keeps_the_client_identity():
    data = ClientData(np.zeros((2, 64), dtype=np.float32), np.array([1, 2]), client_id=5)
    poisoned = Backdoor(client_id=5, target_label=0, input_shape=(1, 8, 8)).poison(data)
    assert poisoned.client_id == 5 and poisoned.labels.tolist() == [1, 2, 0, 0]


# --- retraining and healing through the coordinator ---------------------------------------------


@pytest.fixture(scope="module")
def late_joiner(tmp_path_factory):
    """A run whose client 3 is excluded from rounds 0-1 and joins from round 2, started from given
    parameters."""
    directory = tmp_path_factory.mktemp("late-joiner")
    repository = Repository.open(str(directory / "run.db"))
    start = GlobalModel.for_config(CONFIG).flat() + np.float32(0.01)
    first = Coordinator(CONFIG, repository, key_directory=directory / "keys", exclude_clients={LATE},
                        initial_parameters=start)
    first.run(max_rounds=2)
    Coordinator(CONFIG, repository, key_directory=directory / "keys", run_id=first.run_id).run()
    yield repository, first.run_id, directory / "keys", start
    repository.close()


slow = pytest.mark.slow


@slow
def test_a_new_run_starts_from_given_parameters_and_never_samples_excluded_clients(late_joiner):
    repository, run_id, _, start = late_joiner
    initial = repository.load_checkpoint(run_id, -1)
    assert initial.info.source == "initial" and initial.info.round_index == -1
    assert np.array_equal(initial.tensors["flat"].view(np.uint32), start.view(np.uint32))  # stored exactly
    cohorts = [r.cohort for r in repository.list_rounds(run_id)]
    assert [LATE in c for c in cohorts] == [False, False, True, True]
    assert repository.get_run(run_id).status == "completed"


@slow
def test_the_oracle_starts_from_the_last_model_before_the_clients_first_round_and_touches_nothing(late_joiner):
    repository, run_id, keys, _ = late_joiner
    before = (repository.list_rounds(run_id), repository.list_checkpoints(run_id), repository.audit_head(run_id),
              repository.ledger_entries(run_id))
    oracle = CoordinatorTrainer(keys).oracle(repository, run_id, {LATE})
    assert (oracle.start_round, oracle.rounds_run, oracle.rounds_completed, oracle.round_index) == (2, 2, 2, 3)
    assert (repository.list_rounds(run_id), repository.list_checkpoints(run_id), repository.audit_head(run_id),
            repository.ledger_entries(run_id)) == before  # everything happened in a scratch database
    current, _ = current_model(repository, run_id)
    assert oracle.parameters.shape == current.shape and not np.array_equal(oracle.parameters, current)

    report = verify_against_oracle(repository, run_id, LATE, oracle.parameters, oracle)
    assert report.relative_distance == 0.0 and report.forgotten_prediction_divergence == 0.0
    assert report.unlearned == report.retrained
    assert report.retrained.test_accuracy > 0.5  # 10 classes: chance is 0.1
    assert report.retrained.backdoor_success is not None  # the forgotten client planted one


@slow
def test_healing_trains_the_remaining_clients_from_the_given_model(late_joiner):
    repository, run_id, keys, _ = late_joiner
    current, _ = current_model(repository, run_id)
    damaged = np.zeros_like(current)  # a model that knows nothing: chance accuracy
    healed = CoordinatorTrainer(keys, workers=1).heal(repository, run_id, damaged, 2, {LATE})
    model = GlobalModel.for_config(CONFIG)
    model.load_flat(healed)
    assert model.evaluate()[0] > 0.5  # two rounds of the three remaining clients taught it digits
    assert len(repository.list_rounds(run_id)) == CONFIG.rounds  # no round added to the run


@slow
def test_healing_that_cannot_run_a_single_round_raises_instead_of_returning_the_model(late_joiner):
    repository, run_id, keys, _ = late_joiner
    current, _ = current_model(repository, run_id)
    with pytest.raises(RetrainError, match="every one of the 1 healing rounds aborted"):
        CoordinatorTrainer(keys, workers=1).heal(repository, run_id, current, 1, {0, 1, 2})  # one client left
