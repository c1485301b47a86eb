"""seal/open_sealed: AES-256-GCM against a published vector; every tampering is rejected."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.aead import SEAL_OVERHEAD, open_sealed, seal
from secagg.errors import AuthenticationError, ConfigurationError, InvalidKeyError

_h = bytes.fromhex

# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test case 16 (256-bit key,
# 96-bit IV, with associated data); the same vector is in NIST's GCM validation set.
_KEY = _h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
_IV = _h("cafebabefacedbaddecaf888")
_PLAINTEXT = _h(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
_AAD = _h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
_CIPHERTEXT = _h(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
)
_TAG = _h("76fc6ece0f4e1768cddf8853bb2d551b")
_SEALED_VECTOR = _IV + _CIPHERTEXT + _TAG


def test_mcgrew_viega_test_case_16_opens():
    assert open_sealed(_KEY, _SEALED_VECTOR, _AAD) == _PLAINTEXT


def test_overhead_is_nonce_plus_tag():
    assert SEAL_OVERHEAD == 12 + 16
    assert len(seal(_KEY, b"x" * 100, b"ad")) == 100 + SEAL_OVERHEAD


def test_round_trip_and_fresh_nonces():
    first, second = seal(_KEY, b"share", b"ad"), seal(_KEY, b"share", b"ad")
    assert first[:12] != second[:12]
    assert open_sealed(_KEY, first, b"ad") == open_sealed(_KEY, second, b"ad") == b"share"
    assert open_sealed(_KEY, seal(_KEY, b"", b"ad"), b"ad") == b""


@pytest.mark.parametrize("region", ["nonce", "ciphertext", "tag"])
def test_tampering_with_any_region_is_rejected(region):
    position = {"nonce": 3, "ciphertext": 12 + 20, "tag": len(_SEALED_VECTOR) - 1}[region]
    tampered = bytearray(_SEALED_VECTOR)
    tampered[position] ^= 0x80
    with pytest.raises(AuthenticationError):
        open_sealed(_KEY, bytes(tampered), _AAD)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_single_bit_flip_is_rejected(data):
    sealed = seal(_KEY, b"seed share || key share", b"iid||round||src||dst")
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1))
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError):
        open_sealed(_KEY, bytes(tampered), b"iid||round||src||dst")


def test_different_associated_data_is_rejected():
    with pytest.raises(AuthenticationError):
        open_sealed(_KEY, _SEALED_VECTOR, _AAD[:-1] + b"\xd3")


def test_wrong_key_is_rejected():
    with pytest.raises(AuthenticationError):
        open_sealed(bytes(32), _SEALED_VECTOR, _AAD)


@pytest.mark.parametrize("sealed", [b"", bytes(27), _SEALED_VECTOR[:27], None, _SEALED_VECTOR[:-1]])
def test_truncated_or_non_bytes_messages_are_rejected(sealed):
    with pytest.raises(AuthenticationError):
        open_sealed(_KEY, sealed, _AAD)


@pytest.mark.parametrize("key", [bytes(16), bytes(31), bytes(33), None])
def test_keys_must_be_32_bytes(key):
    with pytest.raises(InvalidKeyError):
        seal(key, b"x", b"ad")
    with pytest.raises(InvalidKeyError):
        open_sealed(key, _SEALED_VECTOR, _AAD)


def test_unbound_or_non_bytes_inputs_are_refused():
    with pytest.raises(ConfigurationError):
        seal(_KEY, b"x", b"")
    with pytest.raises(ConfigurationError):
        seal(_KEY, "x", b"ad")
    with pytest.raises(ConfigurationError):
        open_sealed(_KEY, _SEALED_VECTOR, "ad")
