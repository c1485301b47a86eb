"""Local and distributed noise releases on integer lattice coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.accounting import recompute_epsilon
from privacy.calibration import local_l2_sensitivity
from privacy.errors import InsufficientSurvivorsError, MechanismError
from privacy.events import DiscreteGaussianEvent, DistributedDiscreteGaussianEvent, DistributedSkellamEvent, SkellamEvent
from privacy.mechanisms import (
    DistributedNoise,
    LocalNoise,
    distributed_noise_for,
    local_noise_for,
    release_distributed_share,
    release_local,
)
from privacy.randomness import DeterministicTestSource

DELTA = 1e-5
# Variance checks: |s^2/sigma^2 - 1| < 4.5 sqrt(2/n) fails a correct sampler with probability ~7e-6.
Z_LIMIT = 4.5


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
def test_local_release_is_calibrated_for_twice_the_clip(mechanism):
    sensitivity = local_l2_sensitivity(8.0, 64)  # clip 8 lattice steps, d = 64, rounded
    noise = local_noise_for(mechanism, 2.0, DELTA, sensitivity, 64)
    assert noise.l2_sensitivity == pytest.approx(2 * (8.0 + 8.0))
    event = noise.event()
    assert isinstance(event, SkellamEvent if mechanism == "skellam" else DiscreteGaussianEvent)
    assert 2.0 * (1 - 1e-6) <= recompute_epsilon([event], DELTA) <= 2.0

    coordinates = np.arange(-32, 32, dtype=np.int64)
    n = 40_000
    stacked = np.tile(coordinates, n // 64)
    release = release_local(stacked, noise, DeterministicTestSource(b"local-" + mechanism.encode()),
                            allow_insecure_source=True)
    assert release.noised.dtype == np.int64 and release.noised.shape == stacked.shape
    assert release.event == event
    residual = release.noised - stacked
    variance = noise.scale if mechanism == "skellam" else noise.scale**2
    assert abs(residual.var() / variance - 1) < Z_LIMIT * math.sqrt(2 / residual.size)


def test_local_release_over_rounds_spends_the_target_in_total():
    noise = local_noise_for("discrete_gaussian", 4.0, DELTA, 10.0, 100, compositions=20)
    assert recompute_epsilon([noise.event()] * 20, DELTA) <= 4.0
    assert recompute_epsilon([noise.event()] * 21, DELTA) > 4.0


@pytest.mark.parametrize("mechanism", ["skellam", "discrete_gaussian"])
def test_distributed_shares_sum_to_the_central_noise(mechanism):
    noise = distributed_noise_for(mechanism, 1.0, DELTA, 4.0, 256, min_survivors=12, tolerated_colluders=2)
    assert noise.noise_floor == 10
    source = DeterministicTestSource(b"shares-" + mechanism.encode())
    total = np.zeros(256 * 100, dtype=np.int64)
    events = set()
    for _client in range(noise.noise_floor):
        shares = [
            release_distributed_share(np.zeros(256, dtype=np.int64), noise, source, allow_insecure_source=True)
            for _round in range(100)
        ]
        events.update(share.event for share in shares)
        total += np.concatenate([share.noised for share in shares])
    assert len(events) == 1
    (event,) = events
    central_variance = noise.noise_floor * (noise.share_scale if mechanism == "skellam" else noise.share_scale**2)
    assert abs(total.var() / central_variance - 1) < Z_LIMIT * math.sqrt(2 / total.size)
    assert recompute_epsilon([event], DELTA) <= 1.0


def test_distributed_round_fails_closed_below_the_floor_and_records_survivors():
    noise = distributed_noise_for("skellam", 1.0, DELTA, 2.0, 32, min_survivors=8, tolerated_colluders=1)
    release = release_distributed_share(np.zeros(32, dtype=np.int64), noise)
    assert isinstance(release.event, DistributedSkellamEvent) and release.event.survivors is None
    with pytest.raises(InsufficientSurvivorsError, match="abort the round"):
        noise.settle(release.event, 7)
    settled = noise.settle(release.event, 11)
    assert settled.survivors == 11 and settled.noise_floor == 7
    # The survivor count is recorded; the charge stays the floor's worst case.
    assert recompute_epsilon([settled], DELTA) == recompute_epsilon([release.event], DELTA)
    other = distributed_noise_for("skellam", 2.0, DELTA, 2.0, 32, min_survivors=8)
    with pytest.raises(MechanismError):
        other.settle(release.event, 11)


def test_ddgauss_share_event_carries_the_dimension_and_floor():
    noise = distributed_noise_for("discrete_gaussian", 3.0, DELTA, 6.0, 128, min_survivors=20)
    event = release_distributed_share(np.zeros(128, dtype=np.int64), noise).event
    assert isinstance(event, DistributedDiscreteGaussianEvent)
    assert (event.dimension, event.noise_floor) == (128, 20)
    assert recompute_epsilon([event], DELTA) <= 3.0


def test_releases_refuse_a_seeded_source_unless_told_it_is_a_test():
    noise = LocalNoise("skellam", 100.0, 2.0, 4.0)
    with pytest.raises(MechanismError, match="not the OS CSPRNG"):
        release_local(np.zeros(4, dtype=np.int64), noise, DeterministicTestSource(1))


@pytest.mark.parametrize(
    "coordinates",
    [np.zeros(4, dtype=np.float64), np.zeros((2, 2), dtype=np.int64), [0, 1, 2], np.array([2**60], dtype=np.int64)],
)
def test_releases_take_only_int64_lattice_coordinates(coordinates):
    with pytest.raises(MechanismError):
        release_local(coordinates, LocalNoise("discrete_gaussian", 3.0, 2.0, 2.0))


def test_noise_configurations_are_validated():
    with pytest.raises(MechanismError):
        LocalNoise("laplace", 1.0, 1.0, 1.0)
    with pytest.raises(MechanismError):
        DistributedNoise("skellam", 1.0, 5, 5, 1.0, 1.0, 10)
    noise = distributed_noise_for("skellam", 1.0, DELTA, 1.0, 10, min_survivors=3)
    with pytest.raises(MechanismError, match="calibrated dimension"):
        release_distributed_share(np.zeros(11, dtype=np.int64), noise)
