"""Shamir secret sharing over the Mersenne prime field p = 2**521 - 1.

One field element holds a whole raw secret of up to 64 bytes (a 32-byte seed or X25519 private
key), so each holder stores one 70-byte share per secret instead of many 16-byte chunks.
Reconstruction uses the t smallest available x's, with Lagrange coefficients cached per tuple of
points: in SecAgg+ the x's are ring offsets, so equal survival patterns repeat across secrets and
each rebuild after the first costs O(t) multiplications instead of O(t**2).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from secagg.errors import (
    ConfigurationError,
    InconsistentSharesError,
    MalformedMessageError,
    NotEnoughSharesError,
)

PRIME = 2**521 - 1
MAX_SECRET_LENGTH = 64
_X_BYTES = 4
_Y_BYTES = 66  # ceil(521 / 8)
SHARE_LENGTH = _X_BYTES + _Y_BYTES
MAX_X = 2**32 - 1
_BYTES_LIKE = (bytes, bytearray, memoryview)

__all__ = [
    "MAX_SECRET_LENGTH",
    "PRIME",
    "SHARE_LENGTH",
    "Share",
    "reconstruct_secret",
    "split_secret",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Share:
    """One point (x, f(x)) of a sharing polynomial; x in 1 .. 2**32 - 1, y in 0 .. p - 1.

    Raises:
        MalformedMessageError: a field has the wrong type or is out of range (x = 0 would be the
            secret itself).
    """

    x: int
    y: int

    def __post_init__(self) -> None:
        if not _is_int(self.x) or not 1 <= self.x <= MAX_X:
            raise MalformedMessageError(f"share x must be an int in 1..{MAX_X}, got {self.x!r}")
        if not _is_int(self.y) or not 0 <= self.y < PRIME:
            raise MalformedMessageError("share y must be an int in 0..2**521 - 2")

    def __repr__(self) -> str:
        # y is secret-bearing: keep it out of logs and tracebacks.
        return f"Share(x={self.x}, y=<{_Y_BYTES} bytes>)"

    def to_bytes(self) -> bytes:
        """Fixed 70 bytes: x as 4 bytes big-endian, then y as 66 bytes big-endian."""
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse ``to_bytes`` output.

        Raises:
            MalformedMessageError: not bytes, not exactly 70 bytes, x = 0, or y >= p.
        """
        if not isinstance(data, _BYTES_LIKE) or len(data) != SHARE_LENGTH:
            raise MalformedMessageError(f"a share is exactly {SHARE_LENGTH} bytes")
        data = bytes(data)
        return cls(
            x=int.from_bytes(data[:_X_BYTES], "big"),
            y=int.from_bytes(data[_X_BYTES:], "big"),
        )


def _check_threshold(threshold: object) -> int:
    if not _is_int(threshold) or threshold < 1:
        raise ConfigurationError(f"threshold must be an int >= 1, got {threshold!r}")
    return threshold


def _check_secret_length(secret_length: object) -> int:
    if not _is_int(secret_length) or not 1 <= secret_length <= MAX_SECRET_LENGTH:
        raise ConfigurationError(f"secret_length must be in 1..{MAX_SECRET_LENGTH}, got {secret_length!r}")
    return secret_length


def split_secret(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the returned shares rebuild it (Shamir 1979).

    f(x) = s + a_1 x + ... + a_{t-1} x^{t-1} mod p, with s the big-endian integer of the secret
    and a_k uniform on [0, p) from the OS CSPRNG; holder j gets (x_j, f(x_j)).

    Args:
        secret: 1 .. 64 bytes (rebuild with the same ``secret_length``).
        threshold: t, 1 .. len(xs).
        xs: distinct evaluation points in 1 .. 2**32 - 1, one per holder.

    Returns:
        One ``Share`` per x, in the order of ``xs``.

    Raises:
        ConfigurationError: bad secret length/type, threshold, or points (zero, repeated, out of range).
    """
    if not isinstance(secret, _BYTES_LIKE) or not 1 <= len(secret) <= MAX_SECRET_LENGTH:
        raise ConfigurationError(f"secret must be 1..{MAX_SECRET_LENGTH} bytes")
    threshold = _check_threshold(threshold)
    points = list(xs)
    for x in points:
        if not _is_int(x) or not 1 <= x <= MAX_X:
            raise ConfigurationError(f"every x must be an int in 1..{MAX_X}, got {x!r}")
    if len(set(points)) != len(points):
        raise ConfigurationError("evaluation points must be distinct")
    if threshold > len(points):
        raise ConfigurationError(f"threshold {threshold} exceeds the {len(points)} holders")
    coefficients = [int.from_bytes(bytes(secret), "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in points:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares.append(Share(x=x, y=y))
    return shares


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses mod p of non-zero ``values`` with one modular inversion (Montgomery's trick)."""
    prefixes = []
    running = 1
    for value in values:
        prefixes.append(running)
        running = running * value % PRIME
    inverse = pow(running, -1, PRIME)
    inverses = [0] * len(values)
    for index in range(len(values) - 1, -1, -1):
        inverses[index] = inverse * prefixes[index] % PRIME
        inverse = inverse * values[index] % PRIME
    return inverses


@lru_cache(maxsize=256)
def _barycentric_weights(xs: tuple[int, ...]) -> tuple[int, ...]:
    """w_j = 1 / Π_{m≠j} (x_j − x_m) mod p: the O(t**2) part, computed once per point tuple."""
    denominators = []
    for j, x_j in enumerate(xs):
        product = 1
        for m, x_m in enumerate(xs):
            if m != j:
                product = product * (x_j - x_m) % PRIME
        denominators.append(product)
    return tuple(_batch_inverse(denominators))


@lru_cache(maxsize=2048)
def _lagrange_coefficients(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """λ_j(at) with f(at) = Σ_j λ_j f(x_j) for every f of degree < len(xs); ``at`` not in ``xs``.

    Barycentric form (Berrut & Trefethen 2004): λ_j(at) = ℓ(at) w_j / (at − x_j), with
    ℓ(at) = Π_m (at − x_m); O(t) per evaluation point once the weights are cached.
    """
    weights = _barycentric_weights(xs)
    differences = [(at - x) % PRIME for x in xs]
    node_polynomial = 1
    for difference in differences:
        node_polynomial = node_polynomial * difference % PRIME
    return tuple(
        node_polynomial * weight % PRIME * inverse % PRIME
        for weight, inverse in zip(weights, _batch_inverse(differences))
    )


def _interpolate(xs: tuple[int, ...], ys: Sequence[int], at: int) -> int:
    # Sum the unreduced products and reduce once: O(t) big multiplications, one modulo.
    return sum(y * coefficient for y, coefficient in zip(ys, _lagrange_coefficients(xs, at))) % PRIME


def reconstruct_secret(shares: Sequence[Share], threshold: int, secret_length: int) -> bytes:
    """Rebuild the secret from at least ``threshold`` shares; check every extra share against it.

    The polynomial is interpolated through the ``threshold`` shares with the smallest x (cached
    Lagrange coefficients); every further share must lie on it. With exactly ``threshold`` shares
    there is no redundancy: a crafted offset in one share yields a different valid-looking secret,
    so callers that need detection must supply more shares (SecAgg also checks rebuilt keys
    against their public keys).

    Args:
        shares: any order; an exact duplicate is ignored.
        threshold: t used when splitting.
        secret_length: length in bytes of the original secret, 1 .. 64.

    Raises:
        NotEnoughSharesError: fewer than ``threshold`` distinct x.
        InconsistentSharesError: two shares with the same x differ, an extra share is off the
            polynomial, or the rebuilt value does not fit in ``secret_length`` bytes.
        ConfigurationError: bad threshold, secret length, or a non-Share element.
    """
    threshold = _check_threshold(threshold)
    secret_length = _check_secret_length(secret_length)
    by_x: dict[int, int] = {}
    for share in shares:
        if not isinstance(share, Share):
            raise ConfigurationError(f"expected Share objects, got {type(share).__name__}")
        if by_x.setdefault(share.x, share.y) != share.y:
            raise InconsistentSharesError(f"two different shares for x = {share.x}")
    if len(by_x) < threshold:
        raise NotEnoughSharesError(f"{len(by_x)} distinct shares, threshold is {threshold}")
    ordered = sorted(by_x)
    basis = tuple(ordered[:threshold])
    basis_ys = [by_x[x] for x in basis]
    for extra in ordered[threshold:]:
        if _interpolate(basis, basis_ys, extra) != by_x[extra]:
            raise InconsistentSharesError(
                f"share at x = {extra} is not on the degree-{threshold - 1} polynomial of the others"
            )
    secret = _interpolate(basis, basis_ys, 0)
    if secret.bit_length() > 8 * secret_length:
        raise InconsistentSharesError(f"rebuilt value does not fit in {secret_length} bytes")
    return secret.to_bytes(secret_length, "big")
