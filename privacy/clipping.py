"""L2 clipping of model updates, whole or per layer group.

Clipping is what gives an update a known L2 sensitivity: after ``u ← u·min(1, C/‖u‖₂)`` any two
clipped updates differ by at most 2C (local DP) and adding or removing one client moves a sum by at
most C (distributed DP); see docs/ALGORITHMS.md §3.1. The pre-clip norm is returned to the *caller* (the
client, for its own logs or adaptive clipping); it is data-dependent and must never be sent to the
server.

The bound is enforced on the returned values as stored, not on the exact real product: scaling a
float32 vector by C/‖u‖ can round to a norm a few ULPs above C, and a sensitivity claim that is off
by one ULP is still a false claim. So a clipped update is aimed a relative 2⁻³² inside the sphere
(far below any noise, far above float64 summation error for up to ~10⁶ entries, so the bound holds
however the norm is summed) and the factor is nudged down until the stored result meets that.

Arrays are NumPy ``ndarray`` or ``torch.Tensor`` of a floating dtype, any shape (the norm is over
all entries); results keep the input's type, dtype, shape and (for tensors) device.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from privacy.errors import PrivacyError

__all__ = [
    "ClippingError",
    "clip_l2",
    "clip_l2_groups",
    "clip_l2_joint",
    "l2_norm",
    "per_group_sensitivity",
]

ArrayT = TypeVar("ArrayT")
KeyT = TypeVar("KeyT")

# Clipped updates land this far (relative) inside the sphere; see the module docstring.
_INSIDE_MARGIN = 2.0**-32
# Each retry shrinks the factor by four ULPs of the coarsest dtype involved; one or two passes
# suffice in practice and the cap only guards against a logic error.
_MAX_SHRINK_STEPS = 64


class ClippingError(PrivacyError, ValueError):
    """A clip bound is not a finite positive number, or an update is not a finite float array."""


def _torch_tensor_type() -> type | None:
    # A tensor can only exist if torch is already imported, so clipping NumPy arrays never pays
    # for importing torch.
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


def _is_tensor(update: Any) -> bool:
    tensor_type = _torch_tensor_type()
    return tensor_type is not None and isinstance(update, tensor_type)


def _check_clip_norm(clip_norm: Any, *, what: str = "clip_norm") -> float:
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float, np.integer, np.floating)):
        raise ClippingError(f"{what} must be a real number, got {type(clip_norm).__name__}")
    value = float(clip_norm)
    if not math.isfinite(value) or value <= 0.0:
        raise ClippingError(f"{what} must be finite and > 0, got {clip_norm!r}")
    return value


def _check_update(update: Any, *, what: str = "update") -> None:
    if _is_tensor(update):
        if not update.is_floating_point():
            raise ClippingError(f"{what} must be a floating-point tensor, got {update.dtype}")
        import torch

        if not bool(torch.isfinite(update).all()):
            raise ClippingError(f"{what} contains NaN or infinity")
        return
    if not isinstance(update, np.ndarray):
        raise ClippingError(
            f"{what} must be a numpy.ndarray or torch.Tensor, got {type(update).__name__}"
        )
    if not np.issubdtype(update.dtype, np.floating):
        raise ClippingError(f"{what} must have a floating dtype, got {update.dtype}")
    if not np.isfinite(update).all():
        raise ClippingError(f"{what} contains NaN or infinity")


def _squared_norm(update: Any) -> float:
    """Σ u², accumulated in float64 whatever the input dtype."""
    if _is_tensor(update):
        import torch

        wide = update.detach().to(torch.float64)
        return float(torch.sum(wide * wide).item())
    wide = np.asarray(update, dtype=np.float64).ravel()
    return float(np.dot(wide, wide))


def l2_norm(update: Any) -> float:
    """L2 norm of all entries of ``update`` (ndarray or tensor, any shape), computed in float64."""
    _check_update(update)
    return math.sqrt(_squared_norm(update))


def _machine_epsilon(update: Any) -> float:
    if _is_tensor(update):
        import torch

        return float(torch.finfo(update.dtype).eps)
    return float(np.finfo(update.dtype).eps)


def _scaled(update: Any, factor: float) -> Any:
    if _is_tensor(update):
        import torch

        return (update.detach().to(torch.float64) * factor).to(update.dtype)
    return (np.asarray(update, dtype=np.float64) * factor).astype(update.dtype, copy=False)


def _copy(update: Any) -> Any:
    return update.detach().clone() if _is_tensor(update) else update.copy()


def _scale_to_bound(parts: list[Any], norm: float, clip_norm: float) -> list[Any]:
    """Scale every part by one common factor so that the stored parts' joint norm is <= clip_norm."""
    target = clip_norm * (1.0 - _INSIDE_MARGIN)
    factor = target / norm
    shrink = 1.0 - 4.0 * max(_machine_epsilon(part) for part in parts)
    for _ in range(_MAX_SHRINK_STEPS):
        scaled = [_scaled(part, factor) for part in parts]
        if math.sqrt(sum(_squared_norm(part) for part in scaled)) <= target:
            return scaled
        # Rounding to the storage dtype pushed the norm just above C: shrink and retry.
        factor *= shrink
    raise AssertionError("clipping failed to meet its bound; this is a bug")  # pragma: no cover


def clip_l2(update: ArrayT, clip_norm: float) -> tuple[ArrayT, float]:
    """Clip ``update`` to L2 norm at most ``clip_norm``: ``u·min(1, C/‖u‖₂)``.

    Args:
        update: finite float ndarray or tensor, any shape; the norm is over all entries.
        clip_norm: C > 0, in the update's units.

    Returns:
        ``(clipped, norm)``: a new array of the same type, dtype and shape with ‖clipped‖₂ <= C
        (as stored; a clipped update lies within a relative 2⁻³² of C), and the pre-clip norm ‖u‖₂ as a Python float. An update
        already within the bound is returned as an unchanged copy, so clipping is idempotent.

    Raises:
        ClippingError: clip_norm not finite and positive; update not a finite float array.
    """
    bound = _check_clip_norm(clip_norm)
    _check_update(update)
    norm = math.sqrt(_squared_norm(update))
    if norm <= bound:
        return _copy(update), norm
    (clipped,) = _scale_to_bound([update], norm, bound)
    return clipped, norm


def clip_l2_groups(
    groups: Mapping[KeyT, ArrayT], clip_norms: float | Mapping[KeyT, float]
) -> tuple[dict[KeyT, ArrayT], dict[KeyT, float]]:
    """Clip each layer group separately: group g is clipped to its own bound C_g.

    The concatenation of the clipped groups then has L2 norm at most sqrt(Σ_g C_g²) (see
    :func:`per_group_sensitivity`); that, not max C_g, is the sensitivity of a release that sends
    all the groups.

    Args:
        groups: mapping group key -> finite float ndarray/tensor (any shape); must not be empty.
        clip_norms: one bound for every group, or a mapping with exactly the same keys.

    Returns:
        ``(clipped, norms)``: dicts keyed like ``groups`` (same order) holding the clipped arrays
        and the pre-clip norm of each group.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise ClippingError("groups must be a non-empty mapping of group key -> array")
    if isinstance(clip_norms, Mapping):
        if set(clip_norms) != set(groups):
            missing = set(groups) - set(clip_norms)
            extra = set(clip_norms) - set(groups)
            raise ClippingError(
                f"clip_norms must have exactly the groups' keys (missing {sorted(map(repr, missing))}, "
                f"extra {sorted(map(repr, extra))})"
            )
        bounds = {key: _check_clip_norm(clip_norms[key], what=f"clip_norms[{key!r}]") for key in groups}
    else:
        common = _check_clip_norm(clip_norms)
        bounds = {key: common for key in groups}
    clipped: dict[KeyT, ArrayT] = {}
    norms: dict[KeyT, float] = {}
    for key, part in groups.items():
        _check_update(part, what=f"groups[{key!r}]")
        clipped[key], norms[key] = clip_l2(part, bounds[key])
    return clipped, norms


def clip_l2_joint(
    groups: Mapping[KeyT, ArrayT], clip_norm: float
) -> tuple[dict[KeyT, ArrayT], float]:
    """Clip several groups as one vector: every group is scaled by the same ``min(1, C/‖u‖₂)``,
    with ‖u‖₂ the norm of their concatenation.

    The release of all the groups together then has L2 norm at most C, whichever subset of groups
    a client sends; this is the clipping FedP3 uploads use by default.

    Returns:
        ``(clipped, norm)``: dict keyed like ``groups`` and the pre-clip joint norm.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise ClippingError("groups must be a non-empty mapping of group key -> array")
    bound = _check_clip_norm(clip_norm)
    for key, part in groups.items():
        _check_update(part, what=f"groups[{key!r}]")
    keys = list(groups)
    parts = [groups[key] for key in keys]
    norm = math.sqrt(sum(_squared_norm(part) for part in parts))
    if norm <= bound:
        return {key: _copy(groups[key]) for key in keys}, norm
    scaled = _scale_to_bound(parts, norm, bound)
    return dict(zip(keys, scaled)), norm


def per_group_sensitivity(clip_norms: Mapping[Any, float] | list[float] | tuple[float, ...]) -> float:
    """L2 bound sqrt(Σ_g C_g²) of the concatenation of groups clipped separately to C_g.

    This is the norm bound of one client's whole release; the local-DP sensitivity is twice it
    (docs/ALGORITHMS.md §3.1).
    """
    values = list(clip_norms.values()) if isinstance(clip_norms, Mapping) else list(clip_norms)
    if not values:
        raise ClippingError("clip_norms must not be empty")
    bounds = [_check_clip_norm(value, what="clip_norms entry") for value in values]
    return math.sqrt(math.fsum(bound * bound for bound in bounds))
