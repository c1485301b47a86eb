"""derive_key: HKDF-SHA256 against RFC 5869 appendix A, plus context separation and validation."""

import pytest

from secagg.context import encode_parts
from secagg.errors import ConfigurationError, InvalidKeyError
from secagg.kdf import derive_key

_RFC5869 = [
    # Test case 1: basic test case with SHA-256.
    (
        b"\x0b" * 22,
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    # Test case 2: longer inputs/outputs.
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    # Test case 3: zero-length salt and info.
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), _RFC5869, ids=["case1", "case2", "case3"])
def test_rfc5869_sha256_vectors(ikm, salt, info, length, okm):
    assert derive_key(ikm, salt=salt, info=info, length=length).hex() == okm


def test_default_length_is_32_bytes():
    assert len(derive_key(b"k" * 32, salt=b"s", info=b"i")) == 32


def test_every_context_field_changes_the_key():
    base = derive_key(b"k" * 32, salt=b"iid", info=encode_parts("fedvault/mask-seed", 3, 1, 2))
    assert base != derive_key(b"k" * 32, salt=b"iid", info=encode_parts("fedvault/mask-seed", 3, 2, 1))
    assert base != derive_key(b"k" * 32, salt=b"iid", info=encode_parts("fedvault/mask-seed", 4, 1, 2))
    assert base != derive_key(b"k" * 32, salt=b"iie", info=encode_parts("fedvault/mask-seed", 3, 1, 2))
    assert base != derive_key(b"j" * 32, salt=b"iid", info=encode_parts("fedvault/mask-seed", 3, 1, 2))


@pytest.mark.parametrize("material", [b"", "text", None, 5])
def test_missing_or_non_bytes_key_material_is_refused(material):
    with pytest.raises(InvalidKeyError):
        derive_key(material, salt=b"", info=b"")


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1, 1.5, True])
def test_out_of_range_lengths_are_refused(length):
    with pytest.raises(ConfigurationError):
        derive_key(b"k", salt=b"", info=b"", length=length)


def test_longest_allowed_output_is_8160_bytes():
    assert len(derive_key(b"k", salt=b"", info=b"", length=255 * 32)) == 255 * 32


@pytest.mark.parametrize(("salt", "info"), [("s", b""), (b"", "i"), (None, b"")])
def test_non_bytes_salt_or_info_is_refused(salt, info):
    with pytest.raises(ConfigurationError):
        derive_key(b"k", salt=salt, info=info)
