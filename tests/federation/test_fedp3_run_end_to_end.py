"""LDP-FedP3 end to end: real coordinator, worker processes, one SecAgg+ sum per layer group,
real storage and ledgers.

Each fixture starts worker processes once (the slow part, ~20 s on two busy cores) and the tests
read what the run stored. The model is the small CNN on digits (three body groups and a head), so
under OPU2 every body group has a different subset of the clients as senders.
"""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.evaluation import GlobalModel
from federation.fedp3_training import train_fedp3_client
from federation.learning import LocalLearner
from federation.round_logic import lattice_step, restore_model
from federation.round_plan import NoiseShare, RoundPlan
from privacy.accounting import recompute_epsilon
from privacy.events import event_from_json
from privacy.fedp3 import (
    RoundAssignment, aggregate_round, keep_ratio_for_capacity, layer_groups, prune_for_client,
)
from secagg.stages import MASKED_INPUT, STAGES
from storage.repositories import Repository

pytestmark = pytest.mark.slow

PLAIN = dict(dataset="digits", split="iid", clients=8, rounds=3, model="cnn", trainer="fedp3", fedp3_policy="OPU2",
             fedp3_capacity=0.99, learning_rate=0.5, local_epochs=3, clip_norm=2.0, workers=2, history=False,
             noise="none", dropout_rate=0.0, seed=1)


def _assignment(parameters: dict, body_groups: int) -> RoundAssignment:
    ownership = tuple((int(c), frozenset(owned)) for c, owned in sorted(parameters["assignment"].items(),
                                                                          key=lambda item: int(item[0])))
    return RoundAssignment(parameters["policy"], 0, body_groups, ownership)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """Two rounds, stop (the run stays 'running'), resume for the third."""
    tmp = tmp_path_factory.mktemp("fedp3-plain")
    database = str(tmp / "fedp3.db")
    config = RunConfig(**PLAIN)
    with Repository.open(database) as repository:
        first = Coordinator(config, repository, key_directory=tmp / "keys")
        first_rounds = first.run(max_rounds=2).rounds
        status_after_stop = repository.get_run(first.run_id).status
        replayed = GlobalModel.for_config(config)
        restore_model(repository, first.run_id, replayed, config.server_learning_rate)
        second = Coordinator(config, repository, key_directory=tmp / "keys", run_id=first.run_id)
        resumed_rounds = second.run().rounds
    return {"database": database, "run_id": first.run_id, "config": config, "first_rounds": first_rounds,
            "status_after_stop": status_after_stop, "model_after_stop": first.model.flat(),
            "replayed_after_stop": replayed.flat(), "resumed_rounds": resumed_rounds}


def test_fedp3_run_completes_every_round_and_learns_above_chance(plain_run):
    rounds = plain_run["first_rounds"] + plain_run["resumed_rounds"]
    assert [r.round_index for r in rounds] == [0, 1, 2]
    assert all(r.status == "completed" and r.survivors == 8 for r in rounds)
    assert rounds[-1].accuracy > 0.4  # 10 classes: chance is 0.1


def test_interrupted_fedp3_run_resumes_to_the_full_round_count_from_the_replayed_model(plain_run):
    assert plain_run["status_after_stop"] == "running"
    assert [r.round_index for r in plain_run["resumed_rounds"]] == [2]
    # restore_model replays the stored mean updates: the very model the first coordinator held.
    np.testing.assert_array_equal(plain_run["replayed_after_stop"], plain_run["model_after_stop"])
    with Repository.open(plain_run["database"]) as repository:
        assert repository.get_run(plain_run["run_id"]).status == "completed"
        assert [r.round_index for r in repository.list_rounds(plain_run["run_id"])] == [0, 1, 2]


def test_database_holds_every_round_with_each_groups_sum_assignment_and_survivors(plain_run):
    with Repository.open(plain_run["database"]) as repository:
        rounds = repository.list_rounds(plain_run["run_id"])
        assert [r.round_index for r in rounds] == [0, 1, 2]
        for info in rounds:
            groups = info.parameters["groups"]
            assert set(groups) == {"0", "1", "2", "3"}
            aggregates = repository.load_aggregates(plain_run["run_id"], info.round_index)
            assert set(aggregates) == {"group-0", "group-1", "group-2", "group-3", "mean_update"}
            assignment = _assignment(info.parameters, 3)
            for group, detail in groups.items():
                assert detail["status"] == "completed"
                assert detail["senders"] == list(assignment.senders(int(group)))
                assert detail["survivors"] == detail["senders"]  # no dropouts in this run
                assert detail["plan"]["dimension"] == detail["size"]
            senders = [len(groups[g]["senders"]) for g in ("0", "1", "2")]
            assert max(senders) < 8 and len(groups["3"]["senders"]) == 8  # partial body groups, full head
            assert info.bytes_uploaded > 0


def test_per_group_secure_sums_equal_the_sums_of_the_clients_own_encodings(plain_run):
    """The oracle: redo round 0's clients in this process (same pruned model, data, public seed),
    encode each uploaded group under its stored plan and add the integers. Every stored lattice sum
    must equal that exactly, and the model must equal the plaintext FedP3 aggregation of the
    clients' decoded uploads (to float32 rounding)."""
    config = plain_run["config"]
    with Repository.open(plain_run["database"]) as repository:
        info = repository.get_round(plain_run["run_id"], 0)
        stored = repository.load_aggregates(plain_run["run_id"], 0)
        after_round = GlobalModel.for_config(config)
        after_round.apply_update(stored["mean_update"].values, config.server_learning_rate)
    initial = GlobalModel.for_config(config)
    layout = layer_groups(initial.module)
    assignment = _assignment(info.parameters, layout.body_count)
    round_seed = bytes.fromhex(info.parameters["round_seed"])
    plans = {int(g): _plan(detail["plan"]) for g, detail in info.parameters["groups"].items()}
    state = initial.module.state_dict()
    coordinates, decoded = {}, {}
    for client_id in assignment.client_ids:
        owned = assignment.owned_by(client_id)
        pruned = prune_for_client(state, layout, owned, keep_ratio_for_capacity(layout, owned, config.fedp3_capacity))
        learner = LocalLearner.for_client(config, client_id)
        upload = train_fedp3_client(learner.trainer, pruned, layout, assignment.uploaded_by(client_id), learner.data,
                                    round_seed, client_id=client_id, clip_norm=config.clip_norm).upload
        for group, vector in upload.vectors.items():
            codec, plan = plans[group].codec(), plans[group]
            coordinates[client_id, group] = codec.encode(vector, plan.round_seed, client_id)
            decoded[client_id, group] = codec.decode(coordinates[client_id, group], plan.round_seed, client_id,
                                                     plan.dimension)
    sums = {}
    for group in range(layout.body_count + 1):
        senders = assignment.senders(group)
        expected = np.sum([coordinates[c, group] for c in senders], axis=0)
        np.testing.assert_array_equal(stored[f"group-{group}"].values, expected)
        sums[group] = np.sum([decoded[c, group] for c in senders], axis=0)
    oracle = GlobalModel.for_config(config)
    oracle.module.load_state_dict(aggregate_round(state, layout, assignment, sums,
                                                  server_learning_rate=config.server_learning_rate))
    np.testing.assert_allclose(oracle.flat(), after_round.flat(), rtol=1e-5, atol=1e-6)


def _plan(public: dict) -> RoundPlan:
    return RoundPlan(round_index=0, round_seed=bytes.fromhex(public["round_seed"]), dimension=public["dimension"],
                     lattice=public["lattice"], step=public["step"], bits=public["bits"],
                     clip_norm=public["clip_norm"], noise=NoiseShare())


# --- distributed noise, dropouts and budgets -----------------------------------------------------

@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    """Distributed Skellam noise, 10% dropout, and a budget that pays for two of the three rounds."""
    tmp = tmp_path_factory.mktemp("fedp3-private")
    noised = RunConfig(**{**PLAIN, "noise": "distributed", "target_epsilon": 50.0, "dropout_rate": 0.1, "seed": 2})
    model = GlobalModel.for_config(noised)
    from federation.fedp3_rounds import FedP3Rounds

    event = FedP3Rounds(noised, model, lattice_step(noised, model.parameter_count)).privacy.round_event()
    two_rounds = recompute_epsilon([event, event], noised.delta)
    config = noised.replace(budget_epsilon=two_rounds * 1.001)
    database = str(tmp / "fedp3.db")
    with Repository.open(database) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp / "keys")
        summary = coordinator.run()
    return {"database": database, "run_id": coordinator.run_id, "config": config, "summary": summary,
            "keys": tmp / "keys", "run_tag": coordinator.run_tag}


def test_private_fedp3_run_charges_each_participant_once_per_round(private_run):
    with Repository.open(private_run["database"]) as repository:
        rounds = repository.list_rounds(private_run["run_id"])
        entries = repository.ledger_entries(private_run["run_id"])
        assert repository.verify_ledger(private_run["run_id"]).ok
        assert repository.verify_audit_log(private_run["run_id"]).ok
    assert [r.round_index for r in rounds] == [0, 1, 2]
    assert rounds[0].status == "completed"
    charges: dict[tuple[int, int], int] = {}
    for entry in entries:
        assert entry.stream == "distributed"
        charges[entry.client_id, entry.round_index] = charges.get((entry.client_id, entry.round_index), 0) + 1
    assert set(charges.values()) == {1}
    for info in rounds:
        if info.status == "completed":
            assert all((c, info.round_index) in charges for c in info.survivors)  # every upload was paid for
            for detail in info.parameters["groups"].values():
                if detail["status"] == "completed":
                    assert len(detail["survivors"]) >= detail["plan"]["minimum_survivors"]


def test_a_client_over_its_budget_is_not_asked_again(private_run):
    config = private_run["config"]
    with Repository.open(private_run["database"]) as repository:
        rounds = repository.list_rounds(private_run["run_id"])
        entries = repository.ledger_entries(private_run["run_id"])
    paid_before_last = {}
    for entry in entries:
        if entry.round_index < 2:
            paid_before_last[entry.client_id] = paid_before_last.get(entry.client_id, 0) + 1
    assert any(count == 2 for count in paid_before_last.values())
    assert all(paid_before_last.get(c, 0) < 2 for c in rounds[2].cohort)  # the ledger refused the others
    by_client = {}
    for entry in entries:
        by_client.setdefault(entry.client_id, []).append(event_from_json(entry.event_json))
    for events in by_client.values():
        assert recompute_epsilon(events, config.delta) <= config.client_budget


def test_each_clients_own_ledger_holds_the_same_single_charges_as_the_servers(private_run):
    with Repository.open(private_run["database"]) as repository:
        entries = repository.ledger_entries(private_run["run_id"])
    server = {}
    for entry in entries:
        server.setdefault(entry.client_id, []).append((entry.round_index, entry.stream, dict(entry.event_json)))
    for client_id in range(private_run["config"].clients):
        path = private_run["keys"] / f"client-{client_id}.run-{private_run['run_tag']}.ledger.json"
        own = [(e["round"], e["stream"], e["event"]) for e in json.loads(path.read_text())] if path.exists() else []
        assert own == server.get(client_id, [])


# --- a group whose sum aborts --------------------------------------------------------------------

@pytest.fixture(scope="module")
def aborting_run(tmp_path_factory):
    """Round 0: four clients vanish before their masked inputs, so some groups' sums fall below
    t = 3 and abort while the others complete. Round 1: six vanish and every sum aborts."""
    tmp = tmp_path_factory.mktemp("fedp3-abort")
    config = RunConfig(**{**PLAIN, "rounds": 2, "local_epochs": 1, "neighbours": 7, "threshold": 3})
    vanish = iter([{0, 1, 6, 7}, {0, 1, 2, 3, 4, 5}])
    database = str(tmp / "fedp3.db")
    with Repository.open(database) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp / "keys")

        def scripted_dropouts(cohort):
            drops = {stage: set() for stage in STAGES}
            drops[MASKED_INPUT] = next(vanish)
            return drops

        coordinator._dropouts = scripted_dropouts
        summary = coordinator.run()
    return {"database": database, "run_id": coordinator.run_id, "config": config, "summary": summary,
            "final_model": coordinator.model.flat(), "vanished": {0, 1, 6, 7}}


def test_a_group_whose_sum_aborts_keeps_its_parameters_while_the_others_update(aborting_run):
    config = aborting_run["config"]
    with Repository.open(aborting_run["database"]) as repository:
        info = repository.get_round(aborting_run["run_id"], 0)
    assert info.status == "completed"
    initial = GlobalModel.for_config(config)
    layout = layer_groups(initial.module)
    before = initial.module.state_dict()
    after = GlobalModel.for_config(config)
    after.load_flat(aborting_run["final_model"])  # round 1 aborted: the model of round 0
    statuses = set()
    for group, detail in info.parameters["groups"].items():
        survivors = set(detail["senders"]) - aborting_run["vanished"]
        expected = "completed" if len(survivors) >= 3 else "aborted"
        assert detail["status"] == expected, (group, detail)
        statuses.add(expected)
        moved = layout.group_vector(after.module.state_dict(), int(group)) - layout.group_vector(before, int(group))
        if expected == "aborted":
            assert "reason" in detail
            np.testing.assert_array_equal(moved, 0.0)
        else:
            assert detail["survivors"] == sorted(survivors)
            assert np.abs(moved).max() > 0
    assert statuses == {"completed", "aborted"}


def test_a_round_whose_every_group_aborts_is_recorded_as_aborted(aborting_run):
    last = aborting_run["summary"].rounds[1]
    assert last.status == "aborted"
    assert "every layer group's secure sum aborted" in last.abort_reason
    with Repository.open(aborting_run["database"]) as repository:
        info = repository.get_round(aborting_run["run_id"], 1)
        assert info.status == "aborted"
        assert repository.load_aggregates(aborting_run["run_id"], 1) == {}


# --- the command line ----------------------------------------------------------------------------

def test_fedvault_run_trains_fedp3_from_the_command_line(tmp_path):
    result = CliRunner().invoke(fedvault, [
        "run", "--trainer", "fedp3", "--model", "mlp", "--fedp3-policy", "LowerB", "--no-history",
        "--dataset", "digits", "--split", "iid", "--clients", "4", "--rounds", "2", "--local-epochs", "1",
        "--workers", "2", "--noise", "none", "--dropout", "0", "--no-plots",
        "--db", str(tmp_path / "fedp3.db"), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "round 1/2  acc=" in result.output and "round 2/2  acc=" in result.output
    assert re.search(r"rounds completed / aborted\s+2 / 0", result.output)


@pytest.mark.parametrize("flags, fragment", [
    (["--model", "mlp"], "fedp3_policy OPU2 does not fit model mlp"),
    (["--model", "mlp", "--history"], "--no-history"),
    (["--model", "logreg"], "logreg has only the head"),
])
def test_fedvault_run_refuses_fedp3_settings_it_cannot_run_in_one_line(tmp_path, flags, fragment):
    no_history = [] if "--history" in flags else ["--no-history"]
    result = CliRunner().invoke(fedvault, ["run", "--trainer", "fedp3", *no_history, *flags,
                                           "--db", str(tmp_path / "x.db"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert fragment in result.output
