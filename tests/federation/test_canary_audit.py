"""End to end: `fedvault audit-run` on real runs (worker processes, SecAgg+, integer noise, storage).

A run whose noise is sized for a small fraction of its sensitivity (the hidden
``noise_sensitivity_scale`` knob, here 0.01: the noise is 100 times too small while the ledger
still claims ε = 1) must be flagged; the same run calibrated correctly must not be. With 40
canaries and every guess right the audit certifies ε_lb ≈ 1.6 > 1; a correct run at ε = 1 gets
there only if some 16 near-random guesses are all right (probability ~1e-4).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.canaries import CanaryPlan
from federation.config import RunConfig
from federation.coordinator import Coordinator
from storage.repositories import Repository

pytestmark = pytest.mark.slow

TINY = ["--dataset", "digits", "--split", "iid", "--clients", "2", "--canaries", "40", "--rounds", "1",
        "--local-epochs", "1", "--dropout", "0", "--no-history", "--epsilon", "1", "--workers", "2"]


def _audit(tmp_path, *extra):
    result = CliRunner().invoke(fedvault, ["audit-run", *TINY, "--out", str(tmp_path), *extra],
                                catch_exceptions=False)
    return result


def test_a_miscalibrated_run_is_flagged_and_a_calibrated_one_is_not(tmp_path):
    calibrated = _audit(tmp_path / "calibrated", "--json")
    assert calibrated.exit_code == 0, calibrated.output
    honest = json.loads(calibrated.output)
    assert honest["accounted_epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert honest["epsilon_lower_bound"] <= honest["accounted_epsilon"] and not honest["flagged"]

    settings = tmp_path / "broken.toml"
    settings.write_text("[run]\nextra = { noise_sensitivity_scale = 0.01 }\n")
    broken = _audit(tmp_path / "broken", "--config", str(settings))
    assert broken.exit_code == 1, broken.output
    assert "FLAG:" in broken.output
    # the ledger still claims ε = 1: only the audit of what was released shows the lie
    assert "accounted ε = 1.0000" in broken.output


def test_canary_updates_reach_the_sum_only_through_clipping_lattice_and_secagg(tmp_path):
    """Every client a canary, no noise: the server's unmasked, decoded sum holds exactly the
    included canaries' clipped updates (2C before the clip, C after), to lattice precision."""
    config = RunConfig(dataset="digits", clients=8, rounds=1, dropout_rate=0.0, noise="none", history=False,
                       local_epochs=1, workers=2)
    plan = CanaryPlan((0, 1, 2, 3, 4, 5, 6, 7), (3, 50, 99, 140, 260, 333, 512, 649),
                      (1, -1, 1, -1, 1, -1, 1, -1), (True, True, False, True, False, False, True, True),
                      2.0 * config.clip_norm)
    seen = []
    with Repository.open(str(tmp_path / "canaries.db")) as repository:
        coordinator = Coordinator(config, repository, key_directory=tmp_path / "keys",
                                  learner_override=plan.override())
        summary = coordinator.run(seen.append)
        assert summary.rounds[0].status == "completed" and summary.rounds[0].survivors == 8
        assert seen[0].masked_input_bytes_per_client > 0  # each canary uploaded a masked vector
        mean = repository.load_aggregates(coordinator.run_id, 0)["mean_update"].values
    total = np.asarray(mean, dtype=np.float64) * 8
    expected = np.zeros_like(total)
    for coordinate, sign, included in zip(plan.coordinates, plan.signs, plan.included):
        expected[coordinate] = sign * config.clip_norm if included else 0.0
    step = coordinator.step
    assert np.max(np.abs(total - expected)) < 8 * step  # lattice rounding of 8 clients, nothing else
    assert config.clip_norm > 50 * step
