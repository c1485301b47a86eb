"""Specification of the planted attacks and the honest heavy client of a run: a pixel-pattern
backdoor at a configurable position, label flipping, and one client holding most of a class."""

import numpy as np
import pytest

from federation.backdoor import Backdoor, backdoor_for, client_data_for, client_split_for
from federation.config import RunConfig
from federation.errors import ConfigError
from federation.evaluation import data_for
from federation.heavy_client import HeavyClient
from federation.label_flip import LabelFlip

CONFIG = RunConfig(dataset="digits", split="dirichlet", dirichlet_alpha=1.0, clients=8, noise="none", seed=3)


def test_the_trigger_goes_where_the_position_says_with_its_size_and_value():
    backdoor = Backdoor(client_id=0, target_label=2, input_shape=(2, 8, 8), patch=3, value=-5.5, position=(1, 4))
    stamped = backdoor.stamp(np.zeros((2, 128), dtype=np.float32)).reshape(2, 2, 8, 8)
    expected = np.zeros((2, 8, 8), dtype=np.float32)
    expected[:, 1:4, 4:7] = -5.5  # rows 1..3, columns 4..6, in every channel
    assert np.array_equal(stamped[0], expected) and np.array_equal(stamped[1], expected)


def test_without_a_position_the_trigger_stays_in_the_bottom_right_corner():
    assert Backdoor(0, 7, (1, 8, 8), patch=2).trigger_columns.tolist() == [54, 55, 62, 63]
    assert Backdoor(0, 7, (1, 8, 8), patch=2, position=(6, 6)).trigger_columns.tolist() == [54, 55, 62, 63]
    assert Backdoor(0, 1, (30,), patch=4).trigger_columns.tolist() == [26, 27, 28, 29]
    assert Backdoor(0, 1, (30,), patch=4, position=(3,)).trigger_columns.tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize("shape, patch, position, message", [
    ((1, 8, 8), 3, (6, 0), "does not fit"), ((1, 8, 8), 2, (0, -1), "does not fit"),
    ((1, 8, 8), 2, (1,), "2 int"), ((30,), 4, (27,), "does not fit"), ((1, 8, 8), 2, (1.0, 2), "int")])
def test_a_trigger_that_does_not_fit_is_refused(shape, patch, position, message):
    with pytest.raises(ConfigError, match=message):
        Backdoor(0, 1, shape, patch=patch, position=position)


def test_the_run_configuration_places_the_trigger():
    config = CONFIG.replace(extra={"backdoor_client": 2, "backdoor_target": 4, "backdoor_patch": 2,
                                   "backdoor_position": [0, 3], "backdoor_value": 9.0})
    backdoor = backdoor_for(config)
    assert backdoor.trigger_columns.tolist() == [3, 4, 11, 12] and backdoor.value == 9.0
    poisoned = client_data_for(config, 2)
    clean = data_for(config).clients[2]
    triggered = poisoned.features[clean.num_samples:]
    assert np.all(triggered[:, [3, 4, 11, 12]] == 9.0) and set(poisoned.labels[clean.num_samples:]) == {4}
    with pytest.raises(ConfigError, match="does not fit"):
        backdoor_for(config.replace(extra={"backdoor_client": 2, "backdoor_position": [7, 7]}))


def test_a_label_flipper_relabels_its_source_class_only():
    config = CONFIG.replace(extra={"label_flip_client": 1, "label_flip_source": 3, "label_flip_target": 8})
    clean = data_for(config).clients[1]
    flipped = client_data_for(config, 1)
    assert np.array_equal(flipped.features, clean.features)
    source = clean.labels == 3
    assert source.any() and np.all(flipped.labels[source] == 8)
    assert np.array_equal(flipped.labels[~source], clean.labels[~source])
    assert client_data_for(config, 0) is data_for(config).clients[0]
    flip = LabelFlip(1, 3, 8)
    assert flip.success(np.array([8, 8, 3, 8]), np.array([3, 3, 3, 5])) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="needs label_flip_target"):
        client_data_for(CONFIG.replace(extra={"label_flip_client": 1, "label_flip_source": 3}), 1)
    with pytest.raises(ConfigError, match="both 3"):
        LabelFlip(1, 3, 3)


def test_the_heavy_client_ends_up_with_its_share_and_no_example_is_lost_or_copied():
    config = CONFIG.replace(extra={"heavy_client": 5, "heavy_class": 6, "heavy_share": 0.75})
    before = data_for(config)
    after = [client_split_for(config, k) for k in range(config.clients)]
    total = sum(int(np.sum(c.labels == 6)) for c in before.clients)
    assert int(np.sum(after[5].labels == 6)) == round(0.75 * total)
    assert all(c.num_samples >= 1 for c in after)
    # The same multiset of examples, only moved between clients.
    def rows(clients):
        return sorted(map(bytes, np.concatenate([c.features for c in clients]).view(np.uint8).reshape(-1, 64 * 4)))

    assert rows(after) == rows(before.clients)
    # Other classes stay where the split put them.
    for k in range(config.clients):
        assert np.array_equal(np.sort(after[k].labels[after[k].labels != 6]),
                              np.sort(before.clients[k].labels[before.clients[k].labels != 6]))
    # Deterministic: every process computes the same move.
    again = client_split_for(config, 5)
    assert np.array_equal(again.features, after[5].features)


def test_heavy_client_settings_are_validated():
    with pytest.raises(ConfigError, match="heavy_share"):
        HeavyClient(0, 1, share=1.0)
    with pytest.raises(ConfigError, match="needs heavy_class"):
        client_split_for(CONFIG.replace(extra={"heavy_client": 0}), 0)
    with pytest.raises(ConfigError, match="not one of the 8 clients"):
        client_split_for(CONFIG.replace(extra={"heavy_client": 8, "heavy_class": 1}), 0)
    with pytest.raises(ConfigError, match="without heavy_client"):
        client_split_for(CONFIG.replace(extra={"heavy_share": 0.5}), 0)


@pytest.mark.parametrize("settings, switch", [({"backdoor_target": 1}, "backdoor_client"),
                                              ({"heavy_share": 0.8}, "heavy_client"),
                                              ({"label_flip_source": 1, "label_flip_target": 7}, "label_flip_client")])
def test_an_attacks_settings_without_its_switch_are_refused_by_name(settings, switch):
    with pytest.raises(ConfigError, match=f"given without {switch}"):
        client_data_for(CONFIG.replace(extra=settings), 0)
