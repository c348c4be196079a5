"""Shared fixtures, and the --device / --dtype options of the contract tests (tests/test_common.py)."""
import os

import pytest
import torch

# under pytest-xdist each worker is a process of its own: one thread each, so the workers never share a core
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device of the contract tests in tests/test_common.py (e.g. cuda)")
    parser.addoption("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the model contract tests")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The ``--device`` the contract tests run on; skips them when it is not present."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    return dev


@pytest.fixture(scope="session")
def dtype(request) -> torch.dtype:
    return DTYPES[request.config.getoption("--dtype")]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the preparation cache of test runs out of the user's cache folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILLSET_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def digits():
    from distillset import load_dataset

    return load_dataset("digits")
