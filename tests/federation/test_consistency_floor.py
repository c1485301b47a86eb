"""The client runtime's privacy policy sets its floor in the SecAgg+ consistency round."""

from __future__ import annotations

import os

from federation.client_policy import ClientPolicy
from federation.client_runtime import ClientRuntime
from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.round_plan import NoiseShare, RoundPlan, default_step


def test_the_policys_survivor_floor_is_the_secagg_clients_own_floor(tmp_path):
    config = RunConfig(clients=4, model="logreg", rounds=2, noise="none")
    model = GlobalModel.for_config(config)
    step = default_step(config.clip_norm, model.parameter_count, config.lattice)
    plan = RoundPlan(0, os.urandom(32), model.parameter_count, config.lattice, step, 20, config.clip_norm,
                     NoiseShare()).to_bytes()
    policy = ClientPolicy(allowed_noise_modes=("none",), min_cohort=2, min_threshold=1,
                          min_threshold_fraction=0.0, min_survivors=3)
    runtime = ClientRuntime(0, config, run_id=1, key_directory=tmp_path, policy=policy)
    runtime.prepare(plan, model.flat(), record=False)
    assert runtime._secagg._own_floor == 3  # quorum = max(t, the config's floor, 3)
