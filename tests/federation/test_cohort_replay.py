"""The replayed cohorts of the unlearning oracle and of retraining (federation.cohort_replay), and
the lowered survivor floor of a round that is never released (round_logic.open_round)."""

import pytest

from federation.cohort_replay import CohortReplay
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.errors import ConfigError, ResumeError
from federation.round_logic import open_round
from federation.round_plan import NoiseShare
from storage import Repository

CONFIG = RunConfig(dataset="digits", clients=8, model="logreg", noise="none", rounds=3, workers=1)


def test_each_round_replays_its_own_cohort_without_the_excluded_clients():
    replay = CohortReplay([[3, 1, 2], [0, 2, 2], []], released=False)
    assert replay.rounds == 3 and replay.cohorts == ((1, 2, 3), (0, 2), ())
    assert replay.cohort(0, frozenset({2})) == [1, 3]
    assert replay.cohort(1, frozenset()) == [0, 2] and replay.cohort(2, frozenset({0})) == []
    with pytest.raises(ResumeError, match="the replay has 3 rounds; round 3 is not one of them"):
        replay.cohort(3, frozenset())
    with pytest.raises(ResumeError, match="released must be a bool"):
        CohortReplay([[0, 1]], released=1)


def test_a_replay_starts_a_new_run_and_is_never_resumed(tmp_path):
    with Repository.open(str(tmp_path / "r.db")) as repository:
        run_id = repository.create_run(CONFIG.to_dict()).id
        with pytest.raises(ResumeError, match="a replay is never resumed"):
            Coordinator(CONFIG, repository, key_directory=tmp_path / "keys", run_id=run_id,
                        replay=CohortReplay([[0, 1]], released=False))
        with pytest.raises(ResumeError, match="must be a CohortReplay"):
            Coordinator(CONFIG, repository, key_directory=tmp_path / "keys", replay=[[0, 1]])


def test_an_unreleased_round_may_hold_fewer_inputs_than_the_noise_floor_with_the_same_noise():
    noise = NoiseShare("distributed", "skellam", 4.0, 1.0, 1.0, 8, 16)
    cohort = list(range(7))  # one under the floor of 8
    with pytest.raises(ConfigError, match="below the noise floor of 8 survivors"):
        open_round(CONFIG, round_index=0, cohort=cohort, dimension=16, step=0.1, bits=20, noise=noise)
    setup = open_round(CONFIG, round_index=0, cohort=cohort, dimension=16, step=0.1, bits=20, noise=noise,
                       survivor_floor=7)
    assert setup.minimum_survivors == 7
    assert setup.plan.noise == noise  # every client still adds the run's calibrated share
    nine = dict(round_index=0, cohort=list(range(9)), dimension=16, step=0.1, bits=20, noise=noise)
    assert open_round(CONFIG, **nine, survivor_floor=12).minimum_survivors == \
        open_round(CONFIG, **nine).minimum_survivors  # it only ever lowers the floor
