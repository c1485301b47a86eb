"""Shamir sharing over p = 2**521 - 1: threshold behaviour, consistency checks, share encoding."""

import itertools
import os
import random
import secrets
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import (
    ConfigurationError,
    InconsistentSharesError,
    MalformedMessageError,
    NotEnoughSharesError,
)
from secagg.shamir import PRIME, SHARE_LENGTH, Share, reconstruct_secret, split_secret

SECRET = bytes(range(100, 132))


def _corrupt(share: Share) -> Share:
    return Share(x=share.x, y=(share.y + 1) % PRIME)


def test_field_is_the_mersenne_prime_2_521_minus_1():
    assert PRIME == 2**521 - 1
    # Fermat test to several bases: a composite modulus fails it for these bases in practice.
    assert all(pow(base, PRIME - 1, PRIME) == 1 for base in (2, 3, 5, 7, 11))


def test_any_t_of_n_shares_rebuild_the_secret():
    shares = split_secret(SECRET, 4, range(1, 8))
    for subset in itertools.combinations(shares, 4):
        assert reconstruct_secret(subset, 4, 32) == SECRET
    assert reconstruct_secret(shares, 4, 32) == SECRET


def test_t_minus_one_shares_raise_not_enough():
    shares = split_secret(SECRET, 4, range(1, 8))
    with pytest.raises(NotEnoughSharesError):
        reconstruct_secret(shares[:3], 4, 32)
    # Repeating a share does not make it count twice.
    with pytest.raises(NotEnoughSharesError):
        reconstruct_secret(shares[:3] + shares[:1], 4, 32)


@pytest.mark.parametrize("position", range(6))
def test_a_corrupted_share_among_more_than_t_is_detected(position):
    shares = split_secret(SECRET, 4, [3, 9, 17, 40, 41, 2**32 - 1])
    shares[position] = _corrupt(shares[position])
    with pytest.raises(InconsistentSharesError):
        reconstruct_secret(shares, 4, 32)


def test_a_randomly_corrupted_share_among_exactly_t_rebuilds_no_valid_secret():
    # Replacing y by a uniform field element moves the rebuilt value to a uniform point of [0, p),
    # which fits in 32 bytes with probability 2**256 / p < 2**-264.
    shares = split_secret(SECRET, 4, range(1, 5))
    shares[2] = Share(x=shares[2].x, y=secrets.randbelow(PRIME))
    with pytest.raises(InconsistentSharesError):
        reconstruct_secret(shares, 4, 32)


def test_exactly_t_shares_cannot_expose_a_crafted_offset():
    # Documented limit: with no redundant share, y_3 + 1 shifts the secret by λ_3(0) = 4 for
    # x = 1..4, a valid-looking secret. Detection needs more than t shares (tested above).
    shares = split_secret(SECRET, 4, range(1, 5))
    shares[2] = _corrupt(shares[2])
    rebuilt = reconstruct_secret(shares, 4, 32)
    assert int.from_bytes(rebuilt, "big") == int.from_bytes(SECRET, "big") + 4


def test_two_different_shares_for_one_x_are_inconsistent():
    shares = split_secret(SECRET, 2, range(1, 4))
    with pytest.raises(InconsistentSharesError):
        reconstruct_secret(shares + [_corrupt(shares[0])], 2, 32)


def test_a_secret_longer_than_declared_is_inconsistent():
    shares = split_secret(b"\x01" + bytes(31), 2, range(1, 4))
    with pytest.raises(InconsistentSharesError):
        reconstruct_secret(shares, 2, 16)


def test_leading_zero_bytes_survive():
    secret = bytes(31) + b"\x07"
    assert reconstruct_secret(split_secret(secret, 3, range(1, 6)), 3, 32) == secret


def test_threshold_one_gives_every_holder_the_secret_itself():
    shares = split_secret(SECRET, 1, [5, 6])
    assert {share.y for share in shares} == {int.from_bytes(SECRET, "big")}


def test_uses_the_t_smallest_points_and_matches_exact_rational_lagrange():
    # Oracle: Lagrange interpolation at 0 in exact rationals over the t smallest points.
    shares = split_secret(SECRET, 3, [50, 7, 12, 30])
    basis = sorted(shares, key=lambda share: share.x)[:3]
    total = Fraction(0)
    for j in basis:
        weight = Fraction(1)
        for m in basis:
            if m.x != j.x:
                weight *= Fraction(m.x, m.x - j.x)
        total += weight * j.y
    expected = total.numerator * pow(total.denominator, -1, PRIME) % PRIME
    assert reconstruct_secret(shares, 3, 32) == expected.to_bytes(32, "big") == SECRET


def test_fresh_coefficients_every_split():
    first, second = split_secret(SECRET, 3, [1, 2, 3]), split_secret(SECRET, 3, [1, 2, 3])
    assert [share.y for share in first] != [share.y for share in second]


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    xs=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_round_trip_from_any_subset_of_at_least_t(secret, xs, data):
    threshold = data.draw(st.integers(1, len(xs)))
    shares = split_secret(secret, threshold, xs)
    count = data.draw(st.integers(threshold, len(xs)))
    subset = data.draw(st.permutations(shares))[:count]
    assert reconstruct_secret(subset, threshold, len(secret)) == secret


def test_shares_of_many_secrets_with_one_survival_pattern():
    # The cached path (same point tuple for every secret) must give every secret back.
    xs = list(range(1, 31))
    secrets_ = [os.urandom(32) for _ in range(20)]
    survivors = sorted(random.Random(1).sample(range(30), 20))
    for secret in secrets_:
        shares = split_secret(secret, 17, xs)
        assert reconstruct_secret([shares[i] for i in survivors], 17, 32) == secret


def test_share_bytes_round_trip_with_fixed_length():
    for share in split_secret(SECRET, 2, [1, 2**32 - 1]):
        encoded = share.to_bytes()
        assert len(encoded) == SHARE_LENGTH == 70
        assert encoded[:4] == share.x.to_bytes(4, "big")
        assert Share.from_bytes(encoded) == share
    top = Share(x=1, y=PRIME - 1)
    assert Share.from_bytes(top.to_bytes()) == top


@pytest.mark.parametrize(
    "data",
    [
        bytes(69),
        bytes(71),
        b"",
        bytes(70),  # x = 0 would be the secret's own point
        (1).to_bytes(4, "big") + PRIME.to_bytes(66, "big"),  # y = p is not a field element
        (1).to_bytes(4, "big") + (2**528 - 1).to_bytes(66, "big"),
        "x" * 70,
    ],
)
def test_malformed_share_bytes_are_rejected(data):
    with pytest.raises(MalformedMessageError):
        Share.from_bytes(data)


@pytest.mark.parametrize(("x", "y"), [(0, 1), (2**32, 1), (1, -1), (1, PRIME), (True, 1), (1.0, 1)])
def test_out_of_range_share_fields_are_rejected(x, y):
    with pytest.raises(MalformedMessageError):
        Share(x=x, y=y)


def test_share_repr_hides_the_value():
    share = split_secret(SECRET, 1, [1])[0]
    assert str(share.y) not in repr(share)


@pytest.mark.parametrize(
    ("secret", "threshold", "xs"),
    [
        (b"", 1, [1]),
        (bytes(65), 1, [1]),
        ("text", 1, [1]),
        (SECRET, 0, [1, 2]),
        (SECRET, 3, [1, 2]),
        (SECRET, 1, [1, 1]),
        (SECRET, 1, [0, 1]),
        (SECRET, 1, [2**32]),
        (SECRET, 1, [1.0]),
    ],
)
def test_invalid_split_parameters_are_refused(secret, threshold, xs):
    with pytest.raises(ConfigurationError):
        split_secret(secret, threshold, xs)


def test_invalid_reconstruct_parameters_are_refused():
    shares = split_secret(SECRET, 2, [1, 2])
    for threshold, length in ((0, 32), (2, 0), (2, 65)):
        with pytest.raises(ConfigurationError):
            reconstruct_secret(shares, threshold, length)
    with pytest.raises(ConfigurationError):
        reconstruct_secret([shares[0], (2, shares[1].y)], 2, 32)
