import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_data_root() -> Path | None:
    env = os.environ.get("DISTILLSET_SHARED_DATA")
    p = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return p if p.is_dir() else None


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


@pytest.fixture(scope="session")
def shared_data():
    root = shared_data_root()
    if root is None:
        pytest.skip("../shared/data not found (set DISTILLSET_SHARED_DATA to the folder holding mnist/, fashion-mnist/)")
    return root
