"""Test setup: offline data and tokenizer files, never the network."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO

SHARED = REPO.parent / "shared"  # the offline copies CI keeps beside the clone
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

os.environ.setdefault("WANDB_MODE", "disabled")
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    """The real Tiny Shakespeare: the project's download location, else the offline copy beside the repo."""
    for path in (REPO / "data/tinyshakespeare/input.txt", SHARED / "data/tinyshakespeare/input.txt"):
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == TINYSHAKESPEARE_SHA256:
            return path
    pytest.fail("Tiny Shakespeare is needed: run `python -m data.prepare` once to download it")


@pytest.fixture
def data_root(tmp_path, tinyshakespeare) -> Path:
    """An empty data root whose download location already holds Tiny Shakespeare."""
    dest = tmp_path / "tinyshakespeare" / "input.txt"
    dest.parent.mkdir(parents=True)
    shutil.copy(tinyshakespeare, dest)
    return tmp_path
