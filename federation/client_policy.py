"""A client's own privacy policy: the weakest round it will take part in, whatever the server plans.

Every number that protects a client's update (noise mode and scale, clip, threshold, cohort,
survivor floor, lattice) is chosen by the server and announced in its round plan and SecAgg+
round config. A deviating server could announce no noise, a huge clip or a threshold of 2, and
"the worst case is an ε-LDP release" would no longer hold. A :class:`ClientPolicy` is the
client's floor under those numbers: the client checks the plan before it trains or uploads
anything (``check_plan``) and the round's signed SecAgg+ config before it answers the first
request (``check_round``); a plan below the policy is refused with a message naming the knob.

Knobs (the TOML keys of ``fedvault client run --policy FILE`` are the field names):

- ``allowed_noise_modes`` (default "local", "distributed": no-noise rounds are refused unless the
  client allows "none"), ``allowed_mechanisms``, ``allowed_lattices``;
- ``min_noise_multiplier``: the least σ/Δ₂ of the noise this client adds *itself* to one upload
  (its own share's standard deviation over its own L2 sensitivity, both in the plan's integer
  units): a variance floor that holds even if every other share is missing;
- ``max_round_epsilon`` (at ``policy_delta``): the largest ε of one upload's release, computed by
  the client from the plan's noise event (RDP, ``privacy.accounting``); in distributed mode that
  event assumes the plan's ``min_survivors`` honest shares, which ``check_round`` ties to the
  round's survivor floor;
- ``max_clip_norm``: the largest clip norm (model units);
- ``max_run_epsilon``: the client's own budget over the whole run; its ledger uses the smaller of
  this and the run's announced budget, so a server announcing a huge budget changes nothing;
- ``min_cohort``, ``min_threshold``, ``min_threshold_fraction`` (t / k of the neighbour graph),
  ``min_survivors`` (the SecAgg+ round's minimum survivors).

Defaults are safe without knowing the run: noise required, t >= k/2 (the parameter table's ratio),
cohort >= 3, survivors >= 2. The simulation's clients hold ``ClientPolicy.accepting(config)``, the
policy of a client that agreed to exactly the run's published config, and enforce it through the
same checks.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from federation.config import LATTICES, MECHANISMS, NOISE_MODES, RunConfig
from federation.errors import FederationError
from federation.round_plan import RoundPlan
from secagg.config import RoundConfig

__all__ = ["ClientPolicy", "PolicyError", "PolicyRefusedError"]

SAFE_NOISE_MODES = ("local", "distributed")


class PolicyError(FederationError):
    """A policy itself is invalid (bad value, unknown knob, unreadable file)."""


class PolicyRefusedError(FederationError):
    """A round is below this client's policy; ``knob`` names the policy field that refused it."""

    def __init__(self, knob: str, message: str) -> None:
        super().__init__(f"round refused by this client's policy ({knob}): {message}")
        self.knob = knob


def _names(value, allowed: tuple[str, ...], knob: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list, frozenset, set)):
        raise PolicyError(f"{knob} must be a list of names from {', '.join(allowed)}")
    names = tuple(sorted(set(value)))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise PolicyError(f"{knob} must name at least one of {', '.join(allowed)}; got {list(value)!r}")
    return names


def _number(value, knob: str, *, low: float, high: float = math.inf, open_low: bool = False,
            optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (open_low and value == low) or value > high:
        bound = f"{'>' if open_low else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise PolicyError(f"{knob} must be a finite number {bound}, got {value!r}")
    return float(value)


def _integer(value, knob: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PolicyError(f"{knob} must be an int >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class ClientPolicy:
    """The weakest round this client takes part in (module doc); validated on construction."""

    allowed_noise_modes: tuple[str, ...] = SAFE_NOISE_MODES
    allowed_mechanisms: tuple[str, ...] = MECHANISMS
    allowed_lattices: tuple[str, ...] = LATTICES
    min_noise_multiplier: float = 0.0
    max_round_epsilon: float | None = None
    policy_delta: float = 1e-5
    max_clip_norm: float | None = None
    max_run_epsilon: float | None = None
    min_cohort: int = 3
    min_threshold: int = 2
    min_threshold_fraction: float = 0.5
    min_survivors: int = 2
    # Only for the operator's own scratch simulations whose sums are never released (the
    # unlearning oracle replays a run's cohorts below its noise floor): accept a round that
    # completes with fewer shares than its noise was calibrated for. A real client keeps False.
    allow_floor_below_noise_calibration: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "allowed_noise_modes", _names(self.allowed_noise_modes, NOISE_MODES, "allowed_noise_modes"))
        set_(self, "allowed_mechanisms", _names(self.allowed_mechanisms, MECHANISMS, "allowed_mechanisms"))
        set_(self, "allowed_lattices", _names(self.allowed_lattices, LATTICES, "allowed_lattices"))
        set_(self, "min_noise_multiplier", _number(self.min_noise_multiplier, "min_noise_multiplier", low=0.0))
        set_(self, "max_round_epsilon", _number(self.max_round_epsilon, "max_round_epsilon", low=0.0,
                                                open_low=True, optional=True))
        set_(self, "policy_delta", _number(self.policy_delta, "policy_delta", low=0.0, high=0.5, open_low=True))
        set_(self, "max_clip_norm", _number(self.max_clip_norm, "max_clip_norm", low=0.0, open_low=True,
                                            optional=True))
        set_(self, "max_run_epsilon", _number(self.max_run_epsilon, "max_run_epsilon", low=0.0, open_low=True,
                                              optional=True))
        if not isinstance(self.allow_floor_below_noise_calibration, bool):
            raise PolicyError("allow_floor_below_noise_calibration must be true or false, got "
                              f"{self.allow_floor_below_noise_calibration!r}")
        _integer(self.min_cohort, "min_cohort", 2)
        _integer(self.min_threshold, "min_threshold", 1)
        _integer(self.min_survivors, "min_survivors", 1)
        set_(self, "min_threshold_fraction", _number(self.min_threshold_fraction, "min_threshold_fraction",
                                                     low=0.0, high=1.0))
        if self.allowed_noise_modes == ("none",) and (self.min_noise_multiplier > 0 or self.max_round_epsilon):
            raise PolicyError("a policy that allows only noise mode 'none' cannot ask for a noise floor")

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: dict) -> ClientPolicy:
        """From a dict of knob -> value (a TOML table); unknown knobs are refused."""
        if not isinstance(values, dict):
            raise PolicyError("a policy is a table of knob = value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PolicyError(f"unknown policy knob(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> ClientPolicy:
        """Read a policy file: knobs at the top level or under a ``[policy]`` table."""
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyError(f"cannot read policy file {path}: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"policy file {path} is not valid TOML: {error}") from None
        if set(values) == {"policy"}:
            values = values["policy"]
        return cls.from_mapping(values)

    def replace(self, **changes) -> ClientPolicy:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return ClientPolicy(**values)

    @classmethod
    def accepting(cls, config: RunConfig) -> ClientPolicy:
        """The policy of a client that agreed to exactly ``config``: its noise mode, mechanism and
        lattice, a clip no larger than its clip norm, the structural floors of a valid round."""
        return cls(allowed_noise_modes=(config.noise,), allowed_mechanisms=(config.mechanism,),
                   allowed_lattices=(config.lattice,), max_clip_norm=config.clip_norm, min_cohort=2,
                   min_threshold=1, min_threshold_fraction=0.0, min_survivors=1)

    # --- checks ------------------------------------------------------------------------------

    def run_budget(self, announced: float) -> float:
        """The ε budget this client's own ledger enforces: the run's announced one, lowered to
        ``max_run_epsilon`` if the policy sets it."""
        return announced if self.max_run_epsilon is None else min(announced, self.max_run_epsilon)

    def check_plan(self, plan: RoundPlan) -> None:
        """PolicyRefusedError (naming the knob) unless ``plan`` meets the policy."""
        noise = plan.noise
        if noise.mode not in self.allowed_noise_modes:
            raise PolicyRefusedError("allowed_noise_modes", f"the plan's noise mode is {noise.mode!r}; this client "
                                     f"allows {', '.join(self.allowed_noise_modes)}")
        if noise.mode != "none" and noise.mechanism not in self.allowed_mechanisms:
            raise PolicyRefusedError("allowed_mechanisms", f"the plan's mechanism is {noise.mechanism!r}; this "
                                     f"client allows {', '.join(self.allowed_mechanisms)}")
        if plan.lattice not in self.allowed_lattices:
            raise PolicyRefusedError("allowed_lattices", f"the plan's lattice is {plan.lattice!r}; this client "
                                     f"allows {', '.join(self.allowed_lattices)}")
        if self.max_clip_norm is not None and plan.clip_norm > self.max_clip_norm:
            raise PolicyRefusedError("max_clip_norm", f"the plan clips at {plan.clip_norm:g} > {self.max_clip_norm:g}")
        if noise.mode == "none":
            return
        multiplier = noise.std / noise.l2_sensitivity if noise.l2_sensitivity > 0 else 0.0
        if multiplier < self.min_noise_multiplier:
            raise PolicyRefusedError("min_noise_multiplier", f"this client's own noise would have σ/Δ₂ = "
                                     f"{multiplier:.4g} < {self.min_noise_multiplier:g}")
        if self.max_round_epsilon is not None:
            epsilon = self.round_epsilon(plan)
            if epsilon > self.max_round_epsilon:
                raise PolicyRefusedError("max_round_epsilon", f"one upload would cost ε = {epsilon:.4g} > "
                                         f"{self.max_round_epsilon:g} (δ = {self.policy_delta:g})")

    def round_epsilon(self, plan: RoundPlan) -> float:
        """ε at ``policy_delta`` of one upload under ``plan``'s noise (inf without noise)."""
        from privacy.accounting import epsilon_from_rdp, rdp_of

        mechanism = plan.noise.mechanism_object()
        if mechanism is None:
            return math.inf
        try:
            return epsilon_from_rdp(rdp_of(mechanism.event()), self.policy_delta)[0]
        except (ValueError, ArithmeticError) as error:  # a degenerate plan (zero noise) accounts to nothing
            raise PolicyRefusedError("max_round_epsilon", f"the plan's noise cannot be accounted: {error}") from None

    def check_round(self, config: RoundConfig, plan: RoundPlan | None = None) -> None:
        """PolicyRefusedError unless the round's signed SecAgg+ config meets the policy (and, with
        ``plan``, its survivor floor covers the noise calibration's ``min_survivors``)."""
        cohort = len(config.client_ids)
        if cohort < self.min_cohort:
            raise PolicyRefusedError("min_cohort", f"the round samples {cohort} clients < {self.min_cohort}")
        if config.threshold < self.min_threshold:
            raise PolicyRefusedError("min_threshold", f"the round's threshold is {config.threshold} < "
                                     f"{self.min_threshold}")
        if config.threshold < self.min_threshold_fraction * config.neighbours_k:
            raise PolicyRefusedError("min_threshold_fraction", f"the round's threshold {config.threshold} is below "
                                     f"{self.min_threshold_fraction:g} of its {config.neighbours_k} neighbours")
        if config.minimum_survivors < self.min_survivors:
            raise PolicyRefusedError("min_survivors", f"the round completes with as few as {config.minimum_survivors} "
                                     f"survivors < {self.min_survivors}")
        if plan is not None and plan.noise.mode == "distributed" and plan.noise.min_survivors > config.minimum_survivors \
                and not self.allow_floor_below_noise_calibration:
            raise PolicyRefusedError("min_survivors", f"the noise is calibrated for {plan.noise.min_survivors} "
                                     f"shares but the round completes with {config.minimum_survivors}")
