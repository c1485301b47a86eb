"""LDP-FedP3 through real SecAgg+: one secure sum per layer group, dropouts included.

The clients' uploads are integer vectors (as lattice coordinates are); each group's senders run
their own SecAgg+ round (secagg.simulate: real clients and server exchanging serialized
messages), and the server averages what the unmasked per-group sums give it. The result must be
exactly the plain average over each group's surviving senders.
"""

import numpy as np
import torch
from torch import nn

from privacy.fedp3 import aggregate_round, assign_round, average_group_sums, group_denominators, layer_groups
from secagg.simulate import run_secure_sum
from secagg.stages import MASKED_INPUT

BITS = 24


def wrap(z: np.ndarray) -> np.ndarray:
    return (z % (1 << BITS)).astype(np.uint32)


def centered(v: np.ndarray) -> np.ndarray:
    z = v.astype(np.int64)
    return np.where(z >= 1 << (BITS - 1), z - (1 << BITS), z)


def test_per_group_secure_sums_average_exactly_over_surviving_senders():
    torch.manual_seed(0)  # test-only model
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(),
                          nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    layout = layer_groups(model)
    assignment = assign_round("OPU2", range(10, 18), layout.body_count)  # 4 owners per body group
    rng = np.random.default_rng(1)  # test-only uploads
    uploads = {
        c: {g: rng.integers(-5000, 5000, layout.groups[g].size) for g in assignment.uploaded_by(c)}
        for c in assignment.client_ids
    }
    dropped_client = 13  # owns body groups 1 and 2, and sends the head
    sums, survivors = {}, {}
    for group in range(layout.body_count + 1):
        senders = assignment.senders(group)
        n = len(senders)
        result = run_secure_sum(
            {c: wrap(uploads[c][group]) for c in senders},
            BITS,
            neighbours_k=n - 1,
            threshold=n // 2 + 1,
            dropouts={MASKED_INPUT: {dropped_client} & set(senders)},
            round_index=group,
        )
        sums[group] = centered(result.sum)
        survivors[group] = set(result.survivors)
    assert survivors[1] == set(assignment.senders(1)) - {dropped_client}
    assert survivors[0] == set(assignment.senders(0))

    means = average_group_sums(sums, group_denominators(assignment, "mean", survivors), layout)
    for group in range(layout.body_count + 1):
        alive = sorted(survivors[group])
        plain = np.mean(np.stack([uploads[c][group] for c in alive]).astype(np.float64), axis=0)
        np.testing.assert_array_equal(means[group], plain)

    state = model.state_dict()
    new_state = aggregate_round(state, layout, assignment, sums, survivors=survivors)
    for group in layout.groups:
        moved = layout.group_vector(new_state, group.index) - layout.group_vector(state, group.index)
        np.testing.assert_allclose(moved, means[group.index], rtol=1e-6, atol=1e-3)


def test_ldp_fedp3_clipped_noised_uploads_average_to_the_plain_mean_within_the_noise():
    """The full client path of LDP-FedP3: owned groups + head, jointly clipped to C, lattice-coded
    per group, integer LDP noise (exact Skellam, calibrated for the replace-one sensitivity of the
    whole upload: one release, one ledger event per client per round), one SecAgg+ sum per group.
    The decoded per-group means must equal the plain means of the clipped uploads up to noise whose
    size is known: the standardized residuals have mean square ≈ 1."""
    from privacy.calibration import local_l2_sensitivity
    from privacy.fedp3 import client_upload
    from privacy.ledger import BudgetLedger
    from privacy.mechanisms import local_noise_for, release_local
    from secagg.codec import CodecConfig, LatticeCodec, plan_bits

    torch.manual_seed(1)  # test-only model
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    layout = layer_groups(model)
    clients = list(range(40))
    assignment = assign_round("OPU2", clients, layout.body_count)
    clip, step, epsilon, delta = 1.0, 1.0 / 64, 50.0, 1e-5
    coordinates = layout.total_size
    noise = local_noise_for("skellam", epsilon, delta, local_l2_sensitivity(clip / step, coordinates), coordinates)
    bits = plan_bits(clip, step, "Z", len(clients), coordinates, noise_std=noise.scale ** 0.5, rotate=False)
    codec = LatticeCodec(CodecConfig(lattice="Z", step=step, bits=bits, rotate=False, clip_norm=clip))
    round_seed = bytes(range(32))
    rng = np.random.default_rng(2)  # test-only updates
    names = [name for name, _ in model.named_parameters()]
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    ledger = BudgetLedger(budget_epsilon=epsilon, delta=delta)
    clipped, noised = {}, {}
    for c in clients:
        update = {name: rng.normal(0, 0.3, shapes[name]) for name in names}
        upload = client_upload(update, layout, assignment.uploaded_by(c), clip)
        clipped[c] = upload.vectors
        releases = {g: release_local(codec.encode(v, round_seed, c, f"group-{g}"), noise)
                    for g, v in upload.vectors.items()}
        ledger.charge(c, 0, "update-ldp", noise.event())  # one joint release per round
        noised[c] = {g: r.noised for g, r in releases.items()}
    residuals = []
    for group in range(layout.body_count + 1):
        senders = list(assignment.senders(group))
        result = run_secure_sum({c: wrap_bits(noised[c][group], bits) for c in senders}, bits,
                                neighbours_k=len(senders) - 1, threshold=len(senders) // 2 + 1, round_index=group)
        total = codec.decode_sum(result.sum, round_seed, senders, layout.group(group).size, tensor=f"group-{group}")
        plain = np.sum([clipped[c][group] for c in senders], axis=0)
        std = step * (len(senders) * (noise.scale + 1 / 12)) ** 0.5  # Skellam + dither error, per coordinate
        residuals.append((total - plain) / std)
    squares = np.concatenate(residuals) ** 2
    # 484 coordinates: the mean square of N(0, 1) draws has sd √(2/484) ≈ 0.064, so the band is ±4.7 sd;
    # skipped noise gives ≈ 0, noise of twice the variance ≈ 2.
    assert 0.7 < squares.mean() < 1.3, squares.mean()
    assert ledger.max_epsilon() <= epsilon


def wrap_bits(z: np.ndarray, bits: int) -> np.ndarray:
    return (z % (1 << bits)).astype(np.uint32)
