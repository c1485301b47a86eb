"""Long-lived worker processes that host stateful client objects for the in-process transport.

Each worker owns a fixed shard of the clients and keeps their state (keys, SecAgg+ state machine,
local model) across the stages of a round, so only serialized protocol messages and model vectors
cross the process boundary, as they would cross a network. Calls are batched per worker and run
concurrently, which is how a simulation uses every core.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.errors import TransportError


@dataclass(frozen=True)
class ClientFailure:
    """A client-side exception, carried back as data: the coordinator counts the client as dropped."""

    client_id: int
    error_type: str
    message: str
    traceback: str


def _worker_main(connection, factory: Callable[[int], Any], client_ids: Sequence[int], threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    clients = {client_id: factory(client_id) for client_id in client_ids}
    connection.send(("ready", sorted(clients)))
    while True:
        request = connection.recv()
        if request is None:
            break
        method, arguments = request
        results: dict[int, Any] = {}
        for client_id, args in arguments.items():
            try:
                results[client_id] = getattr(clients[client_id], method)(*args)
            except Exception as error:  # noqa: BLE001 - every client failure becomes a dropout
                results[client_id] = ClientFailure(client_id, type(error).__name__, str(error), traceback.format_exc())
        connection.send(("ok", results))
    connection.close()


class WorkerPool:
    """Processes hosting `factory(client_id)` objects; `call` runs one method on many clients.

    The factory must be picklable (a module-level callable or a frozen dataclass instance).
    """

    def __init__(self, factory: Callable[[int], Any], client_ids: Sequence[int], workers: int = 2,
                 threads_per_worker: int = 1) -> None:
        if workers < 1:
            raise TransportError(f"workers must be >= 1, got {workers}")
        client_ids = list(client_ids)
        workers = min(workers, len(client_ids)) or 1
        context = mp.get_context("spawn")  # fork after torch initialised its thread pools can deadlock
        self._owner: dict[int, int] = {}
        self._connections = []
        self._processes = []
        for index in range(workers):
            shard = client_ids[index::workers]
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child, factory, shard, threads_per_worker),
                                      daemon=True, name=f"fedvault-worker-{index}")
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
            for client_id in shard:
                self._owner[client_id] = index
        for index, connection in enumerate(self._connections):
            status, _ = self._receive(index)
            if status != "ready":  # pragma: no cover - defensive
                raise TransportError(f"worker {index} failed to start")

    def call(self, method: str, arguments: Mapping[int, tuple]) -> dict[int, Any]:
        """Run `client.method(*args)` for every client in `arguments`; exceptions come back as ClientFailure."""
        batches: dict[int, dict[int, tuple]] = {}
        for client_id, args in arguments.items():
            if client_id not in self._owner:
                raise TransportError(f"no worker hosts client {client_id}")
            batches.setdefault(self._owner[client_id], {})[client_id] = args
        for index, batch in batches.items():
            self._connections[index].send((method, batch))
        results: dict[int, Any] = {}
        for index in batches:
            status, payload = self._receive(index)
            results.update(payload)
        return results

    def _receive(self, index: int):
        try:
            return self._connections[index].recv()
        except (EOFError, OSError) as error:
            raise TransportError(f"worker process {index} died: {error}") from None

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._connections.clear()
        self._processes.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
