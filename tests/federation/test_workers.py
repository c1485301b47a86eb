from dataclasses import dataclass

import pytest

from federation.workers import ClientFailure, WorkerPool


class Counter:
    def __init__(self, client_id):
        self.client_id = client_id
        self.count = 0

    def bump(self, by):
        self.count += by
        return (self.client_id, self.count)

    def fail(self):
        raise ValueError(f"client {self.client_id} refuses")


@dataclass(frozen=True)
class CounterFactory:
    def __call__(self, client_id):
        return Counter(client_id)


def test_clients_keep_state_across_calls_in_their_worker():
    with WorkerPool(CounterFactory(), range(5), workers=2) as pool:
        pool.call("bump", {c: (1,) for c in range(5)})
        results = pool.call("bump", {c: (c,) for c in range(5)})
    assert results == {c: (c, 1 + c) for c in range(5)}


def test_a_client_exception_comes_back_as_a_failure_not_a_crash():
    with WorkerPool(CounterFactory(), range(3), workers=2) as pool:
        results = pool.call("fail", {1: ()})
        assert isinstance(results[1], ClientFailure)
        assert results[1].error_type == "ValueError" and "refuses" in results[1].message
        assert pool.call("bump", {1: (2,)}) == {1: (1, 2)}  # the worker lives on


def test_unknown_client_is_a_transport_error():
    from federation.errors import TransportError

    with WorkerPool(CounterFactory(), range(2), workers=1) as pool:
        with pytest.raises(TransportError, match="no worker hosts client 7"):
            pool.call("bump", {7: (1,)})
