"""FedP3 layer groups and the ownership policies that assign body groups to clients.

FedP3 (Yi, Horváth, Richtárik et al., "FedP3: Federated Personalized and Privacy-friendly Network
Pruning under Model Heterogeneity", ICLR 2024, arXiv 2404.09816) splits a network into layer
groups: the weight and bias of each Linear/Conv layer. The last group is the classifier head,
which every client uploads; the other ("body") groups are owned by subsets of clients chosen by a
public policy, and a client uploads only the body groups it owns (docs/ALGORITHMS.md §4). As in the
reference code (`SonyResearch/FedP3` `main.py`), with n clients, G body groups and client position
i in 0..n-1, the base group is g = ⌊i·G/n⌋ (⌊i/25⌋ for 100 clients and 4 groups):

- ``LowerB``: {g}
- ``OPU2``:   {g, g+1} mod G   (overlapped, uniform)
- ``OPU3``:   {g, g+1, g+2} mod G
- ``OPR2``:   two distinct groups drawn per round from a *public* seed (overlapped, random)

Ownership is public structure (who sends which group), not secret: anyone holding the round's
public seed can recompute it, so the server may use it to weight the aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.errors import PrivacyError

__all__ = [
    "POLICIES",
    "FedP3Error",
    "GroupLayout",
    "LayerGroup",
    "RoundAssignment",
    "assign_round",
    "base_group",
    "layer_groups",
    "owned_body_groups",
]

POLICIES = ("LowerB", "OPU2", "OPU3", "OPR2")
# How many distinct body groups each policy gives a client.
_GROUPS_PER_CLIENT = {"LowerB": 1, "OPU2": 2, "OPU3": 3, "OPR2": 2}
_OPR2_LABEL = "fedvault/fedp3/opr2"


class FedP3Error(PrivacyError, ValueError):
    """A FedP3 input is inconsistent: unknown policy, unsupported model, or arrays that do not
    match the layer-group layout."""


@dataclass(frozen=True)
class LayerGroup:
    """One FedP3 layer group: a Linear/Conv layer's parameters (plus any parameterised layers
    registered after it and before the next Linear/Conv, e.g. its normalisation).

    Attributes:
        index: position in the layout; the head has the highest index.
        name: module name of the Linear/Conv layer that opens the group (e.g. ``"fc3"``).
        parameter_names: full parameter names as in ``model.named_parameters()``.
        shapes: one shape per parameter.
        prunable: per parameter, True only for a Linear/Conv ``weight`` (biases and normalisation
            parameters are never pruned).
    """

    index: int
    name: str
    parameter_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    prunable: tuple[bool, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of coordinates of each parameter."""
        return tuple(math.prod(shape) for shape in self.shapes)

    @property
    def size(self) -> int:
        """Number of coordinates in the group's flat vector."""
        return sum(self.sizes)


@dataclass(frozen=True)
class GroupLayout:
    """The ordered layer groups of a model; the last one is the classifier head.

    A group's flat vector is the concatenation of its parameters, each flattened in C order, in
    ``parameter_names`` order. Buffers (e.g. batch-norm running statistics) are not part of any
    group: they are neither uploaded nor aggregated.
    """

    groups: tuple[LayerGroup, ...]

    def __post_init__(self) -> None:
        if len(self.groups) < 2:
            raise FedP3Error(
                f"FedP3 needs at least one body group and a head, got {len(self.groups)} group(s)"
            )
        if tuple(group.index for group in self.groups) != tuple(range(len(self.groups))):
            raise FedP3Error("group indices must be 0..len(groups)-1 in order")

    @property
    def head_index(self) -> int:
        """Index of the classifier head (the last group)."""
        return len(self.groups) - 1

    @property
    def body_count(self) -> int:
        """G, the number of body groups (all groups but the head); body indices are 0..G-1."""
        return len(self.groups) - 1

    @property
    def total_size(self) -> int:
        """Number of coordinates of the whole model (all groups)."""
        return sum(group.size for group in self.groups)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group.parameter_names)

    def group(self, index: int) -> LayerGroup:
        return self.groups[self.check_index(index)]

    def check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise FedP3Error(f"group index must be an int, got {type(index).__name__}")
        if not 0 <= int(index) < len(self.groups):
            raise FedP3Error(f"group index {index} out of range 0..{len(self.groups) - 1}")
        return int(index)

    def group_vector(self, state: Mapping[str, Any], index: int) -> np.ndarray:
        """Group ``index`` of ``state`` (parameter name -> tensor/ndarray) as a (size,) float64 vector."""
        group = self.group(index)
        parts = [
            _as_float64(state, name, shape).ravel()
            for name, shape in zip(group.parameter_names, group.shapes)
        ]
        return np.concatenate(parts)

    def split_vector(self, vector: np.ndarray, index: int) -> dict[str, np.ndarray]:
        """Inverse of :meth:`group_vector`: parameter name -> float64 array of its shape."""
        group = self.group(index)
        array = np.asarray(vector)
        if array.ndim != 1 or array.shape[0] != group.size:
            raise FedP3Error(
                f"group {index} ({group.name}) expects a ({group.size},) vector, got shape {array.shape}"
            )
        out: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape, size in zip(group.parameter_names, group.shapes, group.sizes):
            out[name] = array[offset : offset + size].reshape(shape).astype(np.float64, copy=True)
            offset += size
        return out


def _as_float64(state: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in state:
        raise FedP3Error(f"state has no parameter {name!r}")
    value = state[name]
    if hasattr(value, "detach"):  # torch.Tensor without importing torch here
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if tuple(array.shape) != shape:
        raise FedP3Error(f"parameter {name!r} has shape {tuple(array.shape)}, layout expects {shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FedP3Error(f"parameter {name!r} has non-numeric dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def layer_groups(model: Any) -> GroupLayout:
    """Derive the FedP3 layer groups of a torch ``nn.Module``.

    Modules are visited in registration order (``named_modules``). Each ``nn.Linear`` or
    convolution opens a group holding its ``weight`` and ``bias``; parameters of any other module
    (normalisation layers, for instance) join the group of the Linear/Conv registered just before
    it. The last group is the head, so the classifier must be the last Linear/Conv registered (true
    of LeNet and MLPs; FedP3's own models are LeNet/MLP).

    Raises:
        FedP3Error: not an ``nn.Module``; a parameterised module before any Linear/Conv; a
            parameter shared by two modules; uninitialised (lazy) parameters; fewer than two groups.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise FedP3Error(f"model must be a torch.nn.Module, got {type(model).__name__}")
    anchors = (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
    )
    opened: list[tuple[str, list[str], list[tuple[int, ...]], list[bool]]] = []
    seen: dict[int, str] = {}
    for module_name, module in model.named_modules():
        local = list(module.named_parameters(recurse=False))
        if isinstance(module, anchors):
            opened.append((module_name, [], [], []))
        elif local and not opened:
            raise FedP3Error(
                f"module {module_name!r} ({type(module).__name__}) has parameters but no Linear/Conv "
                "layer precedes it, so it belongs to no FedP3 layer group"
            )
        for local_name, parameter in local:
            full_name = f"{module_name}.{local_name}" if module_name else local_name
            if isinstance(parameter, nn.parameter.UninitializedParameter):
                raise FedP3Error(f"parameter {full_name!r} is uninitialised (lazy); run a forward pass first")
            if id(parameter) in seen:
                raise FedP3Error(
                    f"parameter {full_name!r} is shared with {seen[id(parameter)]!r}; tied weights "
                    "cannot belong to two layer groups"
                )
            seen[id(parameter)] = full_name
            _, names, shapes, prunable = opened[-1]
            names.append(full_name)
            shapes.append(tuple(int(d) for d in parameter.shape))
            prunable.append(isinstance(module, anchors) and local_name == "weight")
    # A Linear/Conv without parameters (e.g. weight removed by a pruning utility) forms no group.
    nonempty = [entry for entry in opened if entry[1]]
    return GroupLayout(
        tuple(
            LayerGroup(index, name, tuple(names), tuple(shapes), tuple(prunable))
            for index, (name, names, shapes, prunable) in enumerate(nonempty)
        )
    )


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise FedP3Error(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_policy(policy: Any, body_groups: int) -> str:
    if policy not in POLICIES:
        raise FedP3Error(f"unknown FedP3 policy {policy!r}; choose one of {', '.join(POLICIES)}")
    needed = _GROUPS_PER_CLIENT[policy]
    if body_groups < needed:
        raise FedP3Error(
            f"policy {policy} gives each client {needed} distinct body groups, but the model has "
            f"only {body_groups}; pick a policy with fewer groups per client"
        )
    return policy


def base_group(position: int, clients: int, body_groups: int) -> int:
    """g = ⌊i·G/n⌋: the base body group of the client at ``position`` i among n clients."""
    clients = _check_positive_int(clients, "clients")
    body_groups = _check_positive_int(body_groups, "body_groups")
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position < clients:
        raise FedP3Error(f"position must be an int in 0..{clients - 1}, got {position!r}")
    return int(position) * body_groups // clients


def _opr2_pairs(public_seed: bytes, round_index: int, clients: int, body_groups: int) -> list[frozenset[int]]:
    # One uniform draw per client over the G·(G-1) ordered pairs of distinct groups, from the one
    # PRG keyed by the round's public seed: reproducible by anyone, and independent across rounds.
    from secagg.context import encode_parts
    from secagg.prg import random_below

    pair_count = body_groups * (body_groups - 1)
    draws = random_below(public_seed, encode_parts(_OPR2_LABEL, round_index), clients, pair_count)
    pairs = []
    for draw in draws.tolist():
        first, second = divmod(int(draw), body_groups - 1)
        if second >= first:  # skip `first` so the two groups are distinct
            second += 1
        pairs.append(frozenset((first, second)))
    return pairs


def owned_body_groups(
    policy: str,
    position: int,
    clients: int,
    body_groups: int,
    *,
    public_seed: bytes | None = None,
    round_index: int = 0,
) -> frozenset[int]:
    """Body groups owned by the client at ``position`` (0..n-1) under ``policy``.

    ``OPR2`` needs the round's 32-byte ``public_seed``; the deterministic policies ignore it.
    """
    g = base_group(position, clients, body_groups)
    _check_policy(policy, body_groups)
    if policy == "OPR2":
        return assign_round(
            policy, range(clients), body_groups, public_seed=public_seed, round_index=round_index
        ).owned_by(position)
    width = _GROUPS_PER_CLIENT[policy]
    return frozenset((g + offset) % body_groups for offset in range(width))


@dataclass(frozen=True)
class RoundAssignment:
    """Who owns which body group in one round (public information).

    Attributes:
        policy: one of :data:`POLICIES`.
        round_index: the round this assignment is for.
        body_groups: G.
        ownership: ``(client_id, owned body groups)`` pairs sorted by client id.
    """

    policy: str
    round_index: int
    body_groups: int
    ownership: tuple[tuple[int, frozenset[int]], ...]

    @property
    def head_index(self) -> int:
        return self.body_groups

    @property
    def client_ids(self) -> tuple[int, ...]:
        return tuple(client_id for client_id, _ in self.ownership)

    def owned_by(self, client_id: int) -> frozenset[int]:
        """Body groups owned by ``client_id`` (without the head)."""
        for candidate, owned in self.ownership:
            if candidate == client_id:
                return owned
        raise FedP3Error(f"client {client_id} is not part of round {self.round_index}")

    def uploaded_by(self, client_id: int) -> tuple[int, ...]:
        """Sorted group indices client ``client_id`` uploads: its owned body groups and the head."""
        return tuple(sorted(self.owned_by(client_id) | {self.head_index}))

    def senders(self, group_index: int) -> tuple[int, ...]:
        """Client ids that upload group ``group_index`` (every client for the head)."""
        if isinstance(group_index, bool) or not 0 <= group_index <= self.body_groups:
            raise FedP3Error(f"group index {group_index!r} out of range 0..{self.body_groups}")
        if group_index == self.head_index:
            return self.client_ids
        return tuple(client_id for client_id, owned in self.ownership if group_index in owned)

    def owner_counts(self) -> tuple[int, ...]:
        """Number of owners of each body group 0..G-1."""
        return tuple(len(self.senders(group)) for group in range(self.body_groups))


def assign_round(
    policy: str,
    client_ids: Sequence[int] | range,
    body_groups: int,
    *,
    public_seed: bytes | None = None,
    round_index: int = 0,
) -> RoundAssignment:
    """Assign body groups to a round's clients.

    Clients are ordered by id; the client at position i gets base group ⌊i·G/n⌋. ``OPR2`` draws
    each client's two groups from ``public_seed`` (32 bytes, public, fresh per run) and
    ``round_index``, so every party derives the same assignment.

    Raises:
        FedP3Error: unknown policy, too few body groups for the policy, duplicate or non-int
            client ids, missing seed for OPR2.
    """
    body_groups = _check_positive_int(body_groups, "body_groups")
    _check_policy(policy, body_groups)
    ids = list(client_ids)
    if not ids:
        raise FedP3Error("a round needs at least one client")
    for client_id in ids:
        if isinstance(client_id, bool) or not isinstance(client_id, (int, np.integer)):
            raise FedP3Error(f"client ids must be ints, got {client_id!r}")
    ordered = sorted(int(client_id) for client_id in ids)
    if len(set(ordered)) != len(ordered):
        raise FedP3Error("client ids must be distinct")
    if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)) or round_index < 0:
        raise FedP3Error(f"round_index must be a non-negative int, got {round_index!r}")
    clients = len(ordered)
    if policy == "OPR2":
        if not isinstance(public_seed, (bytes, bytearray)) or len(public_seed) != 32:
            raise FedP3Error("OPR2 needs the round's public_seed: exactly 32 bytes")
        owned = _opr2_pairs(bytes(public_seed), int(round_index), clients, body_groups)
    else:
        width = _GROUPS_PER_CLIENT[policy]
        owned = [
            frozenset((base_group(i, clients, body_groups) + offset) % body_groups for offset in range(width))
            for i in range(clients)
        ]
    return RoundAssignment(policy, int(round_index), body_groups, tuple(zip(ordered, owned)))
