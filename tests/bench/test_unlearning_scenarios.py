"""Specification of the unlearning bench's scenario family and of its pass/fail summary."""

import dataclasses

import numpy as np
import pytest

from bench.unlearning_report import summarize
from bench.unlearning_scenarios import (
    INPUT_SHAPES, KINDS, QUICK_FAMILY, ScenarioFamily, dominant_classes, draw_scenarios,
)
from federation.backdoor import Backdoor
from federation.heavy_client import HeavyClient
from federation.label_flip import LabelFlip

FAMILY = ScenarioFamily()


def test_the_same_family_and_seed_give_the_same_scenarios_and_another_seed_others():
    first = draw_scenarios(FAMILY, 6, seed=11)
    assert first == draw_scenarios(FAMILY, 6, seed=11)
    assert [s.to_dict() for s in first] != [s.to_dict() for s in draw_scenarios(FAMILY, 6, seed=12)]
    # As many kinds as asked, each with the family's seeds per kind, seed-major.
    assert len(first) == 6 * FAMILY.seeds_per_kind
    assert [s.kind_index for s in first] == list(range(6)) * FAMILY.seeds_per_kind
    # Prefix-stable: a larger draw starts with the smaller one's kinds.
    smaller = draw_scenarios(FAMILY, 3, seed=11)
    assert [s for s in first if s.kind_index < 3] == smaller
    assert len(draw_scenarios(dataclasses.replace(FAMILY, seeds_per_kind=3), 2, seed=0)) == 6


def test_a_few_kinds_already_cover_every_dataset_and_attack():
    for seed in range(5):
        scenarios = draw_scenarios(FAMILY, 3, seed=seed)
        assert {s.kind for s in scenarios} == set(KINDS)
        assert {s.dataset for s in scenarios} == set(FAMILY.datasets)


def test_every_drawn_scenario_is_a_valid_run_within_the_family():
    scenarios = draw_scenarios(FAMILY, 30, seed=3)
    for s in scenarios:
        assert FAMILY.clients[0] <= s.clients <= FAMILY.clients[1]
        assert 0 <= s.removed_client < s.clients
        assert not (s.model == "cnn" and s.dataset == "synthetic")  # the CNN needs images
        for dp in (False, True):
            config = s.run_config(FAMILY, dp=dp)
            assert config.noise == ("distributed" if dp else "none") and config.seed == s.seed
        shape = INPUT_SHAPES[s.dataset]
        if s.kind == "backdoor":  # the trigger fits the inputs (the constructor checks it)
            Backdoor(s.removed_client, s.extra["backdoor_target"], shape, patch=s.extra["backdoor_patch"],
                     value=s.extra["backdoor_value"], position=tuple(s.extra["backdoor_position"]))
        else:
            HeavyClient(s.extra["heavy_client"], s.extra["heavy_class"], s.extra["heavy_share"])
        if s.kind == "label_flip":
            LabelFlip(s.extra["label_flip_client"], s.extra["label_flip_source"], s.extra["label_flip_target"])
    # The seeds of a kind share its settings and differ in seed.
    by_kind = {}
    for s in scenarios:
        by_kind.setdefault(s.kind_index, []).append(s)
    for group in by_kind.values():
        assert len({(s.kind, s.dataset, s.model, s.clients, s.skew) for s in group}) == 1
        assert len({s.seed for s in group}) == len(group)
    # Positions, sizes and values of the trigger vary across the family.
    backdoors = [s.extra for s in scenarios if s.kind == "backdoor"]
    assert len({tuple(b["backdoor_position"]) for b in backdoors}) > 1
    assert len({b["backdoor_patch"] for b in backdoors}) > 1
    assert {s.skew for s in scenarios if s.dataset != "synthetic"} == set(FAMILY.skews)


def test_quick_family_is_small():
    scenarios = draw_scenarios(QUICK_FAMILY, 2, seed=0)
    assert len(scenarios) == 2 and all(s.clients <= 12 and s.rounds <= 4 for s in scenarios)


def test_dominant_classes_cover_half_the_client_at_most_three():
    assert dominant_classes(np.array([4] * 8 + [1] * 2)) == [4]
    assert dominant_classes(np.array([2] * 3 + [5] * 3 + [7] * 2 + [0] * 2)) == [2, 5]
    assert dominant_classes(np.arange(10)) == [0, 1, 2]


def _row(dp, attack, dominant, test, distance, ratio=64.0, speedup=300.0):
    return {"dp": dp, "history_ratio": ratio, "speedup": speedup, "recording_overhead": 0.1,
            "unlearned": {"attack_gap": attack, "dominant_gap": dominant, "test_gap": test, "distance": distance,
                          "membership_gap": 0.0}}


def test_the_summary_judges_the_worst_case_in_both_directions():
    rows = [_row("off", 1.0, 2.0, -1.0, 0.2), _row("off", -4.0, -3.5, 0.5, 0.4), _row("off", None, 0.0, 0.0, 0.1)]
    summary = summarize(rows)["off"]
    assert summary["attack success gap (pts)"]["worst"] == -4.0 and summary["attack success gap (pts)"]["passed"]
    assert summary["attack success gap (pts)"]["count"] == 2  # an honest client has no attack
    assert summary["dominant-class gap, above (pts)"]["passed"]
    assert summary["dominant-class gap, below (pts)"]["worst"] == -3.5
    assert not summary["dominant-class gap, below (pts)"]["passed"]  # over-removal beyond 3 points
    assert summary["test accuracy gap (pts)"]["passed"] and summary["distance / original's"]["passed"]
    failing = summarize(rows + [_row("off", 6.0, 0.0, 0.0, 0.6, ratio=20.0, speedup=50.0)])["off"]
    for name in ("attack success gap (pts)", "distance / original's", "history vs fp32 (x smaller)",
                 "deletion speed-up vs retraining (x)"):
        assert not failing[name]["passed"], name
    assert "passed" not in summarize([_row("on", 9.0, 0.0, 0.0, 0.9)])["on"]["attack success gap (pts)"]


def test_an_empty_family_is_refused():
    with pytest.raises(ValueError, match="positive int"):
        draw_scenarios(FAMILY, 0, seed=0)
    with pytest.raises(ValueError, match="kinds must be among"):
        ScenarioFamily(kinds=("poison",))
