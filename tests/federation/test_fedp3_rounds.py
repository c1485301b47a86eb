"""LDP-FedP3 as a trainer of the run, without worker processes: configuration checks, the
privacy plan of the per-group sums, the client's refusals, and the update the server applies.

The end-to-end runs through the coordinator are in test_fedp3_run_end_to_end.py.
"""

import dataclasses
import math

import numpy as np
import pytest

from federation.client_runtime import ClientRefusedError, ClientRuntime, TrainReport
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.errors import ConfigError
from federation.evaluation import GlobalModel
from federation.fedp3_plan import FedP3Offer, group_seed
from federation.fedp3_rounds import FedP3Rounds
from federation.privacy_plan import noise_floor
from federation.round_logic import lattice_step
from federation.round_plan import coordinate_l2_sensitivity
from privacy.accounting import rdp_of, recompute_epsilon
from privacy.events import DistributedSkellamEvent
from privacy.fedp3 import apply_group_means, assign_round
from secagg.rotation import padded_dimension
from storage.repositories import Repository

FEDP3 = dict(dataset="digits", split="iid", clients=8, rounds=3, model="cnn", trainer="fedp3", history=False,
             fedp3_capacity=0.99, clip_norm=2.0, dropout_rate=0.1, noise="distributed", target_epsilon=50.0)


def fedp3_rounds(**changes) -> tuple[RunConfig, GlobalModel, FedP3Rounds]:
    config = RunConfig(**{**FEDP3, **changes})
    model = GlobalModel.for_config(config)
    return config, model, FedP3Rounds(config, model, lattice_step(config, model.parameter_count))


# --- configuration -------------------------------------------------------------------------------

def test_fedp3_on_logistic_regression_is_refused_naming_the_model():
    with pytest.raises(ConfigError, match="logreg has only the head: use model mlp or cnn"):
        RunConfig(trainer="fedp3", model="logreg", history=False)


def test_fedp3_with_history_records_is_refused_and_says_how_to_turn_them_off():
    with pytest.raises(ConfigError, match="--no-history"):
        RunConfig(trainer="fedp3", model="mlp")


@pytest.mark.parametrize("changes, fragment", [
    ({"fedp3_capacity": 0.0}, "fedp3_capacity must be in (0.0, 1.0]"),
    ({"fedp3_capacity": 1.5}, "fedp3_capacity must be in (0.0, 1.0]"),
    ({"fedp3_policy": "OPU4"}, "fedp3_policy must be one of LowerB, OPU2, OPU3, OPR2"),
    ({"fedp3_weighting": "median"}, "fedp3_weighting must be one of mean, layers"),
    ({"fedp3_clipping": "none"}, "fedp3_clipping must be one of joint, per_group"),
])
def test_fedp3_knobs_are_validated_by_name(changes, fragment):
    with pytest.raises(ConfigError) as error:
        RunConfig(**{**FEDP3, **changes})
    assert fragment in str(error.value)


@pytest.mark.parametrize("changes, fragment", [
    ({"model": "mlp"}, "fedp3_policy OPU2 does not fit model mlp (1 body layer groups and a head)"),
    ({"fedp3_policy": "OPU3", "fedp3_capacity": 0.5}, "fedp3_capacity 0.5 is too small for policy OPU3"),
])
def test_a_model_or_capacity_the_policy_cannot_use_is_refused_before_the_run_is_stored(tmp_path, changes, fragment):
    with Repository.open(str(tmp_path / "db.sqlite")) as repository:
        with pytest.raises(ConfigError) as error:
            Coordinator(RunConfig(**{**FEDP3, **changes}), repository, key_directory=tmp_path / "keys")
        assert fragment in str(error.value)
        assert repository.list_runs() == []


# --- privacy plan --------------------------------------------------------------------------------

def test_joint_sensitivity_counts_the_rounding_blocks_of_every_group():
    clip, step = 2.0, 0.01
    single = coordinate_l2_sensitivity(clip, step, 100, "Z", local=False)
    assert coordinate_l2_sensitivity(clip, step, (100,), "Z", local=False) == single
    # Z: covering radius √1/2 per block of one coordinate; each group is padded on its own.
    joint = coordinate_l2_sensitivity(clip, step, (100, 30), "Z", local=False)
    assert joint == pytest.approx(clip / step + 2 * 0.5 * math.sqrt(padded_dimension(100) + padded_dimension(30)))
    assert joint > single


def test_a_configured_threshold_above_a_groups_senders_is_clamped_to_them():
    config = RunConfig(clients=20, threshold=10, dropout_rate=0.0)
    assert noise_floor(config) == 20
    assert noise_floor(config, senders=6) == 6  # not 10: the group's sum could never reach it


def test_by_default_every_upload_carries_the_local_floor_with_the_central_remainder_on_top():
    from federation.config import FEDP3_LOCAL_EPSILON
    from privacy.local_privacy import round_local_epsilon

    config, _, rounds = fedp3_rounds()
    assert config.local_epsilon is None and config.local_epsilon_floor == FEDP3_LOCAL_EPSILON
    event = rounds.privacy.round_event()
    assert round_local_epsilon(event, config.delta) <= FEDP3_LOCAL_EPSILON
    assert round_local_epsilon(event, config.delta) == pytest.approx(FEDP3_LOCAL_EPSILON, rel=1e-6)
    # each group's share is at least the joint share the floor was met with
    assert all(share.scale >= event.mu_share * (1 - 1e-12) for share in rounds.privacy.group_shares.values())
    assert recompute_epsilon([event] * config.rounds, config.delta) <= config.target_epsilon


def test_every_group_sum_carries_the_central_skellam_noise_and_one_event_covers_the_run():
    config, model, rounds = fedp3_rounds(local_epsilon=1e6)  # a floor that never binds: the central target does
    planner = rounds.privacy
    event = planner.round_event()
    floors = {group: share.floor for group, share in planner.group_shares.items()}
    assert len(set(floors.values())) > 1, "the head expects more senders than a body group"
    for share in planner.group_shares.values():
        assert share.scale * share.floor == pytest.approx(event.central_mu, rel=1e-12)
    assert event.noise_floor == max(floors.values())
    spent = recompute_epsilon([event] * config.rounds, config.delta)
    assert spent == pytest.approx(config.target_epsilon, rel=1e-6)
    assert spent <= config.target_epsilon


def test_the_discrete_gaussian_round_event_dominates_each_groups_release_at_every_order():
    _, _, rounds = fedp3_rounds(mechanism="discrete_gaussian")
    planner = rounds.privacy
    charged = rdp_of(planner.round_event())
    coordinates = planner.noise.dimension  # the release over every group's coordinates
    for share in planner.group_shares.values():
        own = dataclasses.replace(share.mechanism_object(), dimension=coordinates).event()
        assert np.all(rdp_of(own) <= charged * (1 + 1e-9))
    assert len({share.scale for share in planner.group_shares.values()}) > 1, "groups of fewer senders add more"


# --- the client's side ---------------------------------------------------------------------------

def _client_and_offer(tmp_path, **changes):
    config, model, rounds = fedp3_rounds(**changes)
    cohort = list(range(config.clients))
    seed = bytes(range(32))
    assignment = assign_round(config.fedp3_policy, cohort, rounds.layout.body_count, public_seed=seed)
    setups, skipped = rounds.open_groups(0, assignment, seed)
    assert not skipped
    offer, start, masks = rounds.offers(model, 0, seed, assignment, setups)[0]
    return ClientRuntime(0, config, 1, tmp_path), offer, start, masks


def test_client_trains_and_encodes_an_honest_discrete_gaussian_offer(tmp_path):
    client, offer, start, masks = _client_and_offer(tmp_path, mechanism="discrete_gaussian")
    assert masks, "capacity 0.99 prunes some weights the client does not own"
    report = client.prepare_fedp3(offer, start, masks)
    assert isinstance(report, TrainReport) and report.num_samples > 0


def test_client_refuses_an_event_that_charges_less_than_its_groups_noise(tmp_path):
    client, offer, start, masks = _client_and_offer(tmp_path)
    honest = FedP3Offer.from_bytes(offer)
    cheap = dataclasses.replace(honest.event, mu_share=4 * honest.event.mu_share)
    assert isinstance(cheap, DistributedSkellamEvent)
    tampered = dataclasses.replace(honest, event=cheap).to_bytes()
    with pytest.raises(ClientRefusedError, match="charges less than group"):
        client.prepare_fedp3(tampered, start, masks)


def test_client_declines_a_fedp3_round_its_own_budget_cannot_pay(tmp_path):
    client, offer, start, masks = _client_and_offer(tmp_path, budget_epsilon=1.0)
    with pytest.raises(ClientRefusedError, match="declines round 0"):
        client.prepare_fedp3(offer, start, masks)
    with pytest.raises(ClientRefusedError, match="no FedP3 round in progress"):
        client.handle_groups({0: b""})


def test_each_group_gets_its_own_public_seed():
    seed = bytes(32)
    assert len({group_seed(seed, group) for group in range(4)}) == 4
    assert group_seed(seed, 1) == group_seed(bytes(32), 1)


# --- the server's update -------------------------------------------------------------------------

def test_the_stored_mean_update_applies_what_fedp3_aggregation_gives(tmp_path):
    """GlobalModel.apply_update(mean_update) (what restore replays) equals privacy.fedp3's
    apply_group_means to float32 rounding, and leaves groups without a mean bit-identical."""
    config, model, rounds = fedp3_rounds(server_learning_rate=0.7)
    rng = np.random.default_rng(0)  # test-only means
    means = {group: rng.normal(0, 0.1, rounds.layout.groups[group].size) for group in (0, 3)}
    before = {name: value.clone() for name, value in model.module.state_dict().items()}
    expected = apply_group_means(before, rounds.layout, means, server_learning_rate=0.7)
    model.apply_update(rounds.full_update(means), config.server_learning_rate)
    after = model.module.state_dict()
    for group in rounds.layout.groups:
        got = rounds.layout.group_vector(after, group.index)
        if group.index in means:
            np.testing.assert_allclose(got, rounds.layout.group_vector(expected, group.index), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(got, rounds.layout.group_vector(before, group.index))
