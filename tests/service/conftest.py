"""Shared fixtures of the service tests: a small run, a database, a state directory, a fake clock."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits

from federation.config import RunConfig
from federation.service.state import StateDirectory
from storage.repositories import Repository

#: Digits, logistic regression (650 parameters): fast to train, and learns in a few rounds.
SMALL_RUN = dict(dataset="digits", split="iid", clients=6, rounds=3, model="logreg", learning_rate=0.5,
                 local_epochs=2, noise="none", seed=3, neighbours=5, threshold=3, history=False)


@pytest.fixture(autouse=True, scope="module")
def single_threaded_math():
    """One torch and one BLAS thread: tiny models on a shared 2-core machine contend otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


class FakeClock:
    """Monotonic seconds that only move when a test says so (deadlines without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def small_config() -> RunConfig:
    return RunConfig(**SMALL_RUN)


@pytest.fixture
def repository(tmp_path):
    with Repository.open(str(tmp_path / "fedvault.db")) as repo:
        yield repo


@pytest.fixture
def state(tmp_path) -> StateDirectory:
    return StateDirectory(tmp_path / "state")
