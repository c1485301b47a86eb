"""The global survivor floor (RoundConfig.minimum_survivors), separate from the Shamir threshold."""

import numpy as np
import pytest

from secagg.config import RoundConfig, config_digest
from secagg.errors import ConfigurationError, RoundAbortedError
from secagg.simulate import LocalRound, make_config
from secagg.stages import MASKED_INPUT
from secagg.wire import AdvertiseKeysRequest, decode_message


def _vectors(ids, m=16, bits=12):
    rng = np.random.default_rng(0)
    return {i: rng.integers(0, 2**bits, size=m, dtype=np.uint32) for i in ids}


def test_minimum_survivors_defaults_to_the_threshold_and_is_validated():
    config = make_config(range(8), 12, 16, neighbours_k=4, threshold=3)
    assert config.minimum_survivors == 3
    with pytest.raises(ConfigurationError, match="minimum_survivors"):
        make_config(range(8), 12, 16, neighbours_k=4, threshold=3, minimum_survivors=2)
    with pytest.raises(ConfigurationError, match="minimum_survivors"):
        make_config(range(8), 12, 16, neighbours_k=4, threshold=3, minimum_survivors=9)


def test_minimum_survivors_travels_on_the_wire_and_is_signed():
    config = make_config(range(8), 12, 16, neighbours_k=4, threshold=3, minimum_survivors=6)
    parsed = decode_message(AdvertiseKeysRequest.for_config(config).to_bytes())
    assert parsed.config.minimum_survivors == 6
    other = RoundConfig(**{**config.__dict__, "minimum_survivors": 7})
    assert config_digest(other) != config_digest(config)


def test_round_aborts_below_the_floor_even_when_every_neighbourhood_meets_t():
    ids = list(range(10))
    config = make_config(ids, 12, 16, neighbours_k=4, threshold=3, minimum_survivors=8)
    local = LocalRound(config, _vectors(ids))
    local.step()  # advertise keys
    local.step()  # share keys
    with pytest.raises(RoundAbortedError, match="at least 8"):
        local.step(skip={0, 5, 7})  # 7 masked inputs: each client still has >= t live holders
    assert local.server.aborted


def test_round_at_the_floor_completes_with_the_exact_sum():
    ids = list(range(10))
    vectors = _vectors(ids)
    config = make_config(ids, 12, 16, neighbours_k=4, threshold=3, minimum_survivors=8)
    local = LocalRound(config, vectors)
    local.step()
    local.step()
    local.step(skip={0, 5})
    local.step()  # consistency
    local.step()
    expected = sum(vectors[i].astype(np.uint64) for i in ids if i not in {0, 5}) % 2**12
    assert np.array_equal(local.server.result.sum, expected.astype(np.uint32))
    assert MASKED_INPUT in local.server.result.dropped
