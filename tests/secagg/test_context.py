"""encode_parts: the canonical, injective encoding behind every HKDF info, AAD and transcript."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.context import decode_parts, encode_parts
from secagg.errors import ConfigurationError, MalformedMessageError

# Small alphabets and short values make boundary-shifting near-collisions (("ab", "c") vs
# ("a", "bc"), b"1" vs "1" vs 1) frequent instead of astronomically rare.
_PART = st.one_of(
    st.binary(max_size=4),
    st.text(alphabet="ab1\x00\u00e9", max_size=4),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([-(2**63), 2**63 - 1, 49, 0x0101]),
)
_PARTS = st.lists(_PART, max_size=5)


def _typed(parts):
    # bytes vs str vs int must count as different even where Python's == would not distinguish.
    return tuple((type(part).__name__, part) for part in parts)


def test_layout_matches_the_documented_format():
    encoded = encode_parts(b"\xff", "é", -2)
    assert encoded == (
        b"\x00\x00\x00\x03"
        + b"\x01\x00\x00\x00\x01\xff"
        + b"\x02\x00\x00\x00\x02\xc3\xa9"
        + b"\x03\x00\x00\x00\x08\xff\xff\xff\xff\xff\xff\xff\xfe"
    )


def test_empty_parts_list_is_four_zero_bytes():
    assert encode_parts() == b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ab", "c"), ("a", "bc")),
        ((b"ab", b"c"), (b"a", b"bc")),
        ((b"1",), ("1",)),
        (("1",), (1,)),
        ((b"\x00" * 7 + b"\x01",), (1,)),
        ((b"",), ("",)),
        ((b"",), ()),
        (("a", ""), ("a",)),
        ((1, 11), (11, 1)),
        ((0,), (0, 0)),
    ],
)
def test_classic_near_collisions_encode_differently(left, right):
    assert encode_parts(*left) != encode_parts(*right)


def test_encoding_of_a_list_is_not_the_concatenation_of_its_pieces():
    assert encode_parts("a", "b") != encode_parts("a") + encode_parts("b")


@settings(max_examples=300, deadline=None)
@given(_PARTS, _PARTS)
def test_different_part_lists_never_collide(left, right):
    if _typed(left) != _typed(right):
        assert encode_parts(*left) != encode_parts(*right)
    else:
        assert encode_parts(*left) == encode_parts(*right)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(), st.text(), st.integers(-(2**63), 2**63 - 1)), max_size=6))
def test_decode_inverts_encode(parts):
    assert _typed(decode_parts(encode_parts(*parts))) == _typed(parts)


def test_bytes_like_inputs_encode_as_bytes():
    assert encode_parts(bytearray(b"xy"), memoryview(b"z")) == encode_parts(b"xy", b"z")


@pytest.mark.parametrize("bad", [True, False, 1.0, None, [1], 2**63, -(2**63) - 1, "\ud800"])
def test_unencodable_parts_are_refused(bad):
    with pytest.raises(ConfigurationError):
        encode_parts("label", bad)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01",  # one part announced, none present
        b"\x00\x00\x00\x01\x01\x00\x00\x00\x05ab",  # payload truncated
        b"\x00\x00\x00\x01\x09\x00\x00\x00\x00",  # unknown tag
        b"\x00\x00\x00\x01\x03\x00\x00\x00\x04\x00\x00\x00\x01",  # 4-byte integer
        b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\xff",  # invalid UTF-8
        encode_parts("a") + b"\x00",  # trailing byte
    ],
)
def test_decode_rejects_malformed_encodings(data):
    with pytest.raises(MalformedMessageError):
        decode_parts(data)
