"""Shared test setup: GPU tests are skipped on machines without a CUDA device; the `slurm_cluster`
fixture (tests/slurm.py) starts a one-node Slurm for the tests marked `slurm`."""
from __future__ import annotations

import pytest

from tests.slurm import slurm_cluster, slurm_session  # noqa: F401 - the fixtures of the `slurm` tests


def _has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
