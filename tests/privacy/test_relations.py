"""The default run's ε recomputed independently of the calibration code, under zero-out (must be
the target) and under add/remove (the exact lattice divergence with the variance change; must be
what `fedvault audit --relation add-remove` prints for the stored run)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import special, stats

from cli.main import fedvault
from federation.config import RunConfig
from federation.coordinator import lattice_step
from federation.evaluation import GlobalModel
from federation.privacy_plan import PrivacyPlanner
from privacy.events import DistributedSkellamEvent, SkellamEvent, event_from_json, event_to_json
from privacy.local_privacy import local_epsilon, round_local_epsilon
from privacy.mechanisms import distributed_noise_for
from privacy.relations import skellam_add_remove_rdp, with_relation
from privacy.units import group_privacy, record_level_event
from storage import AggregateWrite, ClientEnrolment, LedgerEntryWrite, Repository, RoundWrite

DELTA = 1e-5
START = datetime(2025, 3, 1, tzinfo=UTC)


def _conversion(rdp: np.ndarray, orders: np.ndarray, delta: float) -> float:
    """Balle et al. 2020, written out here: min_a rdp(a) + log((a-1)/a) - (log delta + log a)/(a-1)."""
    return float(np.min(rdp + np.log((orders - 1) / orders) - (math.log(delta) + np.log(orders)) / (orders - 1)))


@pytest.fixture(scope="module")
def default_event():
    config = RunConfig()
    dimension = GlobalModel.for_config(config).parameter_count
    planner = PrivacyPlanner(config, dimension, lattice_step(config, dimension))
    return config, planner, planner.round_event()


def test_the_default_event_records_its_relation_and_dimension(default_event):
    _, _, event = default_event
    assert event.relation == "zero-out"
    assert (event.noise_floor, event.dimension) == (38, 1024)
    assert event_from_json(event_to_json(event)) == event
    # an event stored before the relation existed reads as zero-out
    legacy = {k: v for k, v in event_to_json(event).items() if k not in ("relation", "dimension")}
    assert event_from_json(legacy).relation == "zero-out"


def test_zero_out_epsilon_recomputed_from_the_skellam_bound_is_the_target(default_event):
    config, _, event = default_event
    mu = event.mu_share * event.noise_floor
    d2, d1 = event.l2_sensitivity, event.l1_sensitivity
    orders = np.concatenate([np.arange(1.1, 11, 0.1), np.arange(11, 257)])
    alpha = np.ceil(orders - 1e-12)  # the bound holds at integer orders; Rényi divergence grows with alpha
    rdp = alpha * d2**2 / (2 * mu) + np.minimum(((2 * alpha - 1) * d2**2 + 6 * d1) / (4 * mu**2), 3 * d1 / (2 * mu))
    epsilon = _conversion(config.rounds * rdp, orders, config.delta)
    assert epsilon == pytest.approx(config.target_epsilon, abs=1e-6)


@functools.lru_cache(maxsize=8)
def _scipy_logpmf(low: int, high: int, variance: float) -> np.ndarray:
    return stats.skellam.logpmf(np.arange(low, high + 1), variance / 2, variance / 2)


def _independent_add_remove_rdp(alpha: float, mu_share: float, shares: int, shifts: int, dimension: int) -> float:
    """The add/remove RDP at one order from scipy's Skellam pmf, shift by shift (no shared code)."""
    v_with, v_without = shares * mu_share, (shares - 1) * mu_share
    bounds = []
    for v_p, v_q in ((v_with, v_without), (v_without, v_with)):
        k = np.arange(-15000, 15000 + 2 * shifts + 1)
        log_q = _scipy_logpmf(k[0], k[-1], v_q)
        log_p_all = _scipy_logpmf(k[0] - shifts, k[-1], v_p)
        f = np.array([special.logsumexp(alpha * log_p_all[shifts - a : shifts - a + k.size] + (1 - alpha) * log_q)
                      for a in range(shifts + 1)]) / (alpha - 1)
        ratio = max(0.0, float(np.max((f[1:] - f[0]) / np.arange(1, shifts + 1) ** 2)))
        bounds.append(dimension * f[0] + shifts**2 * ratio)
    return max(bounds)


@pytest.mark.slow
def test_add_remove_is_the_exact_lattice_divergence_and_far_above_the_target(default_event):
    config, _, event = default_event
    orders = np.array([2.0, 2.25, 2.5, 2.75, 3.0])  # the optimum lies among them
    independent = np.array([_independent_add_remove_rdp(a, event.mu_share, event.noise_floor,
                                                        int(event.l2_sensitivity), event.dimension) for a in orders])
    ours = skellam_add_remove_rdp(event.mu_share, event.noise_floor, event.l2_sensitivity, event.dimension, orders)
    np.testing.assert_allclose(ours, independent, rtol=1e-6)
    epsilon = _conversion(config.rounds * independent, orders, config.delta)
    assert 16 < epsilon < 18  # about twice the zero-out target of 8: the variance change on 1024 coordinates
    from privacy.accounting import recompute_epsilon
    assert recompute_epsilon([with_relation(event, "add-remove")] * config.rounds, config.delta) == \
        pytest.approx(epsilon, rel=1e-9)
    pytest.default_add_remove_epsilon = epsilon  # for the CLI test below


def _stored_default_run(path: str, planner: PrivacyPlanner, config: RunConfig) -> None:
    with Repository.open(path) as repository:
        run = repository.create_run(config.to_dict(), name="default")
        repository.enrol_clients(run.id, [ClientEnrolment(0, os.urandom(32), os.urandom(32), config.client_budget,
                                                          config.delta)])
        for index in range(config.rounds):
            entries = planner.charge([0], index)
            repository.commit_round(run.id, RoundWrite(
                round_index=index, cohort=[0], survivors=[0], started_at=START, finished_at=START,
                aggregates=(AggregateWrite(np.zeros(4, dtype=np.int64), kind="lattice_sum"),), ledger_entries=entries))


@pytest.mark.slow
def test_audit_prints_the_independently_recomputed_epsilon_under_each_relation(default_event, tmp_path):
    config, planner, event = default_event  # the fixture's planner has charged nobody yet
    path = str(tmp_path / "default.db")
    _stored_default_run(path, planner, config)
    runner = CliRunner()
    zero_out = json.loads(runner.invoke(fedvault, ["audit", "--db", path, "--json"]).stdout)
    client = zero_out["clients"][0]
    assert (client["relation"], client["units"]) == ("zero-out", ["client"])
    assert client["central_epsilon"] == pytest.approx(config.target_epsilon, abs=1e-6)
    assert client["local_epsilon"] == pytest.approx(local_epsilon([event] * config.rounds, DELTA), rel=1e-12)
    assert client["local_epsilon"] > 5 * client["central_epsilon"]  # one share alone protects far less
    result = runner.invoke(fedvault, ["audit", "--db", path, "--json", "--relation", "add-remove"])
    add_remove = json.loads(result.stdout)
    assert add_remove["relation"] == "add-remove"
    client = add_remove["clients"][0]
    assert client["relation"] == "add-remove"
    expected = getattr(pytest, "default_add_remove_epsilon", None)
    if expected is None:  # run alone: recompute it the independent way
        orders = np.array([2.0, 2.25, 2.5, 2.75, 3.0])
        expected = _conversion(config.rounds * np.array([_independent_add_remove_rdp(
            a, event.mu_share, event.noise_floor, int(event.l2_sensitivity), event.dimension) for a in orders]),
            orders, config.delta)
    assert client["central_epsilon"] == pytest.approx(expected, rel=1e-6)
    # the stored run still verifies: the relation changes the report, not the ledger
    assert add_remove["ok"], add_remove["failures"]
    text = runner.invoke(fedvault, ["audit", "--db", path, "--relation", "add-remove"]).stdout
    assert "under the add-remove relation" in text and f"{expected:.4f}" in text


def test_add_remove_calibration_meets_the_target_through_the_accountant():
    # small enough to compute quickly: 64 coordinates, sensitivity 20, floor 20
    noise = distributed_noise_for("skellam", 4.0, DELTA, 20.0, 64, 20, compositions=3, relation="add-remove")
    zero_out = distributed_noise_for("skellam", 4.0, DELTA, 20.0, 64, 20, compositions=3)
    from privacy.accounting import recompute_epsilon
    epsilon = recompute_epsilon([noise.event()] * 3, DELTA)
    assert epsilon <= 4.0 and epsilon > 4.0 * (1 - 1e-2)
    assert noise.share_scale > zero_out.share_scale
    assert noise.event().relation == "add-remove"


def test_a_local_floor_bounds_every_upload_and_only_raises_the_noise():
    plain = distributed_noise_for("skellam", 8.0, DELTA, 50.0, 256, 30, compositions=10)
    floored = distributed_noise_for("skellam", 8.0, DELTA, 50.0, 256, 30, compositions=10, local_epsilon=2.0)
    assert round_local_epsilon(plain.event(), DELTA) > 2.0
    assert round_local_epsilon(floored.event(), DELTA) == pytest.approx(2.0, rel=1e-6)
    assert round_local_epsilon(floored.event(), DELTA) <= 2.0
    # independently: the share alone is Skellam(mu_share) on twice the update's sensitivities
    from privacy.accounting import recompute_epsilon
    event = floored.event()
    assert recompute_epsilon([SkellamEvent(event.mu_share, 2 * event.l2_sensitivity, 2 * event.l1_sensitivity)],
                             DELTA) <= 2.0
    loose = distributed_noise_for("skellam", 8.0, DELTA, 50.0, 256, 30, compositions=10, local_epsilon=1e4)
    assert loose.share_scale == plain.share_scale


def test_record_level_images_double_the_sensitivity_and_group_privacy_scales():
    event = DistributedSkellamEvent(100.0, 10, 5.0, 20.0, relation="add-remove", dimension=8)
    image = record_level_event(event)
    assert (image.l2_sensitivity, image.l1_sensitivity, image.relation) == (10.0, 40.0, "zero-out")
    assert group_privacy(1.0, 1e-6, 3) == (3.0, pytest.approx(3 * math.e**2 * 1e-6))
    assert dataclasses.replace(event, relation="zero-out") == with_relation(event, "zero-out")


@pytest.mark.slow
def test_a_run_stored_before_events_named_their_relation_is_audited_under_add_remove(default_event, tmp_path):
    """Legacy events carry neither relation nor dimension: they read as zero-out, and add/remove
    takes the dimension from the stored run configuration (the planner's own computation)."""
    config, _, event = default_event
    legacy = {k: v for k, v in event_to_json(event).items() if k not in ("relation", "dimension")}
    fresh = PrivacyPlanner(config, 650, lattice_step(config, 650))  # the same noise, a fresh ledger
    path = str(tmp_path / "legacy.db")
    with Repository.open(path) as repository:
        run = repository.create_run(config.to_dict(), name="legacy")
        repository.enrol_clients(run.id, [ClientEnrolment(0, os.urandom(32), os.urandom(32), 8.0, DELTA)])
        for index in range(3):
            charged = fresh.charge([0], index)[0]
            entry = LedgerEntryWrite(0, index, "distributed", legacy, charged.epsilon_after, DELTA)
            repository.commit_round(run.id, RoundWrite(
                round_index=index, cohort=[0], survivors=[0], started_at=START, finished_at=START,
                aggregates=(AggregateWrite(np.zeros(4, dtype=np.int64), kind="lattice_sum"),), ledger_entries=[entry]))
    runner = CliRunner()
    report = json.loads(runner.invoke(fedvault, ["audit", "--db", path, "--json", "--relation", "add-remove"]).stdout)
    assert report["ok"], report["failures"]
    from privacy.accounting import recompute_epsilon
    expected = recompute_epsilon([with_relation(event, "add-remove")] * 3, DELTA)
    assert report["clients"][0]["central_epsilon"] == pytest.approx(expected, rel=1e-12)
    assert json.loads(runner.invoke(fedvault, ["audit", "--db", path, "--json"]).stdout)["clients"][0]["relation"] \
        == "zero-out"
