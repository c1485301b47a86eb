"""Sample-level DP-SGD inside a client, through Opacus, with the events its ledger must charge.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016): each step samples
every local example independently with probability q (Poisson sampling), clips each per-example
gradient to L2 norm ``max_grad_norm`` and adds N(0, (σ·max_grad_norm)²) to their sum. Its privacy
is that of the Poisson-subsampled Gaussian mechanism composed over the steps, which fedvault
records as the event

    SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(σ)), steps)

in the ledger's ``"dp-sgd"`` stream, separate from the update-level LDP stream.

Opacus pitfalls this module closes (docs/ALGORITHMS.md §3.4):

- ``PrivacyEngine`` defaults to the PRV accountant; we always pass ``accountant="rdp"``.
- ``make_private`` derives q as 1/len(data_loader), i.e. 1/⌈N/B⌉, not B/N, and its own Poisson
  loader then runs ⌊1/q⌋ steps per epoch. We build the Poisson loader ourselves with the exact q,
  run exactly the planned number of steps, and attach the accountant hook with that same q.
- Steps are counted as ⌈epochs·N/B⌉ in integer arithmetic: in floats ``90 // 0.04`` is 2249 (not
  2250), ``int(7 / 0.07)`` is 99 and ``math.ceil(9 / 0.009)`` is 1001.
- After training, the accountant's history must be exactly ``[(σ, q, steps)]``; anything else
  (a skipped or an extra step, a different q) fails closed instead of under-charging.

Randomness: Opacus' ``secure_mode`` needs the unmaintained torchcsprng, so the sampling and noise
generators are torch generators seeded from the OS CSPRNG (a fresh seed per call). That suits
simulation; like any float Gaussian it is exposed to floating-point attacks (Mironov 2012), which
is why fedvault's update-level noise is sampled on integers instead.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from privacy.errors import CalibrationError, PrivacyError

__all__ = [
    "DpSgdError",
    "DpSgdPlan",
    "DpSgdResult",
    "calibrate_noise_multiplier",
    "dp_sgd_event",
    "opacus_rdp_epsilon",
    "plan_dp_sgd",
    "train_dp_sgd",
]


class DpSgdError(PrivacyError):
    """DP-SGD could not run as planned (incompatible model, data, or an accountant history that
    does not match the charged event); nothing trained under it may be released."""


def _check_real(value: Any, name: str, *, low: float, high: float | None = None, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CalibrationError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        interval = f"({low}, {high}]" if high is not None else f"> {low}"
        raise CalibrationError(f"{name} must be finite and in {interval}, got {value!r}")
    return number


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise CalibrationError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_delta(delta: Any) -> float:
    value = _check_real(delta, "delta", low=0.0, high=1.0)
    if value == 1.0:
        raise CalibrationError("delta must be below 1 (delta = 1 allows anything)")
    return value


def dp_sgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    """The ledger event for ``steps`` Poisson-sampled Gaussian steps:
    ``SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(σ)), steps)``."""
    from privacy.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

    sigma = _check_real(noise_multiplier, "noise_multiplier", low=0.0)
    rate = _check_real(sample_rate, "sample_rate", low=0.0, high=1.0)
    count = _check_count(steps, "steps")
    return SelfComposedEvent(PoissonSampledEvent(rate, GaussianEvent(sigma)), count)


@dataclass(frozen=True)
class DpSgdPlan:
    """What one client's DP-SGD run will do, fixed before training so it can be charged first.

    Attributes:
        dataset_size: N, local examples.
        sample_rate: q, the Poisson inclusion probability of each example per step.
        steps: optimizer steps (each one is charged, empty batches included).
        noise_multiplier: σ, noise std over the per-example clip norm.
        expected_batch_size: q·N (a float), the divisor of the noisy gradient sum.
    """

    dataset_size: int
    sample_rate: float
    steps: int
    noise_multiplier: float

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.dataset_size

    @property
    def event(self) -> Any:
        """The event to charge to the client's ``"dp-sgd"`` ledger stream before training."""
        return dp_sgd_event(self.noise_multiplier, self.sample_rate, self.steps)


def plan_dp_sgd(
    dataset_size: int,
    noise_multiplier: float,
    *,
    expected_batch_size: int | None = None,
    sample_rate: float | None = None,
    epochs: int | None = None,
    steps: int | None = None,
) -> DpSgdPlan:
    """Fix q and the step count of a DP-SGD run.

    Give exactly one of ``expected_batch_size`` (B, then q = B/N) and ``sample_rate`` (q), and
    exactly one of ``epochs`` and ``steps``. From epochs, steps = ⌈epochs·N/B⌉ computed in
    integers; with a float q, ⌈epochs/q⌉ on q's shortest decimal form (9 epochs at q = 0.009 is
    1000 steps, where float division gives ``math.ceil(9 / 0.009)`` = 1001).

    Raises:
        CalibrationError: a missing/duplicate choice or an out-of-range value.
    """
    size = _check_count(dataset_size, "dataset_size")
    sigma = _check_real(noise_multiplier, "noise_multiplier", low=0.0)
    if (expected_batch_size is None) == (sample_rate is None):
        raise CalibrationError("give exactly one of expected_batch_size and sample_rate")
    if (epochs is None) == (steps is None):
        raise CalibrationError("give exactly one of epochs and steps")
    if expected_batch_size is not None:
        batch = _check_count(expected_batch_size, "expected_batch_size")
        if batch > size:
            raise CalibrationError(f"expected_batch_size {batch} exceeds the dataset size {size}")
        rate_fraction = Fraction(batch, size)
        rate = batch / size
    else:
        rate = _check_real(sample_rate, "sample_rate", low=0.0, high=1.0)
        rate_fraction = Fraction(repr(rate))
    if steps is not None:
        count = _check_count(steps, "steps")
    else:
        rounds = _check_count(epochs, "epochs")
        count = math.ceil(rounds / rate_fraction)  # exact: ⌈epochs·N/B⌉
    return DpSgdPlan(dataset_size=size, sample_rate=rate, steps=count, noise_multiplier=sigma)


def opacus_rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps by Opacus' RDP accountant (default orders)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [
        (
            _check_real(noise_multiplier, "noise_multiplier", low=0.0),
            _check_real(sample_rate, "sample_rate", low=0.0, high=1.0),
            _check_count(steps, "steps"),
        )
    ]
    return float(accountant.get_epsilon(delta=_check_delta(delta)))


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest σ (to Opacus' bisection tolerance) whose RDP ε after ``steps`` Poisson-sampled
    Gaussian steps at rate ``sample_rate`` is at most ``target_epsilon`` at ``delta``.

    Uses ``opacus.accountants.utils.get_noise_multiplier`` with ``accountant="rdp"`` and an
    explicit step count (never epochs, to avoid its ``int(epochs / q)``). The returned σ meets
    the target: ε(σ) <= target_epsilon, and ε(σ) >= target_epsilon − epsilon_tolerance.

    Raises:
        CalibrationError: bad inputs, or no σ up to 10⁶ reaches the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    target = _check_real(target_epsilon, "target_epsilon", low=0.0)
    tolerance = _check_real(epsilon_tolerance, "epsilon_tolerance", low=0.0)
    try:
        sigma = get_noise_multiplier(
            target_epsilon=target,
            target_delta=_check_delta(delta),
            sample_rate=_check_real(sample_rate, "sample_rate", low=0.0, high=1.0),
            steps=_check_count(steps, "steps"),
            accountant="rdp",
            epsilon_tolerance=tolerance,
        )
    except ValueError as error:
        raise CalibrationError(
            f"no noise multiplier reaches epsilon {target} at delta {delta} over {steps} steps "
            f"at q={sample_rate}: {error}"
        ) from None
    return float(sigma)


@dataclass(frozen=True)
class DpSgdResult:
    """Outcome of :func:`train_dp_sgd`.

    Attributes:
        model: the caller's module, trained in place (Opacus hooks removed).
        plan: the plan that ran (``result.event`` is its event).
        accountant_history: Opacus' RDP history after training, ``((σ, q, steps),)``.
        opacus_epsilon: Opacus' RDP ε at ``delta``, for cross-checking the ledger.
        delta: the δ of ``opacus_epsilon``.
        mean_loss: mean training loss over the non-empty batches (NaN if all were empty).
        examples_seen: total examples over all steps (Poisson: about q·N·steps).
    """

    model: Any
    plan: DpSgdPlan
    accountant_history: tuple[tuple[float, float, int], ...]
    opacus_epsilon: float
    delta: float
    mean_loss: float
    examples_seen: int

    @property
    def event(self) -> Any:
        """The event charged for this run (``plan.event``), for the ``"dp-sgd"`` ledger stream."""
        return self.plan.event


def _fresh_generator(device: Any) -> Any:
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
    return generator


def train_dp_sgd(
    model: Any,
    optimizer: Any,
    data: Any,
    plan: DpSgdPlan,
    *,
    max_grad_norm: float,
    delta: float,
    criterion: Callable[[Any, Any], Any] | None = None,
    sampling_generator: Any = None,
    noise_generator: Any = None,
) -> DpSgdResult:
    """Train ``model`` with DP-SGD for exactly ``plan.steps`` Poisson-sampled steps.

    Args:
        model: a torch ``nn.Module`` that Opacus supports (no batch norm; see
            ``opacus.validators.ModuleValidator``). Trained in place and returned.
        optimizer: a torch optimizer over exactly ``model``'s parameters.
        data: a map-style ``Dataset`` of (input, target) pairs, or a ``DataLoader`` over one (its
            dataset and collate function are used; its batching is replaced by Poisson sampling).
        plan: from :func:`plan_dp_sgd`, with ``plan.dataset_size == len(dataset)``; charge
            ``plan.event`` to the ledger before calling this.
        max_grad_norm: per-example L2 clip C > 0.
        delta: δ for the reported Opacus ε.
        criterion: loss with mean reduction, ``criterion(outputs, targets)``; default
            cross-entropy.
        sampling_generator, noise_generator: torch generators for reproducible simulations;
            by default fresh ones seeded from the OS CSPRNG.

    Returns:
        A :class:`DpSgdResult`.

    Raises:
        CalibrationError: bad ``max_grad_norm`` or ``delta``.
        DpSgdError: data size differs from the plan, Opacus rejects the model or optimizer, or
            the accountant history after training is not exactly ``[(σ, q, steps)]``.
    """
    import torch
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from opacus.validators.errors import UnsupportedModuleError
    from torch import nn
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    clip = _check_real(max_grad_norm, "max_grad_norm", low=0.0)
    delta = _check_delta(delta)
    if not isinstance(plan, DpSgdPlan):
        raise DpSgdError(f"plan must be a DpSgdPlan from plan_dp_sgd, got {type(plan).__name__}")
    if not isinstance(model, nn.Module):
        raise DpSgdError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise DpSgdError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    collate_fn = None
    if isinstance(data, DataLoader):
        dataset, collate_fn = data.dataset, data.collate_fn
    elif isinstance(data, Dataset):
        dataset = data
    else:
        raise DpSgdError(f"data must be a torch Dataset or DataLoader, got {type(data).__name__}")
    if isinstance(dataset, IterableDataset):
        raise DpSgdError("Poisson sampling needs a map-style dataset, not an IterableDataset")
    if len(dataset) != plan.dataset_size:
        raise DpSgdError(f"the plan is for {plan.dataset_size} examples but the dataset has {len(dataset)}")
    loss_fn = criterion if criterion is not None else nn.CrossEntropyLoss()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    sampler_rng = sampling_generator if sampling_generator is not None else _fresh_generator("cpu")
    noise_rng = noise_generator if noise_generator is not None else _fresh_generator(device)

    # Poisson sampling at exactly plan.sample_rate; each pass yields ⌊1/q⌋ batches and we simply
    # keep drawing until plan.steps, since every batch is an independent draw.
    loader = DPDataLoader(dataset, sample_rate=plan.sample_rate, collate_fn=collate_fn, generator=sampler_rng)
    with warnings.catch_warnings():
        # We chose the non-secure RNG knowingly (see the module docstring).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    try:
        hooks, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=clip,
            poisson_sampling=False,  # the loader above already samples with the exact q
            noise_generator=noise_rng,
            wrap_model=False,
        )
    except (UnsupportedModuleError, ValueError) as error:
        raise DpSgdError(f"Opacus cannot make this model/optimizer private: {error}") from error
    # make_private accounted with q' = 1/len(loader) = 1/⌊1/q⌋ and averaged by ⌊N·q'⌋; replace
    # both with the plan's q so that what is sampled is what is charged.
    private_optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
    private_optimizer.expected_batch_size = plan.expected_batch_size

    losses: list[float] = []
    examples = 0
    taken = 0
    model.train()
    try:
        with warnings.catch_warnings():
            # Opacus' per-sample hooks make torch warn "full backward hook is firing" on every
            # step whenever the inputs do not require gradients, which is the normal case.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            while taken < plan.steps:
                for inputs, targets in private_loader:
                    inputs, targets = inputs.to(device), targets.to(device)
                    private_optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(inputs), targets)
                    loss.backward()
                    private_optimizer.step()
                    taken += 1
                    batch = int(inputs.shape[0])
                    examples += batch
                    if batch:  # an empty Poisson batch is still a (pure-noise) step, with no loss
                        losses.append(float(loss.detach()))
                    if taken == plan.steps:
                        break
    finally:
        # Clear Opacus' per-sample state first: zero_grad re-creates .grad_sample, cleanup drops it.
        private_optimizer.zero_grad(set_to_none=True)
        hooks.cleanup()

    history = tuple((float(s), float(q), int(n)) for s, q, n in engine.accountant.history)
    expected = ((plan.noise_multiplier, plan.sample_rate, plan.steps),)
    if history != expected:
        raise DpSgdError(
            f"Opacus accounted {list(history)} but the plan charged {list(expected)}; "
            "the trained model must not be released"
        )
    return DpSgdResult(
        model=model,
        plan=plan,
        accountant_history=history,
        opacus_epsilon=float(engine.accountant.get_epsilon(delta=delta)),
        delta=delta,
        mean_loss=float(np.mean(losses)) if losses else float("nan"),
        examples_seen=examples,
    )
