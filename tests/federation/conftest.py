"""Shared fixtures of the federation tests."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def single_threaded_math():
    """Small float64 products and small torch models run fastest on one thread; two threads on a
    shared 2-core machine mostly contend. Scoped to each module and restored afterwards, so other
    packages' tests are untouched."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(torch_threads)
