"""Shared test configuration: CPU-only, single-threaded torch, AiiDA's pytest fixtures."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["aiida.tools.pytest_fixtures"]


@pytest.fixture(autouse=True, scope="session")
def _torch_single_thread():
    """Keep torch on one thread so tests behave the same on any core count."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield
