"""The retraining oracle (federation.retraining.CoordinatorTrainer) of runs whose trainer keeps no
MEDU records: LoCoDL and LDP-FedP3 runs are unlearned by retraining through their own trainer."""

import numpy as np
import pytest

from federation.config import RunConfig
from federation.coordinator import Coordinator
from storage.repositories import Repository
from federation.retraining import CoordinatorTrainer

pytestmark = pytest.mark.slow

CONFIGS = {
    "locodl": RunConfig(trainer="locodl", clients=6, rounds=2, noise="none", history=False, clip_norm=5.0,
                        dropout_rate=0.0, seed=1),
    "fedp3": RunConfig(trainer="fedp3", model="cnn", fedp3_policy="OPU2", split="iid", clients=6, rounds=2,
                       local_epochs=1, noise="none", history=False, dropout_rate=0.0, seed=1),
}


@pytest.mark.parametrize("trainer", sorted(CONFIGS))
def test_a_run_without_records_is_retrained_without_the_client_by_its_own_trainer(tmp_path, trainer):
    config = CONFIGS[trainer]
    with Repository.open(str(tmp_path / "r.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys")
        coordinator.run()
        oracle = CoordinatorTrainer(tmp_path / "keys").retrain(repository, coordinator.run_id, {0})
        assert (oracle.start_round, oracle.rounds_run, oracle.rounds_completed) == (0, 2, 2)
        assert oracle.parameters.shape == (coordinator.dimension,) and np.all(np.isfinite(oracle.parameters))
        assert not np.allclose(oracle.parameters, coordinator.model.flat())  # trained without client 0
        assert repository.get_run(coordinator.run_id).status == "completed"  # the run itself is untouched
