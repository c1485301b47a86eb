"""LoCoDL as a trainer of `fedvault run` (``RunConfig.trainer = "locodl"``).

:mod:`federation.locodl_clients` holds the protocol's two sides; this module fits them into the
run's round: the server sends (y, v) with the round plan, every client runs the round's K local
iterations (K from the public round seed, the same for everyone) and uploads d_i = x̂_i − ŷ
through the ordinary pipeline (clip, rotate, dithered lattice, integer noise, SecAgg+); the server
decodes Σ d_i, forms d̄ = Σ d_i / (2n) over the n clients of the cohort and applies it, and every
client applies d̄ to its own (x_i, u_i).

Two choices keep LoCoDL's invariant (1/n)Σ u_i + v = 0 through everything a real run does:

- **A client whose d_i is not in the sum sent 0.** A dropout, a client that refused for its
  budget, or a whole aborted round (every d_i = 0, d̄ = 0) is the compressor that outputs zero:
  the increments (d̄ − d_i) of the clients and d̄ of the server still cancel exactly, so the
  fixed point stays the exact optimum. The price is a slower step, not a biased limit.
- **"Sent" is what the sum holds:** each client decodes its own coordinates (noise included)
  with the round's codec, so Σ_i sent_i is the server's decoded sum up to float rounding.

Each client keeps (x_i, u_i) and its pending round in a private 0600 file next to its keys, and
the server checkpoints (y, v) raw with every round, so a killed run resumes; after a crash between
a round's commit and its d̄ reaching the clients, the coordinator sends the stored d̄ again.

Without noise and with a fine lattice the run approaches the exact optimum; DP noise and lattice
quantization have a fixed variance (not relative to ‖d_i‖), so with them it settles in a
neighbourhood whose size they set. The objective is the multinomial logistic regression of
``federation.models.LogisticRegression`` with L2 term λ (``locodl_l2``), half in the f_i and
half in g. Its smoothness L is a public constant: ``locodl_smoothness`` if given, else Böhning's
bound on the run's data (a simulation computes it from the split; a deployment states a bound).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from federation.config import RunConfig
from federation.convex import SoftmaxRegression
from federation.datasets import ClientData
from federation.evaluation import federated_data
from federation.keystore import write_private_file
from federation.learning_errors import AlgorithmError
from federation.locodl import locodl_parameters
from federation.locodl_clients import LoCoDLClient, LoCoDLServer, LoCoDLSetup
from federation.trainers import TrainResult
from storage.entities import AggregateWrite, CheckpointWrite

SHARED_FRACTION = 0.5  # s: the share of λ in g (the server's term)
MEAN_SENT = "locodl_mean_sent"  # aggregate name of d̄ in storage
_Y, _V = "locodl_y", "locodl_v"  # checkpoint tensor names of the server's pair


@functools.lru_cache(maxsize=8)
def _setup(dataset: str, clients: int, split: str, alpha: float, seed: int, l2: float,
           smoothness: float | None) -> LoCoDLSetup:
    data = federated_data(dataset, clients, split, alpha, seed)
    objective = SoftmaxRegression(data.clients, data.num_classes, l2, SHARED_FRACTION)
    parameters = locodl_parameters(smoothness or objective.smoothness, objective.strong_convexity, 0.0, 0.0)
    return LoCoDLSetup(data.num_classes, objective.num_features, l2, parameters, SHARED_FRACTION)


def locodl_setup(config: RunConfig) -> LoCoDLSetup:
    """The run's public LoCoDL configuration (γ = 1/L, χ = ρ = 1, p = √(μ/L): ω = 0, the lattice
    error being additive rather than relative), identical in every process."""
    return _setup(config.dataset, config.clients, config.split, config.dirichlet_alpha, config.seed,
                  config.locodl_l2, config.locodl_smoothness)


class LoCoDLLearner:
    """Client i's LoCoDL state across rounds, kept in ``state_file`` (0600) after every change.

    ``local_round`` starts from the server's (y, v) (the first round also sets x_i = y); the
    runtime then reports the decoded vector it uploaded (``uploaded``) and finally applies the
    round's d̄ (``finish``), which is idempotent per round.
    """

    keeps_state = True

    def __init__(self, client_id: int, setup: LoCoDLSetup, data: ClientData, state_file: Path) -> None:
        self.client_id = client_id
        self.data = data
        self._client = LoCoDLClient(data, setup)
        self._file = Path(state_file)
        self._finished: int | None = None  # last round whose d̄ was applied
        self._pending: int | None = None  # round between local_round and finish
        self._sent: np.ndarray | None = None
        self._start_x: np.ndarray | None = None  # x_i before the pending round's local iterations
        if self._file.exists():
            self._load()

    @property
    def num_samples(self) -> int:
        return self.data.num_samples

    def privacy_events(self) -> tuple:
        return ()  # full-batch gradient steps: no sample-level mechanism

    def local_round(self, round_index: int, round_seed: bytes, y: np.ndarray, v: np.ndarray) -> TrainResult:
        """The round's K local iterations from the server's pair; ``update`` = x̂_i − ŷ."""
        if self._pending is not None:
            # A round that never committed (the server stopped before it): start again from (x_i, u_i).
            self._client.load_state({"x": self._start_x, "u": self._client.u})
        elif self._finished is None:
            self._client.x = np.asarray(y, dtype=np.float64).copy()  # the first round starts at the global model
        self._start_x = self._client.x.copy()
        self._client.sync(y, v)
        result = self._client.local_round(round_seed)
        self._pending, self._sent = round_index, None
        self._save()
        return result

    def uploaded(self, round_index: int, sent: np.ndarray) -> None:
        """The decoded vector this client's masked input holds (its d_i as the sum sees it)."""
        if self._pending != round_index:
            raise AlgorithmError(f"client {self.client_id} has no round {round_index} in progress")
        self._sent = np.asarray(sent, dtype=np.float64).copy()
        self._save()

    def finish(self, round_index: int, mean_sent: np.ndarray, included: bool) -> bool:
        """Apply d̄ of ``round_index``; ``included``: this client's d_i is in the sum (else it sent
        0). False when there is nothing to apply (already applied, or the round never ran here)."""
        if self._pending != round_index:
            return False
        if included and self._sent is None:
            raise AlgorithmError(f"the server counts client {self.client_id} in round {round_index}'s sum, "
                                 "but it uploaded nothing")
        sent = self._sent if included else np.zeros_like(self._client.x)
        self._client.finish_round(sent, mean_sent)
        self._finished, self._pending, self._sent, self._start_x = round_index, None, None, None
        self._save()
        return True

    def state(self) -> dict[str, np.ndarray]:
        return self._client.state()

    def _save(self) -> None:
        buffer = io.BytesIO()
        extra = {"sent": self._sent} if self._sent is not None else {}
        if self._pending is not None:
            extra["x_start"] = self._start_x
        np.savez(buffer, finished=np.int64(-1 if self._finished is None else self._finished),
                 pending=np.int64(-1 if self._pending is None else self._pending), **self._client.state(), **extra)
        write_private_file(self._file, buffer.getvalue())

    def _load(self) -> None:
        try:
            with np.load(self._file, allow_pickle=False) as stored:
                values = {name: stored[name] for name in stored.files}
        except (OSError, ValueError) as error:
            raise AlgorithmError(f"LoCoDL state file {self._file} is unreadable: {error}") from None
        finished, pending = int(values.pop("finished")), int(values.pop("pending"))
        self._sent = values.pop("sent", None)
        self._start_x = values.pop("x_start", None)
        self._client.load_state(values)
        self._finished = None if finished < 0 else finished
        self._pending = None if pending < 0 else pending


def state_file(key_directory: Path, client_id: int, run_tag: str) -> Path:
    return Path(key_directory) / f"client-{client_id}.run-{run_tag}.locodl.npz"


class LoCoDLCoordination:
    """The server's side in a run: (y, v), advanced through every round and checkpointed raw."""

    def __init__(self, config: RunConfig, start: np.ndarray) -> None:
        self.setup = locodl_setup(config)
        self.server = LoCoDLServer(self.setup, start=np.asarray(start, dtype=np.float64))

    @property
    def model(self) -> np.ndarray:
        return self.server.model

    def restore(self, tensors: dict[str, np.ndarray]) -> None:
        if _Y not in tensors or _V not in tensors:
            raise AlgorithmError("the run's checkpoint holds no LoCoDL pair (y, v)")
        self.server.restore(tensors[_Y], tensors[_V])

    def begin(self, round_seed: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(y, v) to send with the plan; the server then runs its own K iterations."""
        pair = self.server.pair
        self.server.local_round(round_seed)
        return pair

    def finish(self, total: np.ndarray | None, clients: int) -> np.ndarray:
        """Apply Σ d_i of the survivors (None: the round aborted, every d_i = 0); d̄ for all
        ``clients`` of the cohort."""
        if total is None:
            total = np.zeros(self.setup.dimension)
        return self.server.finish_round(total, clients)

    def checkpoint(self) -> CheckpointWrite:
        y, v = self.server.pair
        return CheckpointWrite({"flat": y.astype(np.float32), _Y: y, _V: v}, codec="raw")

    @staticmethod
    def mean_sent_aggregate(mean_sent: np.ndarray) -> AggregateWrite:
        return AggregateWrite(np.asarray(mean_sent, dtype=np.float64), kind="mean_update", name=MEAN_SENT)
