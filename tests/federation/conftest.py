"""Shared fixtures of the federation tests."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    """Small float64 matrix products run fastest on one BLAS thread; two threads on a shared
    2-core machine mostly contend. Scoped to each module so other packages' tests are untouched."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
