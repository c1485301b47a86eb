"""The Python API on a user's own nn.Module and per-client DataLoaders (federation.workload).

The model and data below are nothing fedvault ships: a two-layer tanh network over generated
Gaussian blobs, with DataLoaders over TensorDatasets. The runs are real (worker processes,
SecAgg+ over serialized messages, SQLite, integer noise).
"""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cli.main import fedvault
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.errors import ConfigError, ResumeError
from federation.runner import execute_run
from federation.workload import Workload
from storage.repositories import Repository

pytestmark = pytest.mark.slow

CLASSES = 4
CENTRES = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])


class BlobNet(nn.Module):
    """Not one of fedvault's models: 2 -> 16 (tanh) -> 4."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, 16)
        self.out = nn.Linear(16, CLASSES)

    def forward(self, inputs):
        return self.out(torch.tanh(self.hidden(inputs)))


def _blobs(count: int, seed: int, classes=range(CLASSES)) -> TensorDataset:
    rng = np.random.default_rng(seed)
    labels = rng.choice(list(classes), size=count)
    features = CENTRES[labels] + 0.6 * rng.standard_normal((count, 2))
    return TensorDataset(torch.tensor(features, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64))


def _workload(count: int = 6, **changes) -> Workload:
    torch.manual_seed(0)
    # Label skew: each client sees two of the four classes.
    loaders = [DataLoader(_blobs(60, seed=c, classes=(c % CLASSES, (c + 1) % CLASSES)), batch_size=16, shuffle=True)
               for c in range(count)]
    settings = dict(model=BlobNet(), clients=loaders, test=DataLoader(_blobs(400, seed=99), batch_size=128),
                    name="blobs")
    settings.update(changes)
    return Workload(**settings)


CONFIG = RunConfig(rounds=4, local_epochs=2, learning_rate=0.2, clip_norm=2.0, dropout_rate=0.0, workers=2,
                   history=False, seed=1)


def _initial_flat(workload: Workload) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in workload.model.parameters()])


def test_a_user_model_and_loaders_train_privately_end_to_end(tmp_path):
    user_model = BlobNet()
    before = [p.detach().clone() for p in user_model.parameters()]
    workload = _workload(model=user_model)
    report = execute_run(CONFIG.replace(target_epsilon=20.0), db=str(tmp_path / "w.db"), out_dir=tmp_path / "out",
                         baseline=True, plots=False, progress=False, echo=None, workload=workload)
    # Chance is 0.25; user-level DP over only 6 clients costs accuracy against the float32 baseline.
    assert report["final_accuracy"] > 0.5, report
    assert report["baseline_accuracy"] > 0.8
    assert report["parameters"] == 2 * 16 + 16 + 16 * CLASSES + CLASSES
    with Repository.open(str(tmp_path / "w.db")) as repository:
        run = repository.list_runs()[0]
        assert run.config["dataset"] == run.config["model"] == "custom"
        assert run.config["clients"] == 6 and run.config["extra"]["workload"] == "blobs"
        assert len(repository.list_rounds(run.id)) == 4
        assert {e.client_id for e in repository.ledger_entries(run.id)} == set(range(6))  # real noise, charged
    # The workload copies the user's module; the caller's weights are untouched.
    assert all(torch.equal(a, b) for a, b in zip(before, user_model.parameters()))


def test_a_workload_run_resumes_only_with_a_workload_of_its_shape(tmp_path):
    workload = _workload()
    config = CONFIG.replace(noise="none")
    with Repository.open(str(tmp_path / "r.db")) as repository:
        first = Coordinator(config, repository, key_directory=tmp_path / "keys", workload=workload)
        assert np.array_equal(first.model.flat(), _initial_flat(workload))  # the user's initial weights
        first.run(max_rounds=2)
        run_id = first.run_id
        with pytest.raises(ResumeError, match="Workload"):
            Coordinator(config, repository, key_directory=tmp_path / "keys", run_id=run_id)
        with pytest.raises(ConfigError, match="6 clients"):
            Coordinator(config, repository, key_directory=tmp_path / "keys", run_id=run_id,
                        workload=_workload(count=5))
        resumed = Coordinator(config, repository, key_directory=tmp_path / "keys", run_id=run_id, workload=workload)
        assert resumed.start_round == 2
        summary = resumed.run()
        assert [r.round_index for r in summary.rounds] == [2, 3]
        assert summary.final_accuracy > 0.7
        assert repository.get_run(run_id).status == "completed"


def _not_picklable_loss(logits, targets):
    return nn.functional.cross_entropy(logits, targets)


def test_a_workload_that_cannot_reach_the_workers_is_refused_before_anything_is_stored(tmp_path):
    local_loss = lambda logits, targets: _not_picklable_loss(logits, targets)  # noqa: E731
    with Repository.open(str(tmp_path / "p.db")) as repository:
        with pytest.raises(ConfigError, match="module level"):
            Coordinator(CONFIG, repository, key_directory=tmp_path / "keys", workload=_workload(loss=local_loss))
        assert repository.list_runs() == []


@pytest.mark.parametrize("changes, message", [
    ({"model": "not a module"}, "nn.Module"),
    ({"clients": []}, "at least 2 clients"),
    ({"clients": [DataLoader(_blobs(10, 0)), "data"]}, "client 1"),
    ({"clients": [DataLoader(_blobs(10, 0)), DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0)))]},
     "no training examples"),
    ({"test": np.zeros((3, 2))}, "test data"),
])
def test_malformed_workloads_are_refused_with_the_reason(changes, message):
    with pytest.raises(ConfigError, match=message):
        _workload(**changes)


def test_the_cli_refuses_to_resume_a_workload_run_in_one_line(tmp_path):
    db = str(tmp_path / "c.db")
    with Repository.open(db) as repository:
        Coordinator(CONFIG.replace(noise="none"), repository, key_directory=tmp_path / "keys",
                    workload=_workload()).run(max_rounds=1)
    result = CliRunner().invoke(fedvault, ["run", "--db", db, "--out", str(tmp_path / "out"), "--resume", "1"])
    assert result.exit_code != 0
    assert "Workload" in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_locodl_and_fedp3_need_the_built_in_models():
    with pytest.raises(ConfigError, match="logreg"):
        _workload().bind(RunConfig(trainer="locodl", history=False))
    with pytest.raises(ConfigError, match="fedp3 runs on the built-in models"):
        _workload().bind(RunConfig(trainer="fedp3", model="cnn", history=False))


def test_the_retrained_oracle_of_a_workload_run_trains_the_same_workload(tmp_path):
    from federation.retraining import CoordinatorTrainer

    workload = _workload()
    config = CONFIG.replace(noise="none", rounds=2)
    with Repository.open(str(tmp_path / "u.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys", workload=workload)
        coordinator.run()
        oracle = CoordinatorTrainer(tmp_path / "keys", workload=workload).retrain(repository, coordinator.run_id, {0})
        assert oracle.rounds_run == 2 and oracle.rounds_completed == 2
        assert oracle.parameters.shape == (workload.parameter_count,)
        assert not np.array_equal(oracle.parameters, coordinator.model.flat())  # trained without client 0
        with pytest.raises(ConfigError, match="Workload"):
            CoordinatorTrainer(tmp_path / "keys").retrain(repository, coordinator.run_id, {0})


def test_a_dp_deletion_on_a_workload_run_is_verified_against_its_own_oracle(tmp_path):
    from federation.keystore import load_keys
    from federation.oracle_verification import VERIFIED_EVENT, verify_model_version
    from federation.retraining import CoordinatorTrainer
    from federation.run_secrets import stored_run_history_secret
    from unlearning.deletion import unlearn_client
    from unlearning.errors import UnlearningInputError
    from unlearning.requests import sign_deletion_request

    workload = _workload()
    config = CONFIG.replace(rounds=2, history=True, workers=1)  # distributed noise; no dropouts: floor = 6
    with Repository.open(str(tmp_path / "u.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys", workload=workload)
        coordinator.run()
        keys = load_keys(tmp_path / "keys" / "client-0.key")
        secret = stored_run_history_secret(tmp_path / "keys" / "client-0.key", keys, repository, coordinator.run_id)
        outcome = unlearn_client(repository, sign_deletion_request(keys.identity, secret, coordinator.run_id, 0))
        ledger = repository.ledger_entries(coordinator.run_id)
        trainer = CoordinatorTrainer(tmp_path / "keys", workers=1, workload=workload)
        report, oracle = verify_model_version(repository, coordinator.run_id, 0, outcome.model_version, trainer)
        assert oracle.rounds_completed == 2  # five clients a round, one under the floor: the oracle releases nothing
        assert report.unlearned.backdoor_success is None and 0.0 <= report.retrained.test_accuracy <= 1.0
        assert 0.0 <= report.retrained.forgotten_accuracy <= 1.0 and report.relative_distance > 0.0
        assert repository.ledger_entries(coordinator.run_id) == ledger
        assert len(repository.audit_entries(coordinator.run_id, event=VERIFIED_EVENT)) == 1
        with pytest.raises(UnlearningInputError, match="verify it with the same Workload"):
            verify_model_version(repository, coordinator.run_id, 0, outcome.model_version,
                                 CoordinatorTrainer(tmp_path / "keys", workers=1))
