"""LoCoDL as a trainer of the real run (federation.locodl_run through the Coordinator).

The runs are real: worker processes, SecAgg+ over serialized messages, SQLite, and (where noise is
on) exact integer noise. The oracle is the objective's own optimum (Newton-CG to 1e-12) and
LoCoDL's invariant (1/n)Σu_i + v = 0, read back from the clients' private state files.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.config import RunConfig
from federation.convex import SoftmaxRegression
from federation.coordinator import Coordinator
from federation.errors import ConfigError
from federation.evaluation import data_for
from federation.locodl_run import SHARED_FRACTION, LoCoDLLearner, locodl_setup, state_file
from federation.workers import WorkerPool
from storage.repositories import Repository

pytestmark = pytest.mark.slow

CONFIG = RunConfig(trainer="locodl", clients=8, rounds=20, noise="none", history=False, clip_norm=5.0, step=1e-4,
                   dropout_rate=0.0, seed=2)


def _objective(config):
    data = data_for(config)
    objective = SoftmaxRegression(data.clients, data.num_classes, config.locodl_l2, SHARED_FRACTION)
    return objective, objective.objective(objective.solve())


def _invariant_residual(coordinator, keys: Path) -> float:
    """max |(1/n)Σu_i + v| over the cohort's clients, from their state files and the server."""
    config = coordinator.config
    data, setup = data_for(config), locodl_setup(config)
    us = [LoCoDLLearner(i, setup, data.clients[i], state_file(keys, i, coordinator.run_tag)).state()["u"]
          for i in range(config.clients)]
    _, v = coordinator.locodl.server.pair
    return float(np.abs(np.mean(us, axis=0) + v).max())


def _fixed_round_seeds(monkeypatch):
    """Round seeds from the round index: the number K of local iterations per round (drawn from
    the seed) no longer varies between test runs. Fresh seeds are the run's own business."""
    import federation.coordinator as coordinator_module

    real = coordinator_module.open_round

    def seeded(config, *, round_index, **settings):
        return real(config, round_index=round_index, round_seed=hashlib.sha256(b"%d" % round_index).digest(),
                    **settings)

    monkeypatch.setattr(coordinator_module, "open_round", seeded)


def test_a_locodl_run_converges_linearly_toward_the_exact_optimum(tmp_path, monkeypatch):
    # λ = 1 keeps κ = L/μ small, so 20 rounds show many orders of magnitude (rate ~e^(−√(μ/L)) per round).
    _fixed_round_seeds(monkeypatch)
    config = CONFIG.replace(locodl_l2=1.0)
    objective, optimum = _objective(config)
    gaps = []
    with Repository.open(str(tmp_path / "l.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys")
        coordinator.run(lambda r: gaps.append(objective.objective(coordinator.locodl.model) - optimum))
        assert _invariant_residual(coordinator, tmp_path / "keys") < 1e-12
        rounds = repository.list_rounds(coordinator.run_id)
        assert [r.status for r in rounds] == ["completed"] * config.rounds
        # (y, v) are checkpointed exactly with every round.
        checkpoint = repository.load_checkpoint(coordinator.run_id)
        assert np.array_equal(checkpoint.tensors["locodl_y"], coordinator.locodl.model)
    assert all(gap >= -1e-12 for gap in gaps)
    # Linear convergence (K local steps per round is random, ~1/p on average): the gap shrinks by
    # orders of magnitude and keeps shrinking, with no plateau of FedAvg's client drift.
    assert gaps[-1] < 1e-4 and gaps[-1] < gaps[0] / 1e4, gaps
    assert gaps[-1] < gaps[len(gaps) // 2] / 20, gaps


def test_dropouts_and_aborted_rounds_keep_the_control_variates_summing_to_zero(tmp_path):
    # 6 clients, heavy dropout: some rounds lose clients, some abort below the threshold.
    config = CONFIG.replace(clients=6, rounds=8, dropout_rate=0.6, step=1e-3, seed=5)
    with Repository.open(str(tmp_path / "d.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys")
        summary = coordinator.run()
        statuses = {r.status for r in summary.rounds}
        assert statuses == {"completed", "aborted"}, [r.status for r in summary.rounds]
        assert any(r.status == "completed" and r.survivors < config.clients for r in summary.rounds)
        assert _invariant_residual(coordinator, tmp_path / "keys") < 1e-12


def test_a_crash_between_commit_and_mean_sent_is_mended_on_resume(tmp_path, monkeypatch):
    """The clients never hear round 1's d̄ (the server stopped right after committing it); the
    resumed run sends it again and LoCoDL's invariant holds to the end."""
    original = WorkerPool.call

    def lose_round_one(self, method, arguments):
        if method == "finish_round" and any(args[0] == 1 for args in arguments.values()):
            return {}
        return original(self, method, arguments)

    config = CONFIG.replace(rounds=4, step=1e-3)
    keys = tmp_path / "keys"
    with Repository.open(str(tmp_path / "c.db")) as repository:
        with monkeypatch.context() as patch:
            patch.setattr(WorkerPool, "call", lose_round_one)
            first = Coordinator(config, repository, key_directory=keys)
            first.run(max_rounds=2)
        assert _invariant_residual(first, keys) > 1e-6  # the clients really missed it
        resumed = Coordinator(config, repository, key_directory=keys, run_id=first.run_id)
        assert resumed.start_round == 2
        # The server's pair after round 1 is checkpointed exactly; the resumed run starts from it.
        assert np.array_equal(repository.load_checkpoint(first.run_id).tensors["locodl_y"], first.locodl.model)
        resumed.run()
        assert _invariant_residual(resumed, keys) < 1e-12
        assert repository.get_run(first.run_id).status == "completed"


def test_learner_state_survives_a_restart_and_a_round_that_never_committed(tmp_path):
    config = CONFIG
    data, setup = data_for(config), locodl_setup(config)
    y, v = np.full(setup.dimension, 0.01), np.zeros(setup.dimension)
    path = tmp_path / "state.npz"
    learner = LoCoDLLearner(3, setup, data.clients[3], path)
    learner.local_round(0, b"\x01" * 32, y, v)
    learner.uploaded(0, np.full(setup.dimension, 0.5))
    # A restarted client process reads the pending round back and applies d̄ exactly as before.
    restarted = LoCoDLLearner(3, setup, data.clients[3], path)
    mean_sent = np.full(setup.dimension, 0.1)
    assert restarted.finish(0, mean_sent, included=True) and learner.finish(0, mean_sent, included=True)
    assert all(np.array_equal(a, b) for a, b in zip(restarted.state().values(), learner.state().values()))
    assert not restarted.finish(0, mean_sent, included=True)  # idempotent
    # Round 1 starts but never commits; its rerun (new seed) starts from the same (x_i, u_i).
    before = restarted.state()
    restarted.local_round(1, b"\x02" * 32, y, v)
    again = LoCoDLLearner(3, setup, data.clients[3], path)
    rerun = again.local_round(1, b"\x03" * 32, y, v)
    fresh = LoCoDLLearner(3, setup, data.clients[3], tmp_path / "fresh.npz")
    fresh._client.load_state(before)
    fresh._finished = 0
    expected = fresh.local_round(1, b"\x03" * 32, y, v)
    assert np.array_equal(rerun.update, expected.update)
    with pytest.raises(Exception, match="uploaded nothing"):
        again.finish(1, mean_sent, included=True)
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_private_locodl_run_from_the_cli(tmp_path):
    result = CliRunner().invoke(fedvault, [
        "run", "--trainer", "locodl", "--clients", "8", "--rounds", "3", "--split", "iid", "--dropout", "0.1",
        "--db", str(tmp_path / "p.db"), "--out", str(tmp_path / "out"), "--json", "--no-plots"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["config"]["trainer"] == "locodl" and report["config"]["history"] is False
    assert report["rounds_committed"] == 3 and report["final_accuracy"] > 0.2  # chance: 0.1; DP noise at ε = 8 over 8 clients
    with Repository.open(str(tmp_path / "p.db")) as repository:
        entries = repository.ledger_entries(report["run_id"])
        survivors = {(r.round_index, c) for r in repository.list_rounds(report["run_id"]) for c in r.survivors}
        # Every client in a sum was charged for that round (charges come before the masked input).
        assert survivors <= {(e.round_index, e.client_id) for e in entries}


@pytest.mark.parametrize("changes, message", [
    ({"model": "mlp"}, "model logreg"),
    ({"sample_rate": 0.5}, "sample_rate 1.0"),
    ({"history": True}, "no-history"),
])
def test_locodl_settings_it_cannot_honour_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        CONFIG.replace(**changes)


def test_the_service_refuses_locodl_in_one_line(tmp_path):
    result = CliRunner().invoke(fedvault, ["serve", "--trainer", "locodl", "--db", str(tmp_path / "s.db"),
                                           "--state-dir", str(tmp_path / "state")])
    assert result.exit_code != 0 and "fedvault run" in result.output, result.output


def test_clients_past_their_budget_keep_iterating_without_uploading(tmp_path):
    # The budget covers about a quarter of the calibrated rounds: later rounds lose every upload.
    config = CONFIG.replace(clients=6, rounds=4, noise="distributed", clip_norm=0.5, step=None,
                            budget_epsilon=CONFIG.target_epsilon / 2, dropout_rate=0.0)
    with Repository.open(str(tmp_path / "b.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys")
        summary = coordinator.run()
        assert len(summary.rounds) == 4 and summary.rounds[0].status == "completed"
        assert any(r.status == "aborted" for r in summary.rounds), [r.status for r in summary.rounds]
        entries = repository.ledger_entries(coordinator.run_id)  # nobody was charged past its budget
        assert entries and max(e.epsilon_after for e in entries) <= config.client_budget
        _, v = coordinator.locodl.server.pair
        assert _invariant_residual(coordinator, tmp_path / "keys") < 1e-9 * max(1.0, float(np.abs(v).max()))
