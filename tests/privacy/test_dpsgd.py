"""Specification of sample-level DP-SGD through Opacus (privacy.dpsgd)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.accounting import recompute_epsilon
from privacy.dpsgd import (
    DpSgdError,
    calibrate_noise_multiplier,
    dp_sgd_event,
    opacus_rdp_epsilon,
    plan_dp_sgd,
    train_dp_sgd,
)
from privacy.errors import CalibrationError
from privacy.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent, event_from_json, event_to_json

DELTA = 1e-5


def epsilon_from_event(event, delta=DELTA):
    """Recompute ε from the charged event alone, with a fresh Opacus RDP accountant."""
    assert isinstance(event, SelfComposedEvent)
    sampled = event.event
    assert isinstance(sampled, PoissonSampledEvent) and isinstance(sampled.event, GaussianEvent)
    accountant = RDPAccountant()
    accountant.history = [(sampled.event.noise_multiplier, sampled.sampling_rate, event.count)]
    return accountant.get_epsilon(delta=delta)


def separable_data(n=96, features=4, seed=0):
    generator = torch.Generator().manual_seed(seed)  # test-only data
    x = torch.randn(n, features, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny models: intra-op threads only contend with the other test processes on the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- planning: q and the step count -------------------------------------------------------


def test_steps_are_the_integer_ceiling_of_epochs_times_n_over_b():
    assert plan_dp_sgd(60000, 1.1, expected_batch_size=256, epochs=60).steps == 14063  # ⌈14062.5⌉
    assert plan_dp_sgd(100, 1.0, expected_batch_size=30, epochs=3).steps == 10
    assert plan_dp_sgd(100, 1.0, expected_batch_size=25, epochs=3).steps == 12
    plan = plan_dp_sgd(60000, 1.1, expected_batch_size=256, steps=500)
    assert plan.steps == 500 and plan.sample_rate == 256 / 60000
    assert plan.expected_batch_size == pytest.approx(256.0)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10**7), epochs=st.integers(1, 500), data=st.data())
def test_steps_are_the_fewest_that_cover_the_epochs(size, epochs, data):
    batch = data.draw(st.integers(1, size))
    steps = plan_dp_sgd(size, 1.0, expected_batch_size=batch, epochs=epochs).steps
    # The fewest steps whose expected examples (steps·B) reach epochs·N.
    assert steps * batch >= epochs * size > (steps - 1) * batch


def test_float_sample_rate_counts_steps_on_its_decimal_value():
    # Float arithmetic miscounts both ways: 90 // 0.04 = 2249, int(7 / 0.07) = 99,
    # math.ceil(9 / 0.009) = 1001. The right counts are 2250, 100 and 1000.
    assert (90 // 0.04, int(7 / 0.07), math.ceil(9 / 0.009)) == (2249, 99, 1001)
    assert plan_dp_sgd(1000, 1.5, sample_rate=0.04, epochs=90).steps == 2250
    assert plan_dp_sgd(1000, 1.5, sample_rate=0.07, epochs=7).steps == 100
    assert plan_dp_sgd(1000, 1.5, sample_rate=0.009, epochs=9).steps == 1000
    assert plan_dp_sgd(1000, 1.5, sample_rate=0.3, epochs=3).steps == 10


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(expected_batch_size=8, sample_rate=0.1, epochs=1), "exactly one of expected_batch_size"),
        (dict(epochs=1), "exactly one of expected_batch_size"),
        (dict(expected_batch_size=8, epochs=1, steps=3), "exactly one of epochs"),
        (dict(expected_batch_size=8), "exactly one of epochs"),
        (dict(expected_batch_size=200, epochs=1), "exceeds the dataset size"),
        (dict(sample_rate=0.0, epochs=1), "sample_rate"),
        (dict(sample_rate=1.5, epochs=1), "sample_rate"),
        (dict(expected_batch_size=8, epochs=0), "epochs"),
        (dict(expected_batch_size=8, steps=2.5), "steps"),
    ],
)
def test_plan_inputs_are_validated(kwargs, reason):
    with pytest.raises(CalibrationError, match=reason):
        plan_dp_sgd(100, 1.0, **kwargs)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("inf"), True])
def test_noise_multiplier_must_be_positive(sigma):
    with pytest.raises(CalibrationError, match="noise_multiplier"):
        plan_dp_sgd(100, sigma, expected_batch_size=10, steps=5)


# --- events and accounting oracles --------------------------------------------------------


def test_event_is_a_self_composed_poisson_sampled_gaussian():
    event = plan_dp_sgd(60000, 1.1, expected_batch_size=256, steps=14062).event
    assert event == SelfComposedEvent(PoissonSampledEvent(256 / 60000, GaussianEvent(1.1)), 14062)
    assert event_from_json(event_to_json(event)) == event


def test_published_rdp_oracles():
    # TF-Privacy's MNIST default (docs/ALGORITHMS.md §3.6) and Opacus' own test constant.
    assert round(epsilon_from_event(dp_sgd_event(1.1, 256 / 60000, 14062)), 4) == 2.5966
    assert opacus_rdp_epsilon(1.1, 256 / 60000, 14062, DELTA) == pytest.approx(2.5966, abs=5e-5)
    assert opacus_rdp_epsilon(1.5, 0.04, 2250, DELTA) == pytest.approx(7.32911117143, rel=1e-9)


def test_calibration_reproduces_opacus_constant_and_meets_the_target():
    sigma = calibrate_noise_multiplier(8.0, DELTA, 0.04, 2000)
    assert sigma == 1.356201171875  # opacus test constant (RDP, q 0.04, 2000 steps)
    epsilon = opacus_rdp_epsilon(sigma, 0.04, 2000, DELTA)
    assert 8.0 - 0.01 <= epsilon <= 8.0


@pytest.mark.parametrize("target", [0.5, 2.0, 4.0])
def test_calibrated_sigma_meets_each_target_tightly(target):
    sigma = calibrate_noise_multiplier(target, DELTA, 0.01, 300, epsilon_tolerance=0.001)
    assert target - 0.001 <= opacus_rdp_epsilon(sigma, 0.01, 300, DELTA) <= target
    # A slightly smaller σ would overshoot: the answer is (nearly) the smallest that works.
    assert opacus_rdp_epsilon(sigma * 0.99, 0.01, 300, DELTA) > target


def test_calibration_refuses_bad_inputs():
    with pytest.raises(CalibrationError, match="target_epsilon"):
        calibrate_noise_multiplier(0.0, DELTA, 0.04, 100)
    with pytest.raises(CalibrationError, match="delta"):
        calibrate_noise_multiplier(1.0, 0.0, 0.04, 100)
    with pytest.raises(CalibrationError, match="steps"):
        calibrate_noise_multiplier(1.0, DELTA, 0.04, 0)
    with pytest.raises(CalibrationError, match="no noise multiplier"):
        calibrate_noise_multiplier(1e-9, DELTA, 1.0, 10**6)


# --- training ------------------------------------------------------------------------------


def test_training_charges_exactly_what_opacus_accounted():
    dataset = separable_data()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    plan = plan_dp_sgd(len(dataset), 1.3, expected_batch_size=12, epochs=2)
    assert plan.steps == 16 and plan.sample_rate == 0.125
    result = train_dp_sgd(model, optimizer, dataset, plan, max_grad_norm=1.0, delta=DELTA,
                          sampling_generator=seeded(1), noise_generator=seeded(2))
    assert result.accountant_history == ((1.3, 0.125, 16),)
    assert result.event == dp_sgd_event(1.3, 0.125, 16)
    # ε recomputed from the event alone equals the engine's own accountant, by hand and through
    # the ledger's accountant (Opacus replay and fedvault's own RDP curves).
    assert epsilon_from_event(result.event) == result.opacus_epsilon
    assert recompute_epsilon([result.event], DELTA, "opacus-rdp") == result.opacus_epsilon
    assert recompute_epsilon([result.event], DELTA) == pytest.approx(result.opacus_epsilon, rel=1e-9)
    assert result.opacus_epsilon == opacus_rdp_epsilon(1.3, 0.125, 16, DELTA)
    assert result.model is model
    # Opacus' hooks are gone: the model trains normally afterwards.
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


class BatchSizeRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.linear(x)


def test_batches_are_poisson_sampled_at_the_planned_rate():
    # 96 examples x 40 steps at q = 1/8: examples seen ~ Binomial(3840, 1/8), mean 480, sd 20.5.
    # A +-110 window (5.4 sd) fails by chance with probability < 1e-7.
    dataset = separable_data()
    model = BatchSizeRecorder()
    plan = plan_dp_sgd(len(dataset), 1.0, sample_rate=0.125, steps=40)
    result = train_dp_sgd(model, torch.optim.SGD(model.parameters(), lr=0.1), dataset, plan,
                          max_grad_norm=1.0, delta=DELTA, sampling_generator=seeded(3))
    assert len(model.sizes) == 40 and sum(model.sizes) == result.examples_seen
    assert abs(result.examples_seen - 480) <= 110
    # Poisson batches vary in size (a fixed-size batcher, which voids the accounting, would not):
    # the chance that 40 Binomial(96, 1/8) draws all coincide is below 1e-30.
    assert len(set(model.sizes)) > 1


def test_dp_sgd_learns_a_separable_task():
    dataset = separable_data(n=200, seed=4)
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    plan = plan_dp_sgd(len(dataset), 0.8, expected_batch_size=40, steps=30)
    train_dp_sgd(model, torch.optim.SGD(model.parameters(), lr=1.0), dataset, plan, max_grad_norm=1.0, delta=DELTA)
    x, y = dataset.tensors
    # Fresh OS-seeded noise each run; over 8 seeds this setup reached 0.95-0.97 accuracy.
    assert (model(x).argmax(dim=1) == y).float().mean().item() >= 0.85


def test_fixed_generators_reproduce_a_run_and_the_noise_generator_drives_the_noise():
    dataset = separable_data(n=60)
    runs = []
    for noise_seed in (5, 5, 6):
        torch.manual_seed(0)  # same initial weights each run
        model = nn.Linear(4, 2)
        plan = plan_dp_sgd(len(dataset), 0.8, expected_batch_size=10, steps=5)
        train_dp_sgd(model, torch.optim.SGD(model.parameters(), lr=1.0), dataset, plan,
                     max_grad_norm=1.0, delta=DELTA, sampling_generator=seeded(7),
                     noise_generator=seeded(noise_seed))
        runs.append(torch.cat([p.detach().ravel() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_a_dataloader_is_accepted_and_its_batching_replaced():
    dataset = separable_data(n=40)
    model = nn.Linear(4, 2)
    loader = DataLoader(dataset, batch_size=40, shuffle=True)
    plan = plan_dp_sgd(40, 1.0, expected_batch_size=5, steps=7)
    result = train_dp_sgd(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, plan, max_grad_norm=0.5, delta=DELTA)
    assert result.accountant_history == ((1.0, 0.125, 7),)
    assert math.isfinite(result.opacus_epsilon)


def test_training_refuses_mismatches_before_touching_the_model():
    dataset = separable_data(n=40)
    model = nn.Linear(4, 2)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DpSgdError, match="plan is for 50 examples"):
        train_dp_sgd(model, optimizer, dataset, plan_dp_sgd(50, 1.0, expected_batch_size=5, steps=3), max_grad_norm=1.0, delta=DELTA)
    plan = plan_dp_sgd(40, 1.0, expected_batch_size=5, steps=3)
    with pytest.raises(DpSgdError, match="cannot make this model"):
        train_dp_sgd(model, torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1), dataset, plan, max_grad_norm=1.0, delta=DELTA)
    batch_norm = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(DpSgdError, match="cannot make this model"):
        train_dp_sgd(batch_norm, torch.optim.SGD(batch_norm.parameters(), lr=0.1), dataset, plan, max_grad_norm=1.0, delta=DELTA)
    with pytest.raises(CalibrationError, match="max_grad_norm"):
        train_dp_sgd(model, optimizer, dataset, plan, max_grad_norm=0.0, delta=DELTA)
    with pytest.raises(CalibrationError, match="delta"):
        train_dp_sgd(model, optimizer, dataset, plan, max_grad_norm=1.0, delta=1.5)
    with pytest.raises(DpSgdError, match="Dataset or DataLoader"):
        train_dp_sgd(model, optimizer, [(torch.zeros(4), 0)], plan, max_grad_norm=1.0, delta=DELTA)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
