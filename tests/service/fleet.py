"""In-process clients for driving a ``RoundManager`` without HTTP (the manager's own API).

``ScriptedClient``: a real ``SecAggClient`` masking a known integer vector, so a test can check
the committed secure sum exactly. ``RuntimeClient``: the real ``ClientRuntime`` (local training,
encoding, history records). ``drive`` runs the manager's loop with a fake clock: clients answer
what they are asked, crash at a chosen stage (stop answering and polling), and time jumps past
a deadline only when nobody alive has anything left to say.
"""

from __future__ import annotations

import numpy as np

from federation.service.rounds import ClientReport, RoundManager
from secagg.client import SecAggClient
from secagg.keys import IdentityKey
from secagg.stages import ADVERTISE_KEYS
from unlearning.secrets import generate_history_secret, history_commitment


class ScriptedClient:
    """A client whose masked input is a fixed, known vector (uint32 mod 2**bits), drawn per round."""

    def __init__(self, client_id: int, run_id: int, seed: int = 0) -> None:
        self.client_id = client_id
        self.identity = IdentityKey.generate()
        self.history_secret = generate_history_secret()
        self.commitment = history_commitment(run_id, client_id, self.history_secret)
        self._rng = np.random.default_rng(seed * 1000 + client_id)  # test data, not secrets
        self.inputs: dict[int, np.ndarray] = {}
        self._secagg: SecAggClient | None = None
        self._round: int | None = None

    def enrol(self, manager: RoundManager) -> None:
        manager.enrol(self.client_id, self.identity.public_bytes, self.commitment)

    def answer(self, manager: RoundManager, task) -> None:
        if task.stage == ADVERTISE_KEYS:
            self._secagg = SecAggClient(self.client_id, self.identity, manager.directory())
            self._round = task.round_index
            manager.report(self.client_id, task.round_index, ClientReport(num_samples=10, train_loss=0.5))
            reply = self._secagg.handle(task.request)
            config = self._secagg.config
            vector = self._rng.integers(0, 2**config.bits, size=config.vector_length, dtype=np.uint32)
            self._secagg.set_input(vector)
            self.inputs[task.round_index] = vector
        else:
            assert self._round == task.round_index
            reply = self._secagg.handle(task.request)
        manager.submit(self.client_id, task.round_index, task.stage, reply)


class RuntimeClient:
    """The real client runtime answering through the manager's API (what the HTTP client does)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.client_id = runtime.client_id
        self.records_confirmed: list[int] = []

    def enrol(self, manager: RoundManager) -> None:
        public_key, commitment = self.runtime.enrolment()
        manager.enrol(self.client_id, public_key, commitment)

    def answer(self, manager: RoundManager, task) -> None:
        if task.stage == ADVERTISE_KEYS:
            # The manager's API has no authority: these rounds test the manager, so the clients take
            # its key list as is (the signed path is tested in tests/federation/test_authority.py).
            self.runtime.trust_unsigned_directory(manager.directory())
            parameters = np.frombuffer(manager.model_parameters(task.round_index), dtype="<f4").copy()
            report = self.runtime.prepare(task.plan, parameters, record=task.record)
            if report.history_record is not None:
                manager.submit_record(self.client_id, task.round_index, report.history_record)
            manager.report(self.client_id, task.round_index, ClientReport(report.num_samples, report.train_loss))
        reply = self.runtime.handle(task.request)
        manager.submit(self.client_id, task.round_index, task.stage, reply)

    def observe(self, task) -> None:
        if task.record_stored and task.last_round is not None:
            if self.runtime.confirm_record(task.last_round.round_index):
                self.records_confirmed.append(task.last_round.round_index)


def drive(manager: RoundManager, clients, clock, *, crash: dict[int, tuple[int, str]] | None = None,
          stop_after: tuple[int, str] | None = None, max_steps: int = 2_000) -> set[int]:
    """Run rounds until the run completes, or until ``stop_after`` = (round, stage) opens.

    ``crash``: client id -> (round, stage) at which it stops for good (it never answers that
    request nor polls again). Returns the ids of the clients that crashed.
    """
    crash = dict(crash or {})
    crashed: set[int] = set()
    for _ in range(max_steps):
        version = manager.version
        manager.tick()
        if manager.completed:
            return crashed
        progressed = manager.version != version
        for client in clients:
            if client.client_id in crashed:
                continue
            task = manager.task(client.client_id)
            if hasattr(client, "observe"):
                client.observe(task)
            if stop_after is not None and (task.round_index, task.stage) == stop_after:
                return crashed
            if task.request is None:
                continue
            if crash.get(client.client_id) == (task.round_index, task.stage):
                crashed.add(client.client_id)
                continue
            client.answer(manager, task)
            progressed = True
        if not progressed:
            # Nothing changed and nobody alive has anything to say: let the open stage's deadline pass.
            clock.advance(manager.settings.train_timeout + 1)
    raise AssertionError("the run did not complete")
