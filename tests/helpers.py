"""What several test files share: the repository's path, the one tiny model, running a command."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch

from model.gpt import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent


def tiny_model(**overrides) -> GPT:
    """A 2-layer GPT (4 heads, 2 K/V heads, width 64, context 32, 65 tokens), seeded, in eval mode.

    Its untied LM head is drawn from N(0, 0.02^2) instead of starting at zero: with a zero head every
    logit is equal and comparisons of logits would prove nothing.
    """
    cfg = dict(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    cfg.update(overrides)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg)).eval()
    if not model.config.tie_weights:
        torch.nn.init.normal_(model.lm_head.weight, std=0.02)
    return model


def run_command(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 300,
                **kwargs) -> subprocess.CompletedProcess:
    """`python *args` as a user types it (e.g. run_command("train.py", "max_steps=2")), output captured."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)


def fingerprint(folder: Path) -> dict:
    """Every file below folder with its bytes' hash: equal fingerprints mean nothing was changed or added."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(run_dir: Path, kind: str = "train") -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["kind"] == kind]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int) -> list[str]:
    """The torchrun command for n processes on this machine, on a port no other test holds."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}"]


def train_once(tmp_path_factory, tinyshakespeare: Path, overrides: list[str]) -> Path:
    """A tiny run trained in this process with these overrides, into a folder of its own (for a module's
    fixture: train once, then give each test a copy with copy_run)."""
    import train as train_module
    from runtime.config import compose
    from tests.conftest import copy_tinyshakespeare

    root = copy_tinyshakespeare(tmp_path_factory.mktemp("data"))
    run = tmp_path_factory.mktemp("runs") / "run"
    train_module.train(compose("train", train_module.TrainConfig, [*overrides, f"data.root={root}", f"out_dir={run}"]))
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy
