"""The round logic shared by the coordinator and the HTTP round manager."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.config import RunConfig
from federation.errors import ConfigError
from federation.round_logic import (
    aborted_round_write,
    aggregate_round,
    checkpoint_due,
    graph_parameters,
    open_round,
    public_parameters,
)
from federation.round_plan import NoiseShare, RoundPlan
from secagg.modular import wrap
from secagg.simulate import run_secure_sum

BASE = RunConfig(dataset="digits", clients=40, model="logreg", noise="none", rounds=5, checkpoint_every=2)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=2, max_value=40), k=st.integers(min_value=1, max_value=39),
       t=st.integers(min_value=2, max_value=40), floor=st.integers(min_value=1, max_value=40))
def test_opened_rounds_are_always_a_valid_secagg_configuration(n, k, t, floor):
    config = BASE.replace(neighbours=min(k, 39), threshold=t)
    noise = NoiseShare("distributed", "skellam", 1.0, 1.0, 1.0, floor, 1)
    if n < max(2, floor):
        with pytest.raises(ConfigError, match="below the noise floor"):
            open_round(config, round_index=0, cohort=range(n), dimension=8, step=0.1, bits=16, noise=noise)
        return
    setup = open_round(config, round_index=0, cohort=range(n), dimension=8, step=0.1, bits=16, noise=noise)
    neighbours, threshold = setup.neighbours, setup.threshold  # RoundConfig validated them
    assert 1 <= neighbours <= n - 1 and (n * neighbours) % 2 == 0
    assert 2 <= threshold <= min(t, neighbours + 1)
    assert setup.minimum_survivors == min(n, max(threshold, floor))


def test_the_default_table_is_used_without_explicit_parameters():
    from federation.privacy_plan import table_dropout
    from secagg.graph import default_parameters

    expected = default_parameters(10, dropout=table_dropout(BASE.dropout_rate))
    assert graph_parameters(BASE, 10) == expected and expected[0] == 9  # small cohorts: complete graph
    with pytest.raises(ConfigError):
        graph_parameters(BASE, 1)


def test_an_opened_round_binds_its_plan_into_the_secagg_configuration():
    setup = open_round(BASE, round_index=3, cohort=[5, 1, 9, 2], dimension=650, step=0.01, bits=16,
                       noise=NoiseShare())
    assert RoundPlan.from_bytes(setup.round_config.application_config) == setup.plan
    assert setup.round_config.client_ids == (1, 2, 5, 9)
    assert setup.round_config.vector_length == setup.plan.coordinates()
    assert public_parameters(setup)["round_seed"] == setup.plan.round_seed.hex()
    other = open_round(BASE, round_index=3, cohort=[5, 1, 9, 2], dimension=650, step=0.01, bits=16,
                       noise=NoiseShare())
    assert other.plan.round_seed != setup.plan.round_seed  # a fresh public seed per round


def test_aggregate_round_decodes_the_mean_of_the_survivors_updates():
    setup = open_round(BASE.replace(lattice="Z"), round_index=0, cohort=[0, 1, 2], dimension=64, step=0.001,
                       bits=20, noise=NoiseShare())
    plan, codec = setup.plan, setup.plan.codec()
    rng = np.random.default_rng(0)
    updates = {c: rng.normal(size=64) * 0.05 for c in range(3)}
    vectors = {c: wrap(codec.encode(u, plan.round_seed, c), plan.bits) for c, u in updates.items()}
    outcome = run_secure_sum(vectors, plan.bits, neighbours_k=2, threshold=2)
    aggregate = aggregate_round(plan, outcome)
    assert aggregate.survivors == (0, 1, 2)
    np.testing.assert_allclose(aggregate.mean_update, np.mean(list(updates.values()), axis=0), atol=0.002)
    assert aggregate.mean_update.dtype == np.float32


def test_checkpoints_every_k_rounds_and_after_the_last():
    assert [r for r in range(5) if checkpoint_due(BASE, r)] == [1, 3, 4]


def test_an_aborted_round_write_carries_the_reason_and_no_aggregate():
    now = datetime.now(UTC)
    write = aborted_round_write(round_index=2, cohort=[1, 2, 3], started_at=now, finished_at=now,
                                reason="only 1 clients advertised keys", stage="advertise_keys",
                                dropouts={"advertise_keys": {2, 3}})
    assert write.status == "aborted" and write.aggregates == ()
    assert write.audit_details["reason"] == "only 1 clients advertised keys"
    assert dict(write.dropouts) == {"advertise_keys": (2, 3)}
