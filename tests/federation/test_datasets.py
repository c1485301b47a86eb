"""Offline datasets: shapes, classes, standardization, determinism, and the synthetic generator."""

import numpy as np
import pytest

from federation.datasets import (
    ClientData,
    Examples,
    load_dataset,
    load_mnist5k_raw,
    make_fedprox_synthetic,
    stratified_split,
)
from federation.learning_errors import DatasetError


def test_mnist5k_is_the_real_bundled_file_with_500_images_per_class():
    pixels, labels = load_mnist5k_raw()
    assert pixels.shape == (5000, 784) and pixels.dtype == np.uint8
    assert labels.shape == (5000,)
    assert np.array_equal(np.bincount(labels), np.full(10, 500))
    assert pixels.max() == 255 and pixels.min() == 0
    # Real handwriting, not noise: the frame is (almost always) blank, the digit is centred.
    images = pixels.reshape(5000, 28, 28).astype(np.float64)
    frame = np.concatenate([images[:, :2, :].ravel(), images[:, -2:, :].ravel(),
                            images[:, :, :2].ravel(), images[:, :, -2:].ravel()])
    assert frame.mean() < 1.0
    assert images[:, 10:18, 10:18].mean() > 60


@pytest.mark.parametrize(
    ("name", "samples", "width", "classes", "input_shape"),
    [
        ("digits", 1797, 64, 10, (1, 8, 8)),
        ("breast_cancer", 569, 30, 2, (30,)),
        ("mnist5k", 5000, 784, 10, (1, 28, 28)),
    ],
)
def test_pooled_datasets_have_documented_shapes_and_classes(name, samples, width, classes, input_shape):
    data = load_dataset(name, seed=3)
    assert data.num_classes == classes and data.input_shape == input_shape
    assert data.train.num_samples + data.test.num_samples == samples
    assert data.train.features.shape[1] == width and data.test.features.shape[1] == width
    assert data.train.features.dtype == np.float32 and data.train.labels.dtype == np.int64
    assert set(np.unique(data.train.labels)) == set(range(classes))
    assert abs(data.test.num_samples - 0.2 * samples) <= classes  # per-class rounding
    # Standardized with training statistics only: training columns have mean 0 and std 1 (or 0
    # for constant columns), the test columns need not.
    mean = data.train.features.mean(axis=0)
    std = data.train.features.std(axis=0)
    assert np.abs(mean).max() < 1e-4
    assert np.all((np.abs(std - 1) < 1e-3) | (std < 1e-6))


def test_split_is_deterministic_by_seed_and_changes_with_it():
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert np.array_equal(a.train.features, b.train.features)
    assert np.array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.test.labels, c.test.labels)


def test_stratified_split_is_a_partition_and_keeps_class_proportions():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(labels.size))
    assert np.array_equal(np.bincount(labels[test]), [20, 10, 6, 4])


def test_loaded_arrays_are_read_only():
    data = load_dataset("breast_cancer")
    with pytest.raises(ValueError):
        data.train.features[0, 0] = 1.0
    pixels, _ = load_mnist5k_raw()
    with pytest.raises(ValueError):
        pixels[0, 0] = 1


def test_unknown_dataset_and_bad_arguments_raise_dataset_error():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.0)
    with pytest.raises(DatasetError, match="seed"):
        load_dataset("digits", seed=-1)
    with pytest.raises(DatasetError, match="make_fedprox_synthetic"):
        load_dataset("synthetic")


def test_examples_validate_shapes_and_values():
    with pytest.raises(DatasetError, match="one entry per row"):
        Examples(np.zeros((3, 2)), np.zeros(4, dtype=np.int64))
    with pytest.raises(DatasetError, match="integers"):
        Examples(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(DatasetError, match="NaN"):
        Examples(np.full((1, 2), np.nan), np.zeros(1, dtype=np.int64))
    with pytest.raises(DatasetError, match="client_id"):
        ClientData(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), client_id=-3)
    client = ClientData(np.zeros((5, 2)), np.ones(5, dtype=np.int64), client_id=4)
    assert client.num_samples == 5 and client.client_id == 4


def test_fedprox_synthetic_follows_the_reference_generator():
    data = make_fedprox_synthetic(1.0, 1.0, num_clients=100, seed=0, standardized=False)
    assert data.num_clients == 100 and data.input_shape == (60,) and data.num_classes == 10
    totals = np.array([c.num_samples for c in data.clients]) + 0
    # lognormal(4, 2) + 50 samples per client, 80% kept for training: at least 40 each,
    # heavy-tailed sizes (median exp(4) + 50 ~ 105 before the split).
    assert totals.min() >= 40
    assert 50 < np.median(totals) < 200
    assert totals.max() > 4 * np.median(totals)
    # Feature j has within-client variance j^-1.2: on a large client the last coordinate varies
    # far less than the first.
    big = max(data.clients, key=lambda c: c.num_samples)
    variances = big.features.var(axis=0)
    assert variances[0] / variances[-1] > 60 ** 1.2 / 3
    # Non-IID: label distributions differ between clients (client-specific W_k).
    dominant = [np.bincount(c.labels, minlength=10).argmax() for c in data.clients]
    assert len(set(dominant)) >= 5


def test_fedprox_synthetic_is_deterministic_and_validates():
    a = make_fedprox_synthetic(0.5, 0.5, num_clients=5, seed=7)
    b = make_fedprox_synthetic(0.5, 0.5, num_clients=5, seed=7)
    assert all(np.array_equal(x.features, y.features) for x, y in zip(a.clients, b.clients))
    with pytest.raises(DatasetError, match="alpha"):
        make_fedprox_synthetic(-1.0, 1.0)
    with pytest.raises(DatasetError, match="num_clients"):
        make_fedprox_synthetic(1.0, 1.0, num_clients=0)
