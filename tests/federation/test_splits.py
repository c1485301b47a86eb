"""Client splits: exact partitions, label-skew statistics, validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.datasets import load_dataset
from federation.learning_errors import PartitionError
from federation.splits import (
    classes_per_client,
    dirichlet_partition,
    federate,
    iid_partition,
    load_federated,
    shard_partition,
)


def assert_exact_partition(parts, total):
    joined = np.concatenate(parts)
    assert joined.size == total, "a sample was lost or duplicated"
    assert np.array_equal(np.sort(joined), np.arange(total))


@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(min_value=30, max_value=600),
    num_classes=st.integers(min_value=2, max_value=10),
    num_clients=st.integers(min_value=1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**31),
    split=st.sampled_from(["iid", "dirichlet", "shards"]),
)
def test_every_split_partitions_the_indices_exactly(total, num_classes, num_clients, seed, split):
    labels = np.random.default_rng(seed).integers(0, num_classes, total)
    if split == "iid":
        parts = iid_partition(labels, num_clients, seed=seed)
        sizes = [p.size for p in parts]
        assert max(sizes) - min(sizes) <= 1
    elif split == "dirichlet":
        parts = dirichlet_partition(labels, num_clients, alpha=1.0, seed=seed, min_samples=2)
        assert min(p.size for p in parts) >= 2
    else:
        parts = shard_partition(labels, num_clients, shards_per_client=2, seed=seed)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert_exact_partition(parts, total)


def test_dirichlet_on_digits_reproduces_the_niid_bench_classes_per_client():
    # docs/ALGORITHMS.md §7: 10 clients on digits give about 10.0, 7.2, 2.9 classes per client at
    # alpha = 100, 1, 0.1 (counting classes a client holds >= 5 examples of). Averages over 10
    # fixed seeds; the across-seed standard error is about 0.13, so +-0.6 is a wide band that
    # still separates the three regimes.
    data = load_dataset("digits", seed=0)
    expected = {100.0: 10.0, 1.0: 7.2, 0.1: 2.9}
    means = {}
    for alpha, target in expected.items():
        counts = [classes_per_client(federate(data, 10, alpha=alpha, seed=s), min_count=5).mean() for s in range(10)]
        means[alpha] = float(np.mean(counts))
        assert abs(means[alpha] - target) < 0.6, (alpha, means[alpha])
    any_example = [classes_per_client(federate(data, 10, alpha=0.1, seed=s)).mean() for s in range(10)]
    assert 3.5 < np.mean(any_example) < 5.5


def test_dirichlet_respects_minimum_client_size_and_reports_impossible_requests():
    labels = np.repeat(np.arange(3), 20)
    parts = dirichlet_partition(labels, 4, alpha=0.05, seed=1, min_samples=10)
    assert min(p.size for p in parts) >= 10
    with pytest.raises(PartitionError, match="exceeds"):
        dirichlet_partition(labels, 7, alpha=1.0, min_samples=10)
    with pytest.raises(PartitionError, match="alpha"):
        dirichlet_partition(labels, 2, alpha=0.0)


def test_shards_give_each_client_few_labels():
    labels = np.repeat(np.arange(10), 100)
    parts = shard_partition(labels, 20, shards_per_client=2, seed=0)
    assert_exact_partition(parts, labels.size)
    assert max(np.unique(labels[p]).size for p in parts) <= 2


def test_federate_keeps_the_global_test_set_and_orders_clients_by_id():
    data = load_dataset("digits", seed=0)
    fed = federate(data, 20, split="iid", seed=0)
    assert [c.client_id for c in fed.clients] == list(range(20))
    assert fed.test is data.test
    pooled = fed.pooled_train()
    assert pooled.num_samples == data.train.num_samples
    # Every training row appears exactly once across the clients.
    keys = {row.tobytes() for row in data.train.features}
    assert len({row.tobytes() for row in pooled.features}) == len(keys)


def test_load_federated_builds_synthetic_and_named_sets():
    fed = load_federated("synthetic", 12, seed=1)
    assert fed.num_clients == 12 and fed.input_shape == (60,)
    fed = load_federated("breast_cancer", 5, split="shards", seed=1)
    assert fed.num_clients == 5 and fed.num_classes == 2


def test_bad_split_arguments_raise_partition_error():
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(PartitionError, match="unknown split"):
        load_federated("digits", 3, split="zipf")
    with pytest.raises(PartitionError, match="num_clients"):
        iid_partition(labels, 0)
    with pytest.raises(PartitionError, match="cannot share"):
        iid_partition(labels, 11)
    with pytest.raises(PartitionError, match="integer"):
        iid_partition(np.zeros(10), 2)
