"""Test setup: the offline data and tokenizer files beside the clone where CI keeps them, else the project's own
downloads; wandb never reaches the network."""

import os
import shutil
from pathlib import Path

import pytest

from data.config import DataConfig, DataError
from data.download import download
from tests.helpers import REPO

SHARED = REPO.parent / "shared"  # the offline copies CI keeps beside the clone

os.environ.setdefault("WANDB_MODE", "disabled")
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")


def find_tinyshakespeare() -> Path:
    """The real Tiny Shakespeare at the project's download location, where `python -m data.prepare` puts it:
    seeded from the offline copy beside the repository if there is one (CI), else downloaded by the
    project's own code, so `python -m pytest` on a fresh clone needs no other step."""
    dest = REPO / "data" / DataConfig().download_name
    seed = SHARED / "data/tinyshakespeare/input.txt"
    if not dest.exists() and seed.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.seeding-{os.getpid()}")
        shutil.copy(seed, partial)
        os.replace(partial, dest)  # whole or not at all: a copy cut short never sits at dest
    try:
        return download(DataConfig().url, dest, DataConfig().sha256)  # checks the sha256 of what is there
    except DataError as e:
        pytest.fail(f"Tiny Shakespeare is needed by this test: {e}")


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    return find_tinyshakespeare()


def copy_tinyshakespeare(root: Path) -> Path:
    """root, a new data root whose download location already holds Tiny Shakespeare."""
    dest = root / "tinyshakespeare" / "input.txt"
    dest.parent.mkdir(parents=True)
    shutil.copy(find_tinyshakespeare(), dest)
    return root


@pytest.fixture
def data_root(tmp_path, tinyshakespeare) -> Path:
    """An empty data root whose download location already holds Tiny Shakespeare."""
    return copy_tinyshakespeare(tmp_path)
