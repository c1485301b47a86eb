"""The record format of one federated run: what a client records each round, and the bound on it.

Clients and the server must build the same :class:`unlearning.records.RecordConfig` (the client to
seal, the server to open after a deletion request). Both derive it here from public data only:
the run's history settings and clip norm, and the round plan's codec (lattice, step, model size)
and integer noise, which the server also keeps with every round.

What a record holds (docs/ALGORITHMS.md §6.4) is exactly the client's term in the secure sum, decoded
to update units:

- ``noise = "none"`` or ``"distributed"``: the decoded lattice point of its clipped update, *without*
  its distributed noise share. Opening it on the client's own deletion request reveals its clipped
  update (to lattice precision). The share is left out on purpose: it protects the other clients'
  sum, and releasing it would lower the noise their rounds were charged for.
- ``noise = "local"``: the decoded noisy coordinates, i.e. its ε-LDP release, which is all that
  opening the record can reveal; the noise's norm widens the record's norm bound.
"""

from __future__ import annotations

import math

import numpy as np

from secagg.lattice import get_lattice
from secagg.rotation import padded_dimension
from unlearning.errors import UnlearningConfigurationError
from unlearning.records import RecordConfig

#: Standard deviations of headroom on the norm of the local noise (Gaussian-like tail e^{-t²/2}:
#: an honest record fails the bound with probability below 1e-20).
NOISE_NORM_HEADROOM = 10.0


def noise_std(noise_mode: str, mechanism: str, parameter: float) -> float:
    """Standard deviation of one client's integer noise per coordinate (round-plan units):
    √μ for Skellam with variance ``parameter`` = μ, σ for the discrete Gaussian with
    ``parameter`` = σ, 0 without noise."""
    if noise_mode == "none":
        return 0.0
    if noise_mode not in ("local", "distributed"):
        raise UnlearningConfigurationError(f"unknown noise mode {noise_mode!r}")
    if not (isinstance(parameter, (int, float)) and math.isfinite(parameter) and parameter >= 0.0):
        raise UnlearningConfigurationError(f"noise parameter must be finite and >= 0, got {parameter!r}")
    if mechanism == "skellam":
        return math.sqrt(float(parameter))
    if mechanism in ("discrete_gaussian", "dgauss"):  # "dgauss": runs stored before the rename
        return float(parameter)
    raise UnlearningConfigurationError(f"unknown noise mechanism {mechanism!r}")


def release_norm_slack(*, clip_norm: float, dimension: int, codec_lattice: str, step: float,
                       local_noise_std: float) -> float:
    """How far above the clip norm C a recorded contribution may honestly decode, before coding.

    The client's decoded term is x + s·e + s·nG (docs/ALGORITHMS.md §2): x the clipped update, s the
    step, e the dither-subtracted rounding error (each n-block within the covering radius ρ), n
    the local noise on the m integer coordinates and G the lattice generator; the rotation is
    orthonormal, so ‖x̂‖ <= C + s·(ρ·√blocks + σ_max(G)·σ·(√m + t)) with t standard deviations of
    headroom on ‖n‖. The record's own coding error comes on top (see :func:`run_record_config`).
    """
    lattice = get_lattice(codec_lattice)
    blocks = math.ceil(padded_dimension(dimension) / lattice.dimension)
    coordinates = blocks * lattice.dimension
    rounding = lattice.covering_radius * math.sqrt(blocks)
    noise = 0.0
    if local_noise_std > 0.0:
        largest_singular = float(np.linalg.svd(lattice.generator, compute_uv=False).max())
        noise = largest_singular * local_noise_std * (math.sqrt(coordinates) + NOISE_NORM_HEADROOM)
    return step * (rounding + noise)


def run_record_config(*, dimension: int, clip_norm: float, bits_per_entry: float, lattice: str,
                      codec_lattice: str, step: float, noise_mode: str, noise_mechanism: str,
                      noise_parameter: float) -> RecordConfig:
    """The record format of a run (identical on clients and server for the same public inputs).

    dimension: d, the model size. clip_norm: C. bits_per_entry, lattice: the run's history
    settings (R and the record lattice). codec_lattice, step: the secure-sum codec of the round
    plan. noise_mode, noise_mechanism, noise_parameter: the round plan's integer noise.
    With E the decoded term's excess over C (:func:`release_norm_slack`, whose noise part counts
    only in local mode, where the noise is recorded) the norm bound is 2·(C + E): the term's own
    bound, and as much again for the record's coding error (``RecordConfig``'s default slack C,
    scaled to the term).
    """
    local_std = noise_std(noise_mode, noise_mechanism, noise_parameter) if noise_mode == "local" else 0.0
    excess = release_norm_slack(clip_norm=clip_norm, dimension=dimension, codec_lattice=codec_lattice,
                                step=step, local_noise_std=local_std)
    return RecordConfig(dimension=dimension, clip_norm=clip_norm, norm_slack=clip_norm + 2.0 * excess,
                        lattice=lattice, bits_per_entry=bits_per_entry)
