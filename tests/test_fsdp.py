"""FSDP2 on 2 CPU processes (gloo): checkpoints that load anywhere, and an exact resume. (The gradient
of the whole batch: tests/test_train.py::test_two_processes_compute_the_gradient_of_one_process_on_the_whole_batch.)"""

import json
import subprocess

import pytest
import torch

from model.gpt import GPT, GPTConfig
from runtime.checkpoint import load_checkpoint
from runtime.config import compose
from tests.helpers import REPO, metrics, torchrun
from train import TrainConfig, build_optimizer

TINY = ["model=tiny", "batch_size=4", "eval_batches=2", "log_interval=1", "eval_interval=2", "progress=false",
        "compile=false"]


def run_torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*torchrun(2), str(REPO / "train.py"), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def run_fsdp(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return run_torchrun(tmp_path, *TINY, "fsdp=true", "micro_batch_size=1", *overrides)


@pytest.mark.slow
def test_fsdp_training_resumes_exactly_and_its_checkpoint_loads_anywhere(data_root, tmp_path):
    root = f"data.root={data_root}"
    straight, split = tmp_path / "straight", tmp_path / "split"
    r = run_fsdp(tmp_path, root, "max_steps=6", "model.dropout=0.1", f"out_dir={straight}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_fsdp(tmp_path, root, "max_steps=6", "model.dropout=0.1", "stop_step=3", f"out_dir={split}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_torchrun(tmp_path, f"resume={split}")  # the checkpoint's settings: fsdp=true included
    assert r.returncode == 0, r.stderr[-3000:]
    assert [e["loss"] for e in metrics(split)] == [e["loss"] for e in metrics(straight)]  # exact resume

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # one full state in the plain format: a single process loads it strictly, optimizer included
    model = GPT(GPTConfig(**a["model_config"]))
    model.load_state_dict(a["model"])
    optimizer = build_optimizer(model, compose("train", TrainConfig, []).optim, torch.device("cpu"))
    optimizer.load_state_dict(a["optimizer"])
    assert len(optimizer.state) == len(list(model.parameters()))
    # and DDP continues an FSDP run from it
    r = run_torchrun(tmp_path, f"resume={straight}", "fsdp=false", "max_steps=7")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((straight / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 7


@pytest.mark.slow
def test_fsdp_with_compile_compiles_each_block_trains_like_eager_and_saves_plain_names(data_root, tmp_path):
    """fsdp=true compile=true: each block compiled before it is sharded (torchtitan's order), on 2 gloo
    processes: the losses of eager FSDP within 1e-4, and a checkpoint with the model's own names."""
    root = f"data.root={data_root}"
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    r = run_fsdp(tmp_path, root, "max_steps=4", f"out_dir={eager}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_fsdp(tmp_path, root, "max_steps=4", "compile=true", f"out_dir={compiled}")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (compiled / "train.log").read_text()
    assert "compiled in " in log and "torch.compile failed" not in log
    a, b = [e["loss"] for e in metrics(eager)], [e["loss"] for e in metrics(compiled)]
    assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    state = load_checkpoint(compiled / "checkpoints" / "last.pt")
    assert set(state["model"]) == set(GPT(GPTConfig(**state["model_config"])).state_dict())
