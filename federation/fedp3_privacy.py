"""The privacy plan of an LDP-FedP3 run: one noise level for all layer-group sums, one charge.

A FedP3 client (docs/ALGORITHMS.md §4) clips everything it uploads in a round, its owned body
groups and the head, to ‖·‖₂ <= C together (``privacy.fedp3.client_upload``), and each group
goes into its own secure sum. Removing the client changes the vector of all group sums by at
most C, however the C is spread over the groups, so the round is ONE release of that vector:

- Sensitivity. All groups share the run's lattice step Δ, so the client's integer coordinates
  over all groups have L2 norm <= C/Δ + 2ρ·√(Σ_g blocks_g) (``coordinate_l2_sensitivity`` over
  the group sizes; the rounding term adds up over every group's blocks, so the bound holds for
  any subset a client uploads). Each group's noise is calibrated to this joint sensitivity, and
  D = Σ_g coordinates_g is the release's dimension.
- Noise. Every group sum carries the same central noise per coordinate. Its senders add shares
  of it: with a floor f_g (``noise_floor`` of the senders the group expects: the policy's owners
  of an expected cohort), Skellam shares μ/f_g; discrete Gaussian shares σ*·√(n*/f_g), where
  n* = max_g f_g and σ* is calibrated for n* shares (DDGauss, §3.3). Groups with fewer than f_g
  senders are skipped that round.
- One charge. The joint release is charged once per round, before the first masked input
  leaves, with the event of the weakest group: the one of floor n*, evaluated over all D
  coordinates. That event dominates the whole release at every Rényi order: the groups'
  quadratic terms add up to at most the joint sensitivity over the common central noise, and
  each group's DDGauss divergence term τ_g (fewer, larger shares) is at most τ*; for Skellam
  every group's event is the same (the sum of Skellams is Skellam with the central μ). Each
  group's share would on its own be charged at most this event's ε.

Local mode needs no floors: every group adds the one local noise calibrated to the joint
replace-one sensitivity, and the release is one local event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from federation.config import RunConfig
from federation.privacy_plan import PrivacyPlanner, noise_floor
from federation.round_plan import NoiseShare, coordinate_l2_sensitivity
from privacy.fedp3 import assign_round
from privacy.mechanisms import DistributedNoise, distributed_noise_for, local_noise_for
from secagg.codec import CodecConfig, LatticeCodec


def expected_senders(config: RunConfig, body_groups: int) -> tuple[int, ...]:
    """Senders each group's sum expects from an expected cohort n = clients·q: the policy's owner
    count of every body group over n clients (OPR2, a fresh draw every round: its mean w·n/G), and
    n for the head (the last group)."""
    cohort = max(2, round(config.clients * config.sample_rate))
    assignment = assign_round(config.fedp3_policy, range(cohort), body_groups, public_seed=bytes(32))
    if config.fedp3_policy == "OPR2":
        width = len(assignment.owned_by(0))
        owners = (width * cohort // body_groups,) * body_groups
    else:
        owners = assignment.owner_counts()
    return (*owners, cohort)


class FedP3PrivacyPlanner(PrivacyPlanner):
    """``PrivacyPlanner`` of a FedP3 run (the ledger methods are inherited unchanged).

    Args:
        config: the run (trainer "fedp3").
        group_sizes: parameters of each layer group, head last.
        senders: each group's expected senders (:func:`expected_senders`).
        step: the run's lattice step Δ (one for every group).

    Attributes:
        group_shares: group index -> the ``NoiseShare`` its senders add (``dimension`` = that
            group's coordinates, ``min_survivors`` = its floor).
        noise, noise_share: the joint release charged once per round (``round_event``).
    """

    def __init__(self, config: RunConfig, group_sizes: Sequence[int], senders: Sequence[int], step: float) -> None:
        if len(group_sizes) != len(senders):
            raise ValueError(f"{len(group_sizes)} group sizes but {len(senders)} sender counts")
        self.config = config
        codec = LatticeCodec(CodecConfig(lattice=config.lattice, step=step, bits=32, clip_norm=config.clip_norm))
        coordinates = [codec.coordinates(size) for size in group_sizes]
        self.noise = None
        self.group_shares = {group: NoiseShare() for group in range(len(group_sizes))}
        if config.noise != "none":
            local = config.noise == "local"
            l2 = coordinate_l2_sensitivity(config.clip_norm, step, tuple(group_sizes), config.lattice, local=local)
            if local:
                self.noise = local_noise_for(config.mechanism, config.target_epsilon, config.delta, l2,
                                             sum(coordinates), compositions=config.rounds)
                self.group_shares = {group: NoiseShare.of(self.noise) for group in self.group_shares}
            else:
                floors = [noise_floor(config, senders=count) for count in senders]
                # The local floor is met by the joint share; each group's share is at least as large
                # (_group_share scales it up by top/floor >= 1), so every upload keeps the floor.
                self.noise = distributed_noise_for(config.mechanism, config.target_epsilon, config.delta, l2,
                                                   sum(coordinates), max(floors), compositions=config.rounds,
                                                   relation=config.relation, local_epsilon=config.local_epsilon_floor)
                self.group_shares = {group: NoiseShare.of(_group_share(self.noise, floor, count))
                                     for group, (floor, count) in enumerate(zip(floors, coordinates))}
        self.noise_share = NoiseShare.of(self.noise)
        self._ledger = self._new_ledger()

    def settle(self, survivors: int) -> None:
        raise NotImplementedError("a FedP3 round settles each group's sum: settle_group")

    def settle_group(self, group: int, survivors: int) -> None:
        """Fail closed before releasing group ``group``'s sum when it holds fewer noise shares
        than its floor (InsufficientSurvivorsError)."""
        noise = self.group_shares[group].mechanism_object()
        if isinstance(noise, DistributedNoise):
            noise.settle(noise.event(), survivors)


def _group_share(joint: DistributedNoise, floor: int, coordinates: int) -> DistributedNoise:
    """The share a group of floor ``floor`` adds so that ``floor`` shares carry ``joint``'s central
    noise (``joint`` is calibrated for its ``min_survivors`` = the largest floor)."""
    top = joint.min_survivors
    if joint.mechanism == "skellam":
        share = joint.share_scale * top / floor  # central μ / floor
    else:
        share = joint.share_scale * math.sqrt(top / floor)  # same central σ², fewer and larger shares
    return DistributedNoise(joint.mechanism, share, floor, 0, joint.l2_sensitivity, joint.l1_sensitivity,
                            coordinates)
