"""X25519 agreement and Ed25519 identity keys against RFC 7748 and RFC 8032, plus rejections."""

import pytest

from secagg.errors import AuthenticationError, InvalidKeyError
from secagg.keys import AgreementKeyPair, IdentityKey, verify_signature

_h = bytes.fromhex
_FIELD_PRIME = 2**255 - 19


# RFC 7748 section 5.2: scalar, input u-coordinate, output u-coordinate.
@pytest.mark.parametrize(
    ("scalar", "u", "expected"),
    [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_rfc7748_section_5_2_scalar_multiplication(scalar, u, expected):
    assert AgreementKeyPair.from_private_bytes(_h(scalar)).exchange(_h(u)) == _h(expected)


def test_rfc7748_section_5_2_iterated_1000_times():
    k = u = bytes([9]) + bytes(31)
    for iteration in range(1, 1001):
        k, u = AgreementKeyPair.from_private_bytes(k).exchange(u), k
        if iteration == 1:
            assert k == _h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    assert k == _h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")


def test_rfc7748_section_6_1_diffie_hellman():
    alice = AgreementKeyPair.from_private_bytes(_h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = AgreementKeyPair.from_private_bytes(_h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public_bytes == _h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bob.public_bytes == _h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = _h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert alice.exchange(bob.public_bytes) == shared
    assert bob.exchange(alice.public_bytes) == shared


def test_generated_pairs_agree_and_round_trip_through_raw_bytes():
    first, second = AgreementKeyPair.generate(), AgreementKeyPair.generate()
    assert first.private_bytes != second.private_bytes
    assert first.exchange(second.public_bytes) == second.exchange(first.public_bytes)
    rebuilt = AgreementKeyPair.from_private_bytes(first.private_bytes)
    assert rebuilt.public_bytes == first.public_bytes
    assert len(first.public_bytes) == len(first.private_bytes) == 32


# Low-order points of Curve25519 (and non-canonical encodings of them): every one forces an
# all-zero shared secret whatever the private scalar.
@pytest.mark.parametrize(
    "point",
    [
        (0).to_bytes(32, "little"),
        (1).to_bytes(32, "little"),
        _h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        _h("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        (_FIELD_PRIME - 1).to_bytes(32, "little"),
        _FIELD_PRIME.to_bytes(32, "little"),
        (_FIELD_PRIME + 1).to_bytes(32, "little"),
    ],
    ids=["0", "1", "order8-a", "order8-b", "p-1", "p", "p+1"],
)
def test_low_order_peer_points_are_rejected(point):
    with pytest.raises(InvalidKeyError, match="low-order"):
        AgreementKeyPair.generate().exchange(point)


@pytest.mark.parametrize("peer", [bytes(31), bytes(33), "a" * 32, None])
def test_malformed_peer_keys_are_rejected(peer):
    with pytest.raises(InvalidKeyError):
        AgreementKeyPair.generate().exchange(peer)


@pytest.mark.parametrize("factory", [AgreementKeyPair.from_private_bytes, IdentityKey.from_private_bytes])
@pytest.mark.parametrize("raw", [bytes(31), bytes(33), None])
def test_private_keys_must_be_32_raw_bytes(factory, raw):
    with pytest.raises(InvalidKeyError):
        factory(raw)


# RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte).
_ED25519 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), _ED25519, ids=["test1", "test2"])
def test_rfc8032_ed25519_vectors(secret, public, message, signature):
    identity = IdentityKey.from_private_bytes(_h(secret))
    assert identity.public_bytes == _h(public)
    assert identity.private_bytes == _h(secret)
    assert identity.sign(_h(message)) == _h(signature)
    verify_signature(_h(public), _h(message), _h(signature))


def _signed():
    identity = IdentityKey.generate()
    message = b"advertise-keys transcript"
    return identity, message, identity.sign(message)


def test_a_valid_signature_verifies():
    identity, message, signature = _signed()
    assert len(signature) == 64
    assert verify_signature(identity.public_bytes, message, signature) is None


def test_a_flipped_signature_bit_is_rejected():
    identity, message, signature = _signed()
    for position in (0, 31, 32, 63):
        tampered = bytearray(signature)
        tampered[position] ^= 0x01
        with pytest.raises(AuthenticationError):
            verify_signature(identity.public_bytes, message, bytes(tampered))


def test_a_different_message_is_rejected():
    identity, message, signature = _signed()
    with pytest.raises(AuthenticationError):
        verify_signature(identity.public_bytes, message + b"!", signature)


def test_another_clients_key_is_rejected():
    _, message, signature = _signed()
    with pytest.raises(AuthenticationError):
        verify_signature(IdentityKey.generate().public_bytes, message, signature)


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [
        (bytes(31), b"m", bytes(64)),
        (None, b"m", bytes(64)),
        (bytes(32), "m", bytes(64)),
        (bytes(32), b"m", bytes(63)),
        (bytes(32), b"m", None),
    ],
)
def test_malformed_verification_inputs_fail_closed(public, message, signature):
    with pytest.raises(AuthenticationError):
        verify_signature(public, message, signature)


def test_keys_are_immutable_and_do_not_print_secrets():
    pair, identity = AgreementKeyPair.generate(), IdentityKey.generate()
    for key in (pair, identity):
        with pytest.raises(AttributeError):
            key._private_bytes = bytes(32)
        assert key.private_bytes.hex() not in repr(key)
