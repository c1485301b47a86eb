"""Wire messages: exact round trips, exact sizes, and strict refusal of anything off-format."""

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.config import RoundConfig
from secagg.errors import MalformedMessageError
from secagg.wire import (
    HEADER_LENGTH,
    MAGIC,
    SEALED_SHARE_LENGTH,
    SHARE_LENGTH,
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInputRequest,
    MaskedInputResponse,
    RevealedShare,
    ShareKeysRequest,
    ShareKeysResponse,
    ConsistencyRequest,
    ConsistencyResponse,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

NONCE = bytes(range(32))
ROUND = 7


def key(tag: int, length: int = 32) -> bytes:
    return bytes([tag]) * length


def sample_messages():
    config = RoundConfig(ROUND, NONCE, (1, 4, 9), 2, 2, 12, 5, b"lattice=E8")
    advert = KeyAdvertisement(4, key(1), key(2), key(3, 64))
    return [
        AdvertiseKeysRequest.for_config(config),
        AdvertiseKeysResponse(ROUND, NONCE, 4, key(1), key(2), key(3, 64)),
        ShareKeysRequest(ROUND, NONCE, (KeyAdvertisement(1, key(4), key(5), key(6, 64)), advert)),
        ShareKeysResponse(ROUND, NONCE, 4, (EncryptedShare(1, key(7, SEALED_SHARE_LENGTH)),)),
        MaskedInputRequest(
            ROUND,
            NONCE,
            4,
            (EncryptedShare(1, key(8, SEALED_SHARE_LENGTH)), EncryptedShare(9, key(9, SEALED_SHARE_LENGTH))),
        ),
        MaskedInputResponse(ROUND, NONCE, 4, 12, np.array([0, 1, 4095, 17, 2048], dtype=np.uint32)),
        ConsistencyRequest(ROUND, NONCE, (1, 4)),
        ConsistencyResponse(ROUND, NONCE, 4, 3, key(13, 64)),
        UnmaskRequest(ROUND, NONCE, 4, (1, 4), (9,)),
        UnmaskRequest(
            ROUND, NONCE, 4, (1, 4), (9,), (SurvivorSignature(1, key(14, 64)), SurvivorSignature(4, key(15, 64)))
        ),
        UnmaskResponse(
            ROUND,
            NONCE,
            4,
            (RevealedShare(1, key(10, SHARE_LENGTH)), RevealedShare(4, key(11, SHARE_LENGTH))),
            (RevealedShare(9, key(12, SHARE_LENGTH)),),
        ),
    ]


def fields(message):
    values = {}
    for name in message.__dataclass_fields__:
        value = getattr(message, name)
        values[name] = value.tolist() if isinstance(value, np.ndarray) else value
    return values


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_exactly(message):
    data = message.to_bytes()
    assert data[:4] == MAGIC
    parsed = decode_message(data)
    assert type(parsed) is type(message)
    assert fields(parsed) == fields(message)
    assert parsed.to_bytes() == data
    assert type(message).from_bytes(data).to_bytes() == data


def test_from_bytes_refuses_another_message_type():
    data = sample_messages()[1].to_bytes()
    with pytest.raises(MalformedMessageError, match="expected a ShareKeysResponse"):
        ShareKeysResponse.from_bytes(data)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 32), length=st.integers(1, 300), data=st.data())
def test_masked_vectors_travel_at_exactly_b_bits_per_coordinate(bits, length, data):
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=length, max_size=length))
    vector = np.array(values, dtype=np.uint32)
    encoded = MaskedInputResponse(ROUND, NONCE, 3, bits, vector).to_bytes()
    assert len(encoded) == HEADER_LENGTH + 9 + math.ceil(length * bits / 8)
    parsed = MaskedInputResponse.from_bytes(encoded)
    assert parsed.bits == bits and np.array_equal(parsed.vector, vector)
    assert parsed.vector.dtype == np.uint32 and not parsed.vector.flags.writeable


def test_a_million_coordinates_at_20_bits_take_2_5_megabytes_not_flowers_8():
    vector = np.zeros(1_000_000, dtype=np.uint32)
    encoded = MaskedInputResponse(ROUND, NONCE, 3, 20, vector).to_bytes()
    assert len(encoded) == HEADER_LENGTH + 9 + 2_500_000


# --- strictness ----------------------------------------------------------------------------------


def replace_bytes(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def test_wrong_magic_version_or_type_is_malformed():
    data = sample_messages()[1].to_bytes()
    for corrupted, message in [
        (replace_bytes(data, 0, b"XXXX"), "magic"),
        (replace_bytes(data, 4, b"\x01"), "unsupported wire version 1"),  # before the consistency round
        (replace_bytes(data, 4, b"\x03"), "version"),
        (replace_bytes(data, 5, b"\x00"), "unknown message type"),
        (replace_bytes(data, 5, b"\x0b"), "unknown message type"),
        (replace_bytes(data, 6, b"\xff"), "round index"),
    ]:
        with pytest.raises(MalformedMessageError, match=message):
            decode_message(corrupted)


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_truncation_and_any_trailing_byte_is_malformed(message):
    data = message.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(MalformedMessageError):
            decode_message(data[:cut])
    with pytest.raises(MalformedMessageError, match="trailing"):
        decode_message(data + b"\x00")


def test_non_bytes_are_malformed():
    for value in [None, "FVSA", 12, [1, 2]]:
        with pytest.raises(MalformedMessageError, match="bytes"):
            decode_message(value)


def test_unsorted_or_repeated_ids_are_malformed():
    request = UnmaskRequest(ROUND, NONCE, 4, (1, 4), (9,)).to_bytes()
    body = HEADER_LENGTH + 4
    swapped = replace_bytes(request, body + 4, struct.pack(">II", 4, 1))
    repeated = replace_bytes(request, body + 4, struct.pack(">II", 4, 4))
    for corrupted in (swapped, repeated):
        with pytest.raises(MalformedMessageError, match="strictly increasing"):
            decode_message(corrupted)
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        UnmaskRequest(ROUND, NONCE, 4, (4, 1), ())


def test_a_huge_list_count_is_refused_before_allocation():
    request = UnmaskRequest(ROUND, NONCE, 4, (1, 4), (9,)).to_bytes()
    inflated = replace_bytes(request, HEADER_LENGTH + 4, struct.pack(">I", 2**32 - 1))
    with pytest.raises(MalformedMessageError, match="exceeds|truncated"):
        decode_message(inflated)


def test_masked_input_with_bad_bits_length_or_padding_is_malformed():
    message = MaskedInputResponse(ROUND, NONCE, 3, 3, np.array([1, 2, 3], dtype=np.uint32)).to_bytes()
    body = HEADER_LENGTH + 4
    with pytest.raises(MalformedMessageError, match="bits"):
        decode_message(replace_bytes(message, body, b"\x00"))
    with pytest.raises(MalformedMessageError, match="bits"):
        decode_message(replace_bytes(message, body, b"\x21"))
    with pytest.raises(MalformedMessageError, match="vector length"):
        decode_message(replace_bytes(message, body + 1, struct.pack(">I", 0)))
    # 3 values x 3 bits = 9 bits in 2 bytes: the top 7 bits of the last byte are padding.
    with pytest.raises(MalformedMessageError, match="padding"):
        decode_message(message[:-1] + bytes([message[-1] | 0x80]))


def test_invalid_round_config_inside_a_request_is_malformed():
    data = sample_messages()[0].to_bytes()
    body = HEADER_LENGTH + 4 + 3 * 4  # after the id list: k (4), t (4), minimum survivors (4), bits (1)
    with pytest.raises(MalformedMessageError, match="invalid round config"):
        decode_message(replace_bytes(data, body, struct.pack(">I", 3)))  # k = 3 > n - 1
    with pytest.raises(MalformedMessageError, match="invalid round config"):
        decode_message(replace_bytes(data, body + 8, struct.pack(">I", 4)))  # minimum survivors 4 > n
    with pytest.raises(MalformedMessageError, match="invalid round config"):
        decode_message(replace_bytes(data, body + 12, b"\x00"))  # bits = 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: AdvertiseKeysResponse(ROUND, NONCE, 4, key(1, 31), key(2), key(3, 64)), "mask_public_key"),
        (lambda: AdvertiseKeysResponse(ROUND, NONCE, 2**32, key(1), key(2), key(3, 64)), "sender"),
        (lambda: AdvertiseKeysResponse(ROUND, bytes(31), 4, key(1), key(2), key(3, 64)), "instance_nonce"),
        (lambda: AdvertiseKeysResponse(-1, NONCE, 4, key(1), key(2), key(3, 64)), "round_index"),
        (lambda: EncryptedShare(1, key(1, SEALED_SHARE_LENGTH - 1)), "ciphertext"),
        (lambda: RevealedShare(1, key(1, SHARE_LENGTH + 1)), "share"),
        (lambda: ShareKeysRequest(ROUND, NONCE, ()), "empty"),
        (lambda: MaskedInputResponse(ROUND, NONCE, 3, 4, np.array([16], dtype=np.uint32)), "2\\*\\*4"),
        (lambda: MaskedInputResponse(ROUND, NONCE, 3, 4, np.array([1], dtype=np.int64)), "uint32"),
        (lambda: MaskedInputResponse(ROUND, NONCE, 3, 4, np.zeros(0, dtype=np.uint32)), "length"),
        (lambda: UnmaskRequest(ROUND, NONCE, 4, (True,), ()), "int"),
    ],
)
def test_constructors_refuse_out_of_range_fields(build, message):
    with pytest.raises(MalformedMessageError, match=message):
        build()


def test_masked_vector_is_copied_and_frozen():
    vector = np.array([1, 2, 3], dtype=np.uint32)
    message = MaskedInputResponse(ROUND, NONCE, 3, 4, vector)
    vector[0] = 9
    assert message.vector.tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        message.vector[0] = 5


def test_consistency_messages_are_strict():
    with pytest.raises(MalformedMessageError, match="must not be empty"):
        ConsistencyRequest(ROUND, NONCE, ())
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        ConsistencyRequest(ROUND, NONCE, (4, 1))
    with pytest.raises(MalformedMessageError, match="quorum must be in 1"):
        ConsistencyResponse(ROUND, NONCE, 4, 0, key(1, 64))
    with pytest.raises(MalformedMessageError, match="signature must be 64 bytes"):
        ConsistencyResponse(ROUND, NONCE, 4, 3, key(1, 63))
    with pytest.raises(MalformedMessageError, match="signers must be strictly increasing"):
        UnmaskRequest(ROUND, NONCE, 4, (1,), (), (SurvivorSignature(4, key(1, 64)), SurvivorSignature(1, key(2, 64))))
    signed = UnmaskRequest(ROUND, NONCE, 4, (1,), (), (SurvivorSignature(1, key(1, 64)), SurvivorSignature(4, key(2, 64))))
    data = signed.to_bytes()
    signers_at = len(data) - 2 * 68
    repeated = replace_bytes(data, signers_at + 68, struct.pack(">I", 1))
    with pytest.raises(MalformedMessageError, match="signers must be strictly increasing"):
        decode_message(repeated)
    survivors = ConsistencyRequest(ROUND, NONCE, (1, 4)).to_bytes()
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        decode_message(replace_bytes(survivors, HEADER_LENGTH + 4, struct.pack(">II", 4, 4)))
