"""The SecAgg+ neighbour graph and the default (k, t) parameters.

Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020: each
client masks with, and secret-shares to, only its k neighbours in a random k-regular Harary graph
instead of all n - 1 others. The ring order is a random permutation drawn from a public seed, as in
Google's ``secret_sharing_harary_graph.h`` and Flower's SecAgg+; k = n - 1 is classic SecAgg.

A client's secrets are shared among its *holders*: itself and its k neighbours (k + 1 shares, as
in Flower). Holder j's Shamir abscissa for owner i's secrets is its ring offset from i plus one,
so equal relative survival patterns give equal point sets and hit the Lagrange cache (in the
complete graph, where every owner has the same holders, it is simply the holder's ring position).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from secagg.context import encode_parts
from secagg.errors import ConfigurationError
from secagg.prg import random_below

#: Below this many clients Google's parameter finder falls back to the complete graph.
COMPLETE_GRAPH_BELOW: Final = 65
#: Largest n the precomputed table covers; beyond it (k, t) must be given explicitly.
MAX_TABULATED_CLIENTS: Final = 1_000_000

# docs/ALGORITHMS.md §1.4 (Google ``graph_parameter_finder.cc``: 2**-40 security, failure < 2**-20,
# honest-but-curious server). Columns: (adversarial fraction, dropout fraction), cheapest first.
_TABLE_COLUMNS: Final = ((0.05, 0.05), (0.05, 0.33), (0.33, 0.33), (0.45, 0.45))
_TABLE: Final[dict[int, tuple[tuple[int, int], ...]]] = {
    100: ((12, 6), (28, 6), (68, 34), (92, 46)),
    1_000: ((30, 17), (72, 24), (286, 150), (822, 417)),
    10_000: ((34, 20), (86, 29), (422, 221), (3494, 1771)),
    100_000: ((36, 21), (96, 32), (480, 251), (5508, 2788)),
    1_000_000: ((38, 22), (102, 34), (518, 270), (6240, 3156)),
}
# Google's finder requires adversarial + dropout <= 0.9 against a curious server.
_MAX_ADVERSARIAL_PLUS_DROPOUT: Final = 0.9
_PERMUTATION_KEY_BOUND: Final = 2**62

__all__ = [
    "COMPLETE_GRAPH_BELOW",
    "MAX_TABULATED_CLIENTS",
    "HararyGraph",
    "default_parameters",
    "harary_neighbours",
]


def _validate_ids(ids: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise ConfigurationError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    values = tuple(ids)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise ConfigurationError(f"client ids must be ints in 0..2**32 - 1, got {value!r}")
    if len(set(values)) != len(values):
        raise ConfigurationError("client ids repeat; each client appears once")
    if len(values) < 2:
        raise ConfigurationError(f"a neighbour graph needs at least 2 clients, got {len(values)}")
    return values


def _validate_degree(n: int, degree_k: int) -> int:
    if isinstance(degree_k, bool) or not isinstance(degree_k, int):
        raise ConfigurationError(f"degree_k must be an int, got {type(degree_k).__name__}")
    if not 1 <= degree_k <= n - 1:
        raise ConfigurationError(f"degree_k must be in 1..{n - 1} for {n} clients, got {degree_k}")
    if (n * degree_k) % 2:
        raise ConfigurationError(
            f"no {degree_k}-regular graph on {n} clients exists (n*k must be even); "
            f"choose an even degree_k, or k = n - 1"
        )
    return degree_k


def _ring_order(ids: tuple[int, ...], permutation_seed: bytes) -> tuple[int, ...]:
    """A uniformly random ordering of ``ids`` drawn from the public ``permutation_seed``.

    Sorting by independent uniform 62-bit keys is a uniform permutation up to key collisions
    (probability < n**2 / 2**63); ties are broken by id so the order is always well defined.
    """
    if not isinstance(permutation_seed, (bytes, bytearray)) or len(permutation_seed) == 0:
        raise ConfigurationError("permutation_seed must be non-empty bytes")
    canonical = tuple(sorted(ids))
    keys = random_below(
        bytes(permutation_seed),
        encode_parts("fedvault/secagg/harary-ring/v1", len(canonical)),
        len(canonical),
        _PERMUTATION_KEY_BOUND,
    )
    return tuple(client_id for _, client_id in sorted(zip(keys.tolist(), canonical)))


@dataclass(frozen=True)
class HararyGraph:
    """The k-regular Harary graph on a ring of client ids.

    Even k: i is adjacent to the k/2 clients on each side of it on the ring. Odd k (n even): also
    to the client diametrically opposite. k = n - 1 is the complete graph (classic SecAgg).

    Attributes:
        ring: the client ids in ring order.
        degree_k: k, the number of neighbours of every client.
    """

    ring: tuple[int, ...]
    degree_k: int
    _position: Mapping[int, int] = field(init=False, repr=False, compare=False)
    _offsets: frozenset[int] = field(init=False, repr=False, compare=False)
    # Neighbour sets are built on first use: a client needs O(k) of the graph, not O(n k).
    _neighbour_cache: dict[int, frozenset[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ring = _validate_ids(self.ring)
        object.__setattr__(self, "ring", ring)
        n = len(ring)
        k = _validate_degree(n, self.degree_k)
        offsets = {o % n for step in range(1, k // 2 + 1) for o in (step, -step)}
        if k % 2:
            offsets.add(n // 2)
        object.__setattr__(self, "_position", {client_id: index for index, client_id in enumerate(ring)})
        object.__setattr__(self, "_offsets", frozenset(offsets))
        object.__setattr__(self, "_neighbour_cache", {})

    @classmethod
    def build(cls, ids: Sequence[int], degree_k: int, permutation_seed: bytes) -> HararyGraph:
        """The graph on ``ids`` with the ring order drawn from ``permutation_seed``."""
        values = _validate_ids(ids)
        _validate_degree(len(values), degree_k)
        return cls(_ring_order(values, permutation_seed), degree_k)

    @property
    def client_count(self) -> int:
        """n, the number of clients on the ring."""
        return len(self.ring)

    def _require_member(self, client_id: int) -> None:
        if client_id not in self._position:
            raise ConfigurationError(f"client {client_id!r} is not in the graph")

    def neighbours(self, client_id: int) -> frozenset[int]:
        """The k neighbours of ``client_id`` (not including itself)."""
        cached = self._neighbour_cache.get(client_id)
        if cached is None:
            self._require_member(client_id)
            index, n = self._position[client_id], len(self.ring)
            cached = frozenset(self.ring[(index + offset) % n] for offset in self._offsets)
            self._neighbour_cache[client_id] = cached
        return cached

    def holders(self, client_id: int) -> frozenset[int]:
        """The k + 1 clients that hold shares of ``client_id``'s secrets: itself and its neighbours."""
        return self.neighbours(client_id) | {client_id}

    @property
    def is_complete(self) -> bool:
        """True for k = n - 1 (classic SecAgg: every client holds a share of every other)."""
        return self.degree_k == len(self.ring) - 1

    def abscissa(self, owner: int, holder: int) -> int:
        """Shamir x-coordinate of ``holder``'s share of ``owner``'s secrets, in 1..n.

        Chosen so that equal survival patterns give equal point sets (and hit the Lagrange cache):
        in a sparse graph the holders form a window that slides with the owner, so x is the ring
        offset of the holder from the owner plus one; in the complete graph every owner has the
        same holders, so x is the holder's ring position plus one.
        """
        self._require_member(owner)
        self._require_member(holder)
        offset = (self._position[holder] - self._position[owner]) % len(self.ring)
        if offset and offset not in self._offsets:
            raise ConfigurationError(f"client {holder} holds no share of client {owner}")
        if self.is_complete:
            return self._position[holder] + 1
        return offset + 1


def harary_neighbours(
    ids: Sequence[int], degree_k: int, permutation_seed: bytes
) -> dict[int, frozenset[int]]:
    """Neighbour sets of the random k-regular Harary graph on ``ids`` (each set excludes the client).

    Args:
        ids: distinct client ids in 0..2**32 - 1, at least two.
        degree_k: k, 1 <= k <= n - 1 with n*k even; k = n - 1 gives the complete graph.
        permutation_seed: public bytes that fix the ring order (fedvault derives them from the
            round's instance nonce, so every party computes the same graph).

    Raises:
        ConfigurationError: invalid ids, degree or seed.
    """
    graph = HararyGraph.build(ids, degree_k, permutation_seed)
    return {client_id: graph.neighbours(client_id) for client_id in graph.ring}


def _require_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number, got {type(value).__name__}")
    if not (0.0 <= float(value) < 1.0):
        raise ConfigurationError(f"{name} must be a fraction in [0, 1), got {value}")
    return float(value)


def _complete_graph_threshold(n: int, dropout: float, adversarial: float) -> int:
    # Secure: more than the adversarial clients' worth of shares is needed (t > a*n). Correct:
    # the survivors after dropout can still reach t (t <= n - ceil(d*n)). Prefer a majority.
    lowest = max(2, math.floor(adversarial * n) + 1)
    highest = n - math.ceil(dropout * n)
    threshold = max(lowest, min(n // 2 + 1, highest))
    if threshold > n:
        raise ConfigurationError(
            f"no threshold protects {n} clients against {adversarial:.0%} adversarial clients; "
            "sample more clients"
        )
    return threshold


def default_parameters(n: int, dropout: float = 0.05, adversarial: float = 0.05) -> tuple[int, int]:
    """Default (neighbours_k, threshold) for n clients, from docs/ALGORITHMS.md §1.4.

    Picks the cheapest precomputed column whose adversarial and dropout fractions are at least the
    requested ones, in the row of the smallest tabulated n >= ``n`` (more clients need more
    neighbours, so rounding n up is conservative). Below 65 clients, or when the tabulated k is not
    below n - 1, falls back to the complete graph (k = n - 1) with a majority threshold clamped to
    (adversarial * n, n - dropout * n]; when that interval is empty (tiny n) security wins: t stays
    above adversarial * n and at least 2, and the round aborts rather than tolerate the dropout.

    Args:
        n: number of sampled clients, 2 .. 1_000_000.
        dropout: fraction of clients expected to drop out, in [0, 0.45].
        adversarial: fraction of clients that may collude with the server, in [0, 0.45].

    Raises:
        ConfigurationError: n or a fraction out of range, adversarial + dropout > 0.9, or no
            tabulated column covers the fractions (then pass neighbours_k and threshold explicitly).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigurationError(f"n must be an int, got {type(n).__name__}")
    if not 2 <= n <= MAX_TABULATED_CLIENTS:
        raise ConfigurationError(
            f"default parameters cover 2..{MAX_TABULATED_CLIENTS} clients, got {n}; "
            "pass neighbours_k and threshold explicitly"
        )
    dropout = _require_fraction("dropout", dropout)
    adversarial = _require_fraction("adversarial", adversarial)
    if adversarial + dropout > _MAX_ADVERSARIAL_PLUS_DROPOUT:
        raise ConfigurationError(
            f"adversarial + dropout = {adversarial + dropout:.2f} exceeds 0.9: no (k, t) is both "
            "secure and live; lower one of them"
        )
    column = next(
        (
            index
            for index, (column_adversarial, column_dropout) in enumerate(_TABLE_COLUMNS)
            if adversarial <= column_adversarial and dropout <= column_dropout
        ),
        None,
    )
    if column is None:
        raise ConfigurationError(
            f"no precomputed parameters for {adversarial:.0%} adversarial and {dropout:.0%} dropout "
            "(the table stops at 45%/45%); pass neighbours_k and threshold explicitly"
        )
    if n >= COMPLETE_GRAPH_BELOW:
        row = min(size for size in _TABLE if size >= n)
        degree_k, threshold = _TABLE[row][column]
        if degree_k < n - 1:
            return degree_k, threshold
    return n - 1, _complete_graph_threshold(n, dropout, adversarial)
