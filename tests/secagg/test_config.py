"""RoundConfig validation and what the signed config digest binds."""

import dataclasses

import pytest

from secagg.config import RoundConfig, config_digest, permutation_seed
from secagg.errors import ConfigurationError

NONCE = bytes(range(32))


def make(**overrides):
    fields = dict(
        round_index=3,
        instance_nonce=NONCE,
        client_ids=(5, 1, 9, 7),
        neighbours_k=2,
        threshold=2,
        bits=16,
        vector_length=10,
        application_config=b"codec=E8",
    )
    fields.update(overrides)
    return RoundConfig(**fields)


def test_client_ids_are_stored_sorted():
    assert make().client_ids == (1, 5, 7, 9)
    assert make() == make(client_ids=[9, 7, 5, 1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"round_index": -1}, "round_index"),
        ({"round_index": True}, "round_index"),
        ({"instance_nonce": bytes(31)}, "32 bytes"),
        ({"instance_nonce": "x" * 32}, "bytes"),
        ({"client_ids": (1, 1, 2, 3)}, "repeat"),
        ({"client_ids": (1,)}, "2\\.\\."),
        ({"client_ids": (1, 2**32)}, "client id"),
        ({"client_ids": 7}, "sequence"),
        ({"neighbours_k": 0}, "neighbours_k"),
        ({"neighbours_k": 4}, "neighbours_k"),
        ({"client_ids": (1, 2, 3), "neighbours_k": 1}, "n\\*k must be even"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": 4}, "threshold"),
        ({"bits": 0}, "bits"),
        ({"bits": 33}, "bits"),
        ({"vector_length": 0}, "vector_length"),
        ({"vector_length": 2**30 + 1}, "vector_length"),
        ({"application_config": "text"}, "application_config"),
        ({"application_config": bytes(2**20 + 1)}, "limit"),
    ],
)
def test_invalid_configurations_are_refused_with_the_knob_named(overrides, message):
    with pytest.raises(ConfigurationError, match=message):
        make(**overrides)


def test_the_digest_binds_every_field():
    base = make()
    variants = [
        make(round_index=4),
        make(instance_nonce=bytes(32)),
        make(client_ids=(1, 5, 7, 8)),
        make(neighbours_k=3),
        make(threshold=3),
        make(bits=17),
        make(vector_length=11),
        make(application_config=b"codec=D4"),
        make(application_config=b""),
    ]
    digests = {config_digest(base)} | {config_digest(v) for v in variants}
    assert len(digests) == len(variants) + 1
    assert len(config_digest(base)) == 32
    assert config_digest(base) == config_digest(dataclasses.replace(base))


def test_the_graph_seed_depends_on_round_and_nonce_only():
    base = make()
    assert permutation_seed(base) == permutation_seed(make(bits=8, application_config=b""))
    assert permutation_seed(base) != permutation_seed(make(round_index=4))
    assert permutation_seed(base) != permutation_seed(make(instance_nonce=bytes(32)))


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().bits = 8
