"""A client's own privacy policy: a plan weaker than it is refused before anything is uploaded.

The attack (issue 13, "parameters from the server"): the server announces a weaker plan than the
run promised (no noise, a huge clip, a threshold of 2, ...) and a client without a floor of its
own trains and uploads under it. Each test shows the weak plan accepted by a client whose policy
allows it (the behaviour before client policies), then refused by the default policy, naming
the knob.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from federation.client_policy import ClientPolicy, PolicyError, PolicyRefusedError
from federation.client_runtime import ClientRuntime
from federation.config import RunConfig
from federation.evaluation import GlobalModel
from federation.round_plan import NoiseShare, RoundPlan, default_step
from privacy.mechanisms import DistributedNoise, LocalNoise
from secagg.simulate import make_config
from secagg.wire import AdvertiseKeysRequest

DIMENSION = 64
STEP = 0.01
PERMISSIVE = ClientPolicy(allowed_noise_modes=("none", "local", "distributed"), min_cohort=2, min_threshold=1,
                          min_threshold_fraction=0.0, min_survivors=1)


def plan(noise: NoiseShare, *, clip=0.5, lattice="Z") -> RoundPlan:
    return RoundPlan(0, bytes(32), DIMENSION, lattice, STEP, 20, clip, noise)


def distributed(share_scale=400.0, floor=8, l2=60.0):
    return NoiseShare.of(DistributedNoise("skellam", share_scale, floor, 0, l2, l2 * 8, DIMENSION))


def local(scale=2500.0, l2=100.0, mechanism="skellam"):
    return NoiseShare.of(LocalNoise(mechanism, scale, l2, l2 * 8))


@pytest.mark.parametrize("weak, knob, policy", [
    (plan(NoiseShare()), "allowed_noise_modes", ClientPolicy()),
    (plan(local(mechanism="discrete_gaussian", scale=50.0)), "allowed_mechanisms",
     ClientPolicy(allowed_mechanisms=("skellam",))),
    (plan(distributed(), lattice="E8"), "allowed_lattices", ClientPolicy(allowed_lattices=("Z", "D4"))),
    (plan(distributed(), clip=50.0), "max_clip_norm", ClientPolicy(max_clip_norm=1.0)),
    (plan(distributed(share_scale=1.0)), "min_noise_multiplier", ClientPolicy(min_noise_multiplier=0.1)),
    (plan(local(scale=1.0)), "max_round_epsilon", ClientPolicy(max_round_epsilon=4.0)),
])
def test_a_plan_below_the_policy_is_refused_naming_the_knob(weak, knob, policy):
    PERMISSIVE.check_plan(weak)  # the attack: a client without that floor takes the weak plan
    with pytest.raises(PolicyRefusedError, match=f"\\({knob}\\)") as refused:
        policy.check_plan(weak)
    assert refused.value.knob == knob


def test_plans_the_policy_allows_pass():
    ClientPolicy(max_clip_norm=1.0, min_noise_multiplier=0.1).check_plan(plan(distributed()))
    ClientPolicy(max_round_epsilon=12.0).check_plan(plan(local()))


def test_the_epsilon_floor_is_the_clients_own_accounting():
    policy = ClientPolicy()
    strong, weak = policy.round_epsilon(plan(local(scale=40000.0))), policy.round_epsilon(plan(local(scale=100.0)))
    assert 0 < strong < weak  # more noise, smaller ε


@pytest.mark.parametrize("config, knob, policy", [
    (make_config(range(2), 16, 8, neighbours_k=1, threshold=2), "min_cohort", ClientPolicy()),
    (make_config(range(10), 16, 8, neighbours_k=9, threshold=2), "min_threshold_fraction", ClientPolicy()),
    (make_config(range(10), 16, 8, neighbours_k=2, threshold=2), "min_threshold", ClientPolicy(min_threshold=3)),
    (make_config(range(10), 16, 8, neighbours_k=2, threshold=2), "min_survivors", ClientPolicy(min_survivors=3)),
])
def test_a_round_config_below_the_policy_is_refused_naming_the_knob(config, knob, policy):
    PERMISSIVE.check_round(config)
    with pytest.raises(PolicyRefusedError, match=f"\\({knob}\\)"):
        policy.check_round(config)


def test_noise_calibrated_for_more_shares_than_the_round_guarantees_is_refused():
    config = make_config(range(10), 16, 8, neighbours_k=9, threshold=6)
    ClientPolicy().check_round(config, plan(distributed(floor=6)))
    with pytest.raises(PolicyRefusedError, match="calibrated for 9 shares but the round completes with 6"):
        ClientPolicy().check_round(config, plan(distributed(floor=9)))


def test_only_a_scratch_policy_accepts_a_sum_below_its_noise_floor():
    config = make_config(range(10), 16, 8, neighbours_k=9, threshold=6)
    ClientPolicy(allow_floor_below_noise_calibration=True).check_round(config, plan(distributed(floor=9)))
    with pytest.raises(PolicyError, match="allow_floor_below_noise_calibration must be true or false"):
        ClientPolicy(allow_floor_below_noise_calibration="yes")


def test_the_default_policy_matches_the_parameter_tables_ratio():
    ClientPolicy().check_round(make_config(range(14), 16, 8, neighbours_k=12, threshold=6))
    with pytest.raises(PolicyRefusedError):
        ClientPolicy().check_round(make_config(range(14), 16, 8, neighbours_k=12, threshold=5))


def test_a_policy_is_frozen_validated_and_read_from_toml(tmp_path):
    policy = ClientPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.min_cohort = 2
    for bad in ({"min_cohort": 1}, {"allowed_noise_modes": ("loud",)}, {"allowed_noise_modes": "local"},
                {"min_noise_multiplier": -1.0}, {"max_round_epsilon": 0.0}, {"min_threshold_fraction": 1.5},
                {"policy_delta": 0.0}, {"min_cohort": True}):
        with pytest.raises(PolicyError):
            ClientPolicy(**bad)
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nallowed_noise_modes = ["distributed"]\nmin_noise_multiplier = 0.5\nmin_cohort = 8\n')
    read = ClientPolicy.from_toml(path)
    assert read.allowed_noise_modes == ("distributed",) and read.min_noise_multiplier == 0.5 and read.min_cohort == 8
    path.write_text("min_cohrt = 8\n")
    with pytest.raises(PolicyError, match="unknown policy knob"):
        ClientPolicy.from_toml(path)
    path.write_text("min_cohort = \n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        ClientPolicy.from_toml(path)
    assert policy.replace(min_cohort=9, max_clip_norm=None).min_cohort == 9


def test_the_runtime_refuses_a_weakened_plan_before_it_trains_or_uploads(tmp_path):
    # The run promised distributed noise; the server's plan for this round has none.
    config = RunConfig(clients=4, model="logreg", rounds=2, noise="distributed")
    model = GlobalModel.for_config(config)
    step = default_step(config.clip_norm, model.parameter_count, config.lattice)
    weak = RoundPlan(0, os.urandom(32), model.parameter_count, config.lattice, step, 20, config.clip_norm,
                     NoiseShare()).to_bytes()
    trusting = ClientRuntime(0, config, run_id=1, key_directory=tmp_path / "a", policy=PERMISSIVE)
    trusting.prepare(weak, model.flat(), record=False)
    assert trusting._pending_input is not None  # the attack: an unnoised update is ready for upload
    guarded = ClientRuntime(0, config, run_id=1, key_directory=tmp_path / "b", policy=ClientPolicy())
    with pytest.raises(PolicyRefusedError, match="allowed_noise_modes"):
        guarded.prepare(weak, model.flat())
    assert guarded._pending_input is None and guarded._own_ledger.epsilon == 0
    # The simulation's default policy is the run's own config: the same weak plan is refused there too.
    simulated = ClientRuntime(0, config, run_id=1, key_directory=tmp_path / "c")
    with pytest.raises(PolicyRefusedError, match="allowed_noise_modes"):
        simulated.prepare(weak, model.flat())


def test_the_runtime_checks_the_rounds_first_request_before_anything_leaves(tmp_path):
    config = RunConfig(clients=12, model="logreg", rounds=2, noise="distributed")
    runtime = ClientRuntime(0, config, run_id=1, key_directory=tmp_path, policy=ClientPolicy())
    good_plan = plan(distributed(floor=6)).to_bytes()
    low = make_config(range(12), 16, 8, neighbours_k=11, threshold=3, application_config=good_plan)
    message = AdvertiseKeysRequest.for_config(low).to_bytes()
    with pytest.raises(PolicyRefusedError, match="min_threshold_fraction"):
        runtime.check_request(message, good_plan)
    fine = make_config(range(12), 16, 8, neighbours_k=11, threshold=6, application_config=good_plan)
    runtime.check_request(AdvertiseKeysRequest.for_config(fine).to_bytes(), good_plan)


@pytest.mark.slow
def test_the_simulations_clients_enforce_their_policy_through_the_coordinator(tmp_path):
    from federation.coordinator import Coordinator
    from storage import Repository

    config = RunConfig(dataset="digits", split="iid", clients=4, rounds=1, model="logreg", noise="none",
                       dropout_rate=0.0, workers=1, seed=2, history=False)
    with Repository.open(str(tmp_path / "run.db")) as repository:
        # The coordinator plans rounds without noise; clients whose own policy requires noise refuse.
        refused = Coordinator(config, repository, key_directory=tmp_path / "keys",
                              client_policy=ClientPolicy()).run()
        (only,) = refused.rounds
        assert only.status == "aborted" and "allowed_noise_modes" in only.abort_reason
        # The same run with the clients' default (the run's own config) completes.
        accepted = Coordinator(config, repository, key_directory=tmp_path / "keys").run()
        assert [r.status for r in accepted.rounds] == ["completed"]


@pytest.mark.slow
def test_every_fedp3_layer_groups_round_is_checked_against_the_clients_policy(tmp_path):
    from federation.coordinator import Coordinator
    from storage import Repository

    config = RunConfig(dataset="digits", split="iid", clients=8, rounds=1, model="cnn", trainer="fedp3",
                       history=False, fedp3_capacity=0.99, clip_norm=2.0, dropout_rate=0.0, noise="distributed",
                       target_epsilon=50.0, workers=1, seed=3)
    with Repository.open(str(tmp_path / "run.db")) as repository:
        # The plans pass; each group's SecAgg+ config (threshold <= 8) is below a floor of 9.
        strict = ClientPolicy.accepting(config).replace(min_threshold=9)
        refused = Coordinator(config, repository, key_directory=tmp_path / "keys", client_policy=strict).run()
        assert [r.status for r in refused.rounds] == ["aborted"]
        accepted = Coordinator(config, repository, key_directory=tmp_path / "keys").run()
        assert [r.status for r in accepted.rounds] == ["completed"]


def test_a_server_announcing_a_huge_budget_cannot_raise_the_clients_own(tmp_path):
    from federation.client_runtime import ClientRefusedError

    # The server's config says ε = 1e6 over the run; the client's policy caps it at 0.5.
    config = RunConfig(clients=4, model="logreg", rounds=2, target_epsilon=1e6, noise="distributed")
    model = GlobalModel.for_config(config)
    step = default_step(config.clip_norm, model.parameter_count, config.lattice)
    noise = DistributedNoise("skellam", 1.0, 2, 0, 50.0, 500.0, 1024)  # far too little noise for ε ≤ 0.5
    weak = RoundPlan(0, os.urandom(32), model.parameter_count, config.lattice, step, 20, config.clip_norm,
                     NoiseShare.of(noise)).to_bytes()
    ClientRuntime(0, config, run_id=1, key_directory=tmp_path / "a", policy=PERMISSIVE).prepare(weak, model.flat())
    capped = ClientRuntime(0, config, run_id=1, key_directory=tmp_path / "b", policy=PERMISSIVE.replace(
        max_run_epsilon=0.5))
    with pytest.raises(ClientRefusedError, match="budget 0.5"):
        capped.prepare(weak, model.flat())
