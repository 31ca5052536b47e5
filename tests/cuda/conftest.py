"""CUDA tests: marked ``cuda`` and *deselected* (not skipped) unless the run selects them with ``-m cuda``.

A skipped test fails in this repo (tests/conftest.py), and a machine without a GPU cannot run these, so a plain
``pytest tests`` leaves them out of the collection. ``pytest -m cuda tests/cuda`` (what ``benchmarks/gpu.sh`` runs)
selects them; ``NEGKIT_TEST_DEVICE=cpu`` runs the same tests on the CPU (gloo instead of NCCL): the GPU script's
dry run, ``benchmarks/gpu.sh --device cpu --quick``.
"""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; deselected unless selected with -m cuda")


def pytest_collection_modifyitems(config, items):
    if "cuda" in (config.option.markexpr or ""):
        return
    chosen = [item for item in items if not str(item.path).startswith(HERE)]
    dropped = [item for item in items if str(item.path).startswith(HERE)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = chosen


@pytest.fixture(scope="session")
def device():
    """The device under test: ``cuda`` (default) or ``NEGKIT_TEST_DEVICE``."""
    import torch

    name = os.environ.get("NEGKIT_TEST_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail("-m cuda selects the CUDA tests, but torch sees no GPU (NEGKIT_TEST_DEVICE=cpu for a dry run)")
    return torch.device(name)
