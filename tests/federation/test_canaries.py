"""Canary clients of the empirical audit (federation.canaries): the plan, the override, the scores."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from federation.canaries import CanaryLearner, CanaryPlan
from federation.config import RunConfig
from federation.errors import ConfigError
from federation.learning import LocalLearner
from federation.privacy_plan import PrivacyPlanner, noise_sensitivity_scale


def test_draw_gives_distinct_coordinates_signs_and_fresh_coins():
    plans = [CanaryPlan.draw(range(10, 74), 650, 1.0) for _ in range(4)]
    for plan in plans:
        assert plan.client_ids == tuple(range(10, 74))
        assert len(set(plan.coordinates)) == 64 and all(0 <= c < 650 for c in plan.coordinates)
        assert set(plan.signs) == {-1, 1}
    # OS CSPRNG coins: four plans of 64 coins agree with probability 2^-192
    assert len({plan.included for plan in plans}) == 4


def test_plan_validation_names_what_is_wrong():
    with pytest.raises(ConfigError, match="distinct"):
        CanaryPlan((1, 2), (5, 5), (1, 1), (True, False), 1.0)
    with pytest.raises(ConfigError, match="signs"):
        CanaryPlan((1, 2), (5, 6), (1, 2), (True, False), 1.0)
    with pytest.raises(ConfigError, match="magnitude"):
        CanaryPlan((1, 2), (5, 6), (1, -1), (True, False), float("nan"))
    with pytest.raises(ConfigError, match="coordinates"):
        CanaryPlan.draw(range(20), 10, 1.0)


def test_override_replaces_only_canaries_with_their_crafted_update():
    config = RunConfig(clients=6, dataset="digits", model="logreg")
    plan = CanaryPlan((4, 5), (3, 17), (-1, 1), (True, False), 2.5)
    override = pickle.loads(pickle.dumps(plan.override()))  # it travels to worker processes
    honest = LocalLearner.for_client(config, 1)
    assert override(1, honest) is honest
    included = override(4, LocalLearner.for_client(config, 4))
    excluded = override(5, LocalLearner.for_client(config, 5))
    assert isinstance(included, CanaryLearner) and isinstance(excluded, CanaryLearner)
    start = np.zeros(honest.trainer.dimension, dtype=np.float32)
    update = included.train(start, b"seed").update
    assert update[3] == -2.5 and np.count_nonzero(update) == 1
    assert not np.any(excluded.train(start, b"seed").update)  # tails: the zero-out neighbour
    assert included.privacy_events() == ()


def test_scores_sum_signed_coordinates_over_the_rounds_a_canary_survived():
    plan = CanaryPlan((7, 8), (0, 2), (1, -1), (True, True), 1.0)
    first = np.array([1.0, 9.0, -2.0])
    second = np.array([0.5, 9.0, -4.0])
    scores = plan.scores([(first, (7, 8)), (second, (7,))])  # client 8 dropped from round 2
    assert scores.tolist() == [1.5, 2.0]


def test_noise_sensitivity_scale_shrinks_the_noise_but_not_the_claim():
    honest = PrivacyPlanner(RunConfig(clients=20, target_epsilon=2.0), 650, 0.01)
    broken = PrivacyPlanner(RunConfig(clients=20, target_epsilon=2.0,
                                      extra={"noise_sensitivity_scale": 0.5}), 650, 0.01)
    # Skellam variance scales with the square of the sensitivity it is sized for
    assert broken.noise_share.scale == pytest.approx(honest.noise_share.scale / 4, rel=1e-3)
    for planner in (honest, broken):
        planner.charge([0], 0)
    assert broken.max_epsilon() == pytest.approx(honest.max_epsilon(), rel=1e-5)  # the noise is rounded up
    with pytest.raises(ConfigError, match="noise_sensitivity_scale"):
        noise_sensitivity_scale(RunConfig(extra={"noise_sensitivity_scale": 2.0}))
