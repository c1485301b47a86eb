"""An in-process SecAgg+ round: real clients and a real server exchanging only serialized bytes.

No shortcut: every value the server learns travels as a wire message produced by a
``SecAggClient``; the sum comes out of ``SecAggServer``'s unmasking. Used by the tests, the demo,
the benchmarks and the in-process transport. Dropouts are scripted per stage: a client listed
under a stage receives that stage's request but never answers it (nor anything after).
``consistency_check=False`` runs the pre-consistency protocol (honest-but-curious server only),
for the attack tests and the benchmark baseline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from secagg.client import SecAggClient
from secagg.config import INSTANCE_NONCE_LENGTH, RoundConfig
from secagg.errors import ConfigurationError
from secagg.graph import default_parameters
from secagg.keys import IdentityKey
from secagg.server import AggregateResult, SecAggServer
from secagg.stages import ADVERTISE_KEYS, stage_index

__all__ = [
    "LocalRound",
    "SimulationOutcome",
    "StageTiming",
    "make_config",
    "run_secure_sum",
    "simulate_round",
]


@dataclass(frozen=True)
class StageTiming:
    """Wall-clock seconds spent in one stage (single thread, all parties in this process).

    Attributes:
        server_seconds: the server's receive() calls plus its advance() closing the stage.
        client_seconds_total: all clients' handle() calls for the stage.
        client_seconds_max: the slowest client's handle() (its latency in a real deployment).
        clients: how many clients handled the stage's request.
    """

    server_seconds: float
    client_seconds_total: float
    client_seconds_max: float
    clients: int

    @property
    def client_seconds_mean(self) -> float:
        return self.client_seconds_total / self.clients if self.clients else 0.0


@dataclass(frozen=True)
class SimulationOutcome:
    """A simulated round: the result, the config used, per-stage timings and traffic.

    Attributes:
        result: the server's ``AggregateResult``.
        config: the round configuration.
        timings: ``StageTiming`` per stage name.
        upload_bytes: per client id, bytes it sent, per stage name.
        download_bytes: per client id, bytes it received, per stage name.
    """

    result: AggregateResult
    config: RoundConfig
    timings: Mapping[str, StageTiming]
    upload_bytes: Mapping[int, Mapping[str, int]] = field(repr=False)
    download_bytes: Mapping[int, Mapping[str, int]] = field(repr=False)


def _check_vectors(vectors: object) -> tuple[tuple[int, ...], int]:
    if not isinstance(vectors, Mapping) or len(vectors) < 2:
        raise ConfigurationError("vectors must map at least two client ids to input vectors")
    lengths = set()
    for client_id, vector in vectors.items():
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32 or vector.ndim != 1:
            raise ConfigurationError(f"the input of client {client_id} must be a 1-D np.uint32 array")
        lengths.add(vector.shape[0])
    if len(lengths) != 1:
        raise ConfigurationError(f"all inputs must have the same length, got {sorted(lengths)}")
    return tuple(sorted(vectors)), lengths.pop()


def _first_drop_stage(
    client_ids: tuple[int, ...], dropouts: Mapping[str, Iterable[int]]
) -> dict[int, int]:
    """Client id -> index of the first stage it does not answer."""
    drops: dict[int, int] = {}
    if not isinstance(dropouts, Mapping):
        raise ConfigurationError("dropouts must map stage names to sets of client ids")
    known = set(client_ids)
    for stage, ids in dropouts.items():
        index = stage_index(stage)
        for client_id in ids:
            if client_id not in known:
                raise ConfigurationError(f"dropout of unknown client {client_id!r} at stage {stage}")
            drops[client_id] = min(index, drops.get(client_id, index))
    return drops


class LocalRound:
    """A round whose server and clients all live in this process, stepped stage by stage.

    Only wire bytes pass between the parties. ``step`` runs a whole stage; ``collect``,
    ``deliver`` and ``advance`` expose its three parts so that tests can drop, replay, reorder or
    tamper with messages in between. Timings and traffic are recorded per stage.

    Args:
        config: the round's parameters.
        vectors: client id -> x_i (``(m,) uint32``); each client gets its input right after it
            has handled the config (a client without one cannot send a masked input).
        consistency_check: run the consistency round (default); False builds the server and
            every client without it.
        client_floor: every client's own ``minimum_survivors`` (None: the config's).
    """

    def __init__(
        self,
        config: RoundConfig,
        vectors: Mapping[int, np.ndarray] | None = None,
        *,
        consistency_check: bool = True,
        client_floor: int | None = None,
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise ConfigurationError(f"config must be a RoundConfig, got {type(config).__name__}")
        self.config = config
        self.vectors = dict(vectors or {})
        self.identities = {client_id: IdentityKey.generate() for client_id in config.client_ids}
        self.identity_keys = {client_id: key.public_bytes for client_id, key in self.identities.items()}
        self.clients = {
            client_id: SecAggClient(
                client_id,
                self.identities[client_id],
                self.identity_keys,
                minimum_survivors=client_floor,
                consistency_check=consistency_check,
            )
            for client_id in config.client_ids
        }
        self.server = SecAggServer(config, self.identity_keys, consistency_check=consistency_check)
        stages = self.server.stages
        self.upload_bytes = {client_id: dict.fromkeys(stages, 0) for client_id in config.client_ids}
        self.download_bytes = {client_id: dict.fromkeys(stages, 0) for client_id in config.client_ids}
        self.timings: dict[str, StageTiming] = {}
        self._server_seconds = 0.0
        self._client_times: list[float] = []

    def collect(self, skip: Iterable[int] = ()) -> dict[int, bytes]:
        """Send the open stage's requests; return the replies of all clients not in ``skip``."""
        skipped = frozenset(skip)
        stage = self.server.stage
        started = time.perf_counter()
        requests = self.server.broadcast()
        self._server_seconds += time.perf_counter() - started
        replies = {}
        for client_id, request in requests.items():
            self.download_bytes[client_id][stage] += len(request)
            if client_id in skipped:
                continue
            client = self.clients[client_id]
            started = time.perf_counter()
            replies[client_id] = client.handle(request)
            self._client_times.append(time.perf_counter() - started)
            if stage == ADVERTISE_KEYS and client_id in self.vectors:
                client.set_input(self.vectors[client_id])
        return replies

    def deliver(self, replies: Mapping[int, bytes]) -> None:
        """Hand each reply to the server as coming from its client id."""
        stage = self.server.stage
        for client_id, reply in replies.items():
            started = time.perf_counter()
            self.server.receive(client_id, reply)
            self._server_seconds += time.perf_counter() - started
            self.upload_bytes[client_id][stage] += len(reply)

    def advance(self) -> None:
        """Close the open stage on the server (RoundAbortedError propagates) and record its timing."""
        stage = self.server.stage
        started = time.perf_counter()
        try:
            self.server.advance()
        finally:
            self.timings[stage] = StageTiming(
                server_seconds=self._server_seconds + time.perf_counter() - started,
                client_seconds_total=sum(self._client_times),
                client_seconds_max=max(self._client_times, default=0.0),
                clients=len(self._client_times),
            )
            self._server_seconds, self._client_times = 0.0, []

    def step(self, skip: Iterable[int] = ()) -> None:
        """Run the open stage with every client answering except those in ``skip``."""
        self.deliver(self.collect(skip))
        self.advance()


def make_config(
    client_ids: Iterable[int],
    bits: int,
    vector_length: int,
    *,
    neighbours_k: int | None = None,
    threshold: int | None = None,
    round_index: int = 0,
    application_config: bytes = b"",
    minimum_survivors: int | None = None,
) -> RoundConfig:
    """A ``RoundConfig`` with a fresh random instance nonce; (k, t) default to
    ``graph.default_parameters(n)`` when both are None (giving only one is an error);
    ``minimum_survivors`` defaults to t."""
    ids = tuple(sorted(client_ids))
    if (neighbours_k is None) != (threshold is None):
        raise ConfigurationError("give both neighbours_k and threshold, or neither for the defaults")
    if neighbours_k is None:
        neighbours_k, threshold = default_parameters(len(ids))
    return RoundConfig(
        round_index=round_index,
        instance_nonce=os.urandom(INSTANCE_NONCE_LENGTH),
        client_ids=ids,
        neighbours_k=neighbours_k,
        threshold=threshold,
        bits=bits,
        vector_length=vector_length,
        application_config=application_config,
        minimum_survivors=minimum_survivors,
    )


def simulate_round(
    vectors: Mapping[int, np.ndarray],
    bits: int,
    *,
    neighbours_k: int | None = None,
    threshold: int | None = None,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    round_index: int = 0,
    application_config: bytes = b"",
    consistency_check: bool = True,
) -> SimulationOutcome:
    """Run one complete SecAgg+ round over ``vectors`` and report result, timings and traffic.

    Args:
        vectors: client id -> x_i, ``(m,) uint32`` with entries < 2**bits, same m for all.
        bits: b, the modulus is 2**b.
        neighbours_k, threshold: the graph degree and Shamir threshold; both None picks
            ``graph.default_parameters(n)``; otherwise both must be given.
        dropouts: stage name -> clients that stop answering at that stage.
        round_index, application_config: passed into the ``RoundConfig``.
        consistency_check: False runs the pre-consistency protocol (baseline for the benchmark);
            a dropout scripted at the consistency stage then counts at the unmask stage.

    Raises:
        ConfigurationError: invalid vectors, parameters or dropouts.
        RoundAbortedError: the dropouts leave fewer than t survivors (or holders).
        ProtocolError: should never happen between honest parties (a bug if it does).
    """
    client_ids, vector_length = _check_vectors(vectors)
    config = make_config(
        client_ids,
        bits,
        vector_length,
        neighbours_k=neighbours_k,
        threshold=threshold,
        round_index=round_index,
        application_config=application_config,
    )
    drop_at = _first_drop_stage(client_ids, dropouts or {})
    local = LocalRound(config, vectors, consistency_check=consistency_check)
    for stage in local.server.stages:
        index = stage_index(stage)
        local.step(skip={client_id for client_id, at in drop_at.items() if at <= index})
    return SimulationOutcome(
        result=local.server.result,
        config=config,
        timings=dict(local.timings),
        upload_bytes=local.upload_bytes,
        download_bytes=local.download_bytes,
    )


def run_secure_sum(
    vectors: Mapping[int, np.ndarray],
    bits: int,
    *,
    neighbours_k: int | None = None,
    threshold: int | None = None,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    round_index: int = 0,
    application_config: bytes = b"",
) -> AggregateResult:
    """Σ x_i mod 2**bits over the surviving clients, computed by a full SecAgg+ round.

    See ``simulate_round`` for the arguments; this returns only its ``AggregateResult``.
    """
    return simulate_round(
        vectors,
        bits,
        neighbours_k=neighbours_k,
        threshold=threshold,
        dropouts=dropouts,
        round_index=round_index,
        application_config=application_config,
    ).result
