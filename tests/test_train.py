"""train.py: configs, checkpoints, exact resume, accumulation, DDP, signals, wandb. CPU only."""

import dataclasses
import gc
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train as train_module
from data.tokenizers import CharTokenizer
from training import monitor, run_folder, validator
from training.resume import resumed_config
from model.gpt import GPT, GPTConfig
from runtime import checkpoint
from runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtime.config import CONFIG_DIR, ConfigError, compose
from runtime.parallel import shard, whole
from tests.helpers import REPO, fingerprint, free_port, metrics, run_command, tiny_model, torchrun
from train import TrainConfig, TrainError, build_optimizer, forward_backward, lr_at, train

TINY = ["model=tiny", "batch_size=4", "eval_batches=2", "log_interval=1", "eval_interval=4", "progress=false",
        "compile=false"]


def compose_config(overrides: list[str]) -> TrainConfig:
    return compose("train", TrainConfig, overrides)


def tiny_config(data_root: Path, *overrides: str) -> TrainConfig:
    return compose_config([*TINY, f"data.root={data_root}", *overrides])


def resume(*overrides: str) -> dict:
    """What `python train.py resume=... key=value` does, in this process."""
    return train(compose_config(list(overrides)), overrides)


def run_train(*overrides: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 300):
    return run_command(str(REPO / "train.py"), *overrides, cwd=cwd, env=env, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_every_config_composes():
    names = lambda group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))  # noqa: E731
    assert {"shakespeare_char", "shakespeare_char_cpu"} <= set(names("experiment"))
    assert {"tiny", "small"} <= set(names("model"))
    for experiment in names("experiment"):
        for model in names("model"):
            for data in names("data"):
                own = ["data.path=book.txt"] if data == "text" else []  # data=text alone asks for it
                cfg = compose_config([f"experiment={experiment}", f"model={model}", f"data={data}", *own])
                GPTConfig(**{**dataclasses.asdict(cfg.model), "vocab_size": 65})  # every model config is valid
    small = compose_config(["model=small"]).model
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size) == (6, 6, 384, 256)


def test_a_bare_run_is_the_gpu_recipe():
    cfg = compose_config([])
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.batch_size, cfg.max_steps) == (6, 384, 64, 2500)
    assert cfg.data.name == "shakespeare_char"


@pytest.mark.parametrize("override,message", [("optim.lr=abc", "Value 'abc' of type 'str' could not be converted to Float"),
                                              ("max_steps=1.5", "Value '1.5' of type 'float' could not be converted"),
                                              ("model.causal=maybe", "Value 'maybe' is not a valid bool")])
def test_a_wrong_type_fails_at_compose_time(override, message):
    with pytest.raises(ConfigError, match=f"{override}: {message}"):
        compose_config([override])


@pytest.mark.parametrize("typo,suggestion", [("optim.lrr=0.1", "optim.lr"), ("lr=0.1", "optim.lr"),
                                             ("max_step=3", "max_steps"), ("model.n_layers=2", "model.n_layer")])
def test_an_unknown_key_fails_at_compose_time_with_the_closest_key(typo, suggestion):
    with pytest.raises(ConfigError, match=f"unknown setting {typo.split('=')[0]}: did you mean {suggestion}\\?"):
        compose_config([typo])


def test_an_appended_unknown_key_is_refused_before_training(data_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown setting optim.lrr"):  # Hydra lets '+' add keys; we do not
        tiny_config(data_root, "+optim.lrr=0.1")
    r = run_train(*TINY, f"data.root={data_root}", "+optim.lrr=0.1", f"out_dir={tmp_path}/run")
    assert r.returncode == 2 and "unknown setting optim.lrr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_typo_inside_a_yaml_file_fails_at_compose_time(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "model" / "typo.yaml").write_text("n_layers: 4\n")  # n_layer
    monkeypatch.setattr("runtime.config.CONFIG_DIR", configs)
    with pytest.raises(ConfigError, match="In 'model/typo': .*Key 'n_layers' not in 'GPTConfig'"):
        compose_config(["model=typo"])


# ---------------------------------------------------------------------------------------------
# Optimisation pieces
# ---------------------------------------------------------------------------------------------


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    o = compose_config(["optim.lr=1e-3", "optim.min_lr=1e-4", "optim.warmup_steps=10"]).optim
    lrs = [lr_at(s, o, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # (s + 1) / warmup of the peak
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # strictly decreasing after warmup
    assert lrs[55] == pytest.approx((1e-3 + 1e-4) / 2)  # half-way: the midpoint of the cosine
    assert lrs[100] == pytest.approx(1e-4)


def test_weight_decay_applies_to_matrices_only():
    model = tiny_model()
    opt = build_optimizer(model, compose_config([]).optim, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_k_micro_batches_of_b_equal_one_step_at_batch_k_times_b():
    torch.manual_seed(0)
    x, y = torch.randint(0, 65, (8, 16)), torch.randint(0, 65, (8, 16))
    grads = []
    for micro in (8, 2):  # 1 x 8, then 4 x 2
        model = tiny_model(block_size=16, n_embd=32)
        batches = [(x[i : i + micro], y[i : i + micro]) for i in range(0, 8, micro)]
        loss = forward_backward(model, batches, nullcontext)
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-6, rtol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def _parallel_worker(rank: int, world: int, port: int, out: str, how: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = tiny_model(block_size=16, n_embd=32)
    model = torch.nn.parallel.DistributedDataParallel(model) if how == "ddp" else shard(model)
    x, y = torch.load(out + ".batch")
    half = slice(rank * 4, rank * 4 + 4)
    # two micro-batches of 2 per process: the first backward must not synchronise (gradient_sync)
    forward_backward(model, [(x[half][:2], y[half][:2]), (x[half][2:], y[half][2:])], nullcontext)
    grads = [whole(p.grad) for p in model.parameters()]  # FSDP: each process holds a shard; gather it
    if rank == 0:
        torch.save(grads, out)
    del model  # before the process group: what holds it must go first (see train.Run.close)
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.parametrize("how", ["ddp", "fsdp"])
def test_two_processes_compute_the_gradient_of_one_process_on_the_whole_batch(tmp_path, how):
    torch.manual_seed(1)
    x, y = torch.randint(0, 65, (8, 16)), torch.randint(0, 65, (8, 16))
    out = str(tmp_path / "grads.pt")
    torch.save((x, y), out + ".batch")
    mp.spawn(_parallel_worker, args=(2, free_port(), out, how), nprocs=2, join=True)
    single = tiny_model(block_size=16, n_embd=32)
    forward_backward(single, [(x, y)], nullcontext)
    for a, b in zip(torch.load(out), single.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Checkpoints and resuming
# ---------------------------------------------------------------------------------------------


def test_two_steps_write_a_checkpoint_that_loads_with_weights_only(data_root, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config(data_root, "max_steps=2", f"out_dir={run}"))
    assert summary["step"] == 2
    path = run / "checkpoints" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = torch.load(path, weights_only=True)
    assert state["step"] == 2 and state["data_meta"]["vocab_size"] == 65
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])  # strict: every key matches
    assert (run / "checkpoints" / "best.pt").exists() and (run / "config.yaml").exists()
    assert [e["step"] for e in metrics(run)] == [1, 2] and metrics(run, "eval")[0]["step"] == 2


CHECKPOINT_KEYS = {"format", "version", "step", "best_val_loss", "elapsed_s", "wandb_id", "evals_since_best",
                   "val_loss", "processes", "model_config", "model", "optimizer", "scaler", "config", "data_meta"}


def test_a_checkpoint_keeps_the_format_and_one_from_an_older_ropegpt_still_resumes_and_samples(data_root, tmp_path):
    """The keys every ropegpt checkpoint has held (TrainState.state_dict builds them all); a checkpoint
    from before patience and the dropout placements (no evals_since_best, no model_config.attn_dropout or
    emb_dropout) resumes with their defaults and samples."""
    from sample import SampleConfig, sample

    run = tmp_path / "run"
    train(tiny_config(data_root, "max_steps=4", "stop_step=2", f"out_dir={run}"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert set(state) == CHECKPOINT_KEYS
    older = {k: v for k, v in state.items() if k not in ("format", "version", "evals_since_best")}
    older["model_config"] = {k: v for k, v in state["model_config"].items() if k not in ("attn_dropout", "emb_dropout")}
    save_checkpoint(older, run / "checkpoints" / "last.pt")
    texts = sample(SampleConfig(ckpt=str(run / "checkpoints" / "last.pt"), prompt="ROMEO:", max_new_tokens=5,
                                seed=1), out=io.StringIO(), err=io.StringIO())
    assert texts[0].startswith("ROMEO:") and len(texts[0]) == len("ROMEO:") + 5
    assert resume(f"resume={run}")["step"] == 4


def test_resume_continues_bitwise_identically(data_root, tmp_path):
    """N steps straight == N/2 steps, then resume, then N/2 steps: the same losses and weights, bit for bit."""
    extra = ["max_steps=8", "model.dropout=0.1", "micro_batch_size=2"]  # dropout: the RNG must be restored too
    straight = tmp_path / "straight"
    train(tiny_config(data_root, *extra, f"out_dir={straight}"))

    split = tmp_path / "split"
    train(tiny_config(data_root, *extra, "stop_step=4", f"out_dir={split}"))
    assert load_checkpoint(split / "checkpoints" / "last.pt")["step"] == 4
    saved = load_checkpoint(split / "checkpoints" / "last.pt")
    resumed = resumed_config(compose_config([f"resume={split}"]), [f"resume={split}"], saved)
    assert resumed.max_steps == 8 and resumed.stop_step is None and resumed.model.dropout == 0.1  # nothing repeated
    resume(f"resume={split}")  # continues in its own folder

    assert [e["loss"] for e in metrics(split)] == [e["loss"] for e in metrics(straight)]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert (split / "config.resumed-at-step-4.yaml").exists() and (split / "config.yaml").exists()


def test_resume_applies_key_overrides_and_refuses_group_switches(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(data_root, "max_steps=2", f"out_dir={run}"))
    assert resume(f"resume={run}", "max_steps=3")["step"] == 3
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["model"]["n_embd"] == 32
    with pytest.raises(TrainError, match="'model=small' switches a config group"):
        resume(f"resume={run}", "model=small")


def test_fp16_with_a_grad_scaler_resumes_exactly_and_skips_steps_with_inf_gradients(data_root, tmp_path,
                                                                                   monkeypatch):
    """The CUDA fp16 path, run on a CPU: GradScaler("cpu"), its state in checkpoints, a skipped step."""
    monkeypatch.setattr("runtime.devices.FP16_DEVICES", ("cuda", "cpu"))  # lifted for this test only
    fp16 = ["dtype=fp16", "max_steps=4", "eval_interval=2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(data_root, *fp16, f"out_dir={straight}"))
    train(tiny_config(data_root, *fp16, "stop_step=2", f"out_dir={split}"))
    resume(f"resume={split}")
    assert [e["loss"] for e in metrics(split)] == [e["loss"] for e in metrics(straight)]
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, split))
    assert a["scaler"] == b["scaler"] and a["scaler"]["scale"] == 2.0**16  # no overflow in 4 steps: untouched

    calls = {"n": 0}
    original = train_module.forward_backward

    def overflow_at_step_3(model, micro_batches, precision, scaler=None):
        loss = original(model, micro_batches, precision, scaler)
        calls["n"] += 1
        if calls["n"] == 3:
            next(model.parameters()).grad.fill_(float("inf"))  # as an fp16 overflow in the backward pass
        return loss

    monkeypatch.setattr(train_module, "forward_backward", overflow_at_step_3)
    skipped = tmp_path / "skipped"
    summary = train(tiny_config(data_root, *fp16, f"out_dir={skipped}"))
    assert summary["step"] == 4  # the run goes on: inf gradients in fp16 are the scaler's business, not a NaN stop
    state = load_checkpoint(skipped / "checkpoints" / "last.pt")
    assert state["scaler"]["scale"] == 2.0**15  # the step was skipped and the scale halved
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_failure_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left


def test_a_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"step": 1, "w": torch.ones(1000)}, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "garbage.pt").write_bytes(os.urandom(5000))
    for name in ("truncated.pt", "garbage.pt"):
        with pytest.raises(CheckpointError, match="not a readable checkpoint .* truncated or corrupt"):
            load_checkpoint(tmp_path / name)
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a ropegpt checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = GPT.forward

    def poisoned(self, idx, targets=None, kv_caches=None):
        logits, loss = original(self, idx, targets, kv_caches)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 6:  # the sixth training step
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainError, match="nan or inf by step 6"):
        train(tiny_config(data_root, "max_steps=10", f"out_dir={run}"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 4  # written at the step-4 evaluation, before the NaN
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    log = (run / "train.log").read_text()
    assert "shakespeare_char: 1,003,854 train" in log.splitlines()[0]  # said before the folder existed
    assert log.rstrip().endswith("error: the training loss or gradient norm became nan or inf by step 6; the last "
                                 f"good checkpoint is {run / 'checkpoints' / 'last.pt'}. Lower optim.lr or raise "
                                 "optim.warmup_steps, then resume from it or start again")


def test_out_of_memory_is_one_line_naming_what_to_lower_and_the_last_checkpoint_stays(data_root, tmp_path,
                                                                                      monkeypatch):
    calls = {"n": 0}
    original = GPT.forward

    def too_big(self, idx, targets=None, kv_caches=None):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 6:  # the sixth training step: as CUDA raises it
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, idx, targets, kv_caches)

    monkeypatch.setattr(GPT, "forward", too_big)
    run = tmp_path / "run"
    with pytest.raises(TrainError) as e:
        train(tiny_config(data_root, "max_steps=10", f"out_dir={run}"))
    assert str(e.value) == (
        "out of memory on cpu at step 5 with 4 sequences of 32 tokens per forward pass (CUDA out of memory. "
        "Tried to allocate 2.00 GiB): lower micro_batch_size=2 (the same steps in more, smaller passes), or use "
        f"dtype=bf16; the last checkpoint, {run / 'checkpoints' / 'last.pt'}, is intact")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4  # the evaluation's save, intact
    assert (run / "train.log").read_text().rstrip().endswith("out of memory")


def test_a_nan_validation_loss_stops_the_run_before_saving_the_bad_weights(data_root, tmp_path, monkeypatch):
    evals = {"n": 0}
    original = GPT.forward

    def poisoned(self, idx, targets=None, kv_caches=None):
        logits, loss = original(self, idx, targets, kv_caches)
        if not self.training:
            evals["n"] += 1
            if evals["n"] > 4:  # the step-8 evaluation (2 train + 2 val batches per evaluation)
                loss = loss * float("inf")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainError, match="the validation loss became nan or inf by step 8; the last good "
                                         "checkpoint is .*last.pt"):
        train(tiny_config(data_root, "max_steps=12", f"out_dir={run}"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_bad_configuration_exits_2_with_the_reason_and_creates_no_run_folder(data_root, tmp_path):
    r = run_train(*TINY, f"data.root={data_root}", "model.n_head=5", f"out_dir={tmp_path}/run")
    assert r.returncode == 2 and "n_embd=32 must be divisible by n_head=5" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1
    r = run_train(*TINY, "data=text", f"data.path={tmp_path}/nope.txt", f"out_dir={tmp_path}/run2")
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_a_new_run_never_writes_into_a_folder_that_holds_a_run(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(data_root, "max_steps=2", f"out_dir={run}"))
    before = fingerprint(run)
    with pytest.raises(TrainError, match=f"{run} already holds a run: continue it with `python train.py resume={run}`"):
        train(tiny_config(data_root, "max_steps=2", f"out_dir={run}"))
    assert fingerprint(run) == before


def test_runs_started_in_the_same_second_get_their_own_folders(data_root, tmp_path, monkeypatch):
    
    class Frozen(run_folder.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder, "datetime", Frozen)
    for _ in range(3):
        train(tiny_config(data_root, "max_steps=1"))
    assert sorted(p.name for p in (tmp_path / "outputs" / "2026-01-02").iterdir()) == ["03-04-05", "03-04-05-1",
                                                                                       "03-04-05-2"]


@pytest.mark.slow
def test_a_command_naming_an_existing_run_folder_changes_no_byte_of_it(data_root, tmp_path):
    """Through the real command line: out_dir= and hydra.run.dir= pointing at a run, without resume=."""
    run = tmp_path / "run"
    assert run_train(*TINY, f"data.root={data_root}", "max_steps=2", f"out_dir={run}").returncode == 0
    before = fingerprint(run)
    for args in ([f"out_dir={run}"], [f"hydra.run.dir={run}"]):
        r = run_train(*TINY, f"data.root={data_root}", "max_steps=2", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert fingerprint(run) == before


def test_hydra_run_dir_is_refused_with_the_key_to_use(data_root, tmp_path):
    r = run_train(*TINY, f"data.root={data_root}", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 2 and "ropegpt sets no Hydra options (train.py's run folder is out_dir=)" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_from_a_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_train(f"resume={bad}", f"out_dir={tmp_path}/run")
    assert r.returncode == 2 and "not a readable checkpoint" in r.stderr


@pytest.mark.slow
def test_without_cuda_the_gpu_recipe_says_so_estimates_and_names_the_cpu_recipe(data_root, tmp_path):
    r = run_train("model=tiny", "max_steps=4", "eval_interval=4", "eval_batches=1", f"data.root={data_root}",
                  f"out_dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr
    assert "No CUDA GPU: training on cpu" in r.stdout
    assert "the 4 steps would take about" in r.stdout
    assert "python train.py experiment=shakespeare_char_cpu" in r.stdout


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_143(data_root, tmp_path):
    """Stopped, not finished: exit code 143 (128 + SIGTERM), so scripts and sweeps can tell."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *TINY, "max_steps=100000", "eval_interval=100000",
                             f"data.root={data_root}", f"out_dir={run}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or len(metrics(run)) < 3:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] >= 3
    assert f"SIGTERM received: saved step {state['step']}" in out and f"resume={run}" in out
    assert out.strip().splitlines()[-1].startswith(f"stopped at step {state['step']} by SIGTERM (best val loss n/a")


@pytest.mark.slow
def test_torchrun_with_two_processes_finishes_and_writes_one_run_directory(data_root, tmp_path):
    r = subprocess.run([*torchrun(2), str(REPO / "train.py"),
                        *TINY, "max_steps=4", f"data.root={data_root}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    state = load_checkpoint(runs[0] / "checkpoints" / "last.pt")
    assert state["step"] == 4 and len(state["processes"]) == 2
    assert "2 process(es); 4 sequences x 32 tokens per step = 1 micro-batch of 2 per process" in r.stdout
    assert [e["step"] for e in metrics(runs[0])] == [1, 2, 3, 4]  # one process writes the metrics


@pytest.mark.slow
def test_under_torchrun_the_others_wait_out_a_preparation_longer_than_the_collective_timeout(tinyshakespeare,
                                                                                              tmp_path):
    """The process group's timeout set to 1 s (NCCL's watchdog gives 10 min): one process prepares 11 MB of
    text in GPT-2 BPE for several seconds while the other waits, on a gloo group of its own with a long
    timeout (on the group itself it would time out: tested by hand)."""
    big = tmp_path / "big.txt"
    big.write_text(tinyshakespeare.read_text(encoding="utf-8") * 10, encoding="utf-8")
    started = time.perf_counter()
    r = subprocess.run([*torchrun(2), str(REPO / "train.py"), *TINY, "max_steps=2", "data=text", f"data.path={big}",
                        "data.tokenizer=gpt2", "data.workers=1", f"data.root={tmp_path / 'data'}", f"out_dir={tmp_path / 'run'}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "ROPEGPT_COLLECTIVE_TIMEOUT_S": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prepared " in r.stdout and time.perf_counter() - started > 5  # a preparation far past 1 s
    assert [e["step"] for e in metrics(tmp_path / "run")] == [1, 2]


@pytest.mark.slow
def test_under_torchrun_a_refusal_stops_every_process_with_one_line(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(data_root, "max_steps=1", f"out_dir={run}"))
    before = fingerprint(run)
    r = subprocess.run([*torchrun(2), str(REPO / "train.py"),
                        *TINY, f"data.root={data_root}", f"out_dir={run}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    # the first process to finish exits 2 (torchrun may stop the other before it does), and none hangs
    assert r.returncode != 0 and "exitcode  : 2" in r.stderr, r.stderr[-3000:]
    assert r.stderr.count(f"error: {run} already holds a run: continue it with `torchrun --nproc_per_node=2 "
                          f"train.py resume={run}`") == 1
    assert fingerprint(run) == before


@pytest.mark.slow
def test_wandb_offline_writes_its_run_inside_the_run_directory_and_resume_continues_it(data_root, tmp_path):
    run = tmp_path / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = run_train(*TINY, "max_steps=2", "wandb.enabled=true", f"data.root={data_root}", f"out_dir={run}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    wandb_id = load_checkpoint(run / "checkpoints" / "last.pt")["wandb_id"]
    first = list((run / "wandb").glob("offline-run-*"))
    assert len(first) == 1 and first[0].name.endswith(wandb_id)
    r = run_train(f"resume={run}", "max_steps=3", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(wandb_id) for p in runs)  # the same wandb run id


def test_wandb_without_an_api_key_is_one_line_before_anything_is_written(data_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no-netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wb"))
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY, "max_steps=1", "wandb.enabled=true",
                        f"data.root={data_root}", f"out_dir={tmp_path / 'run'}"], cwd=REPO, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "error: wandb.enabled=true, but wandb has no API key here: run `wandb login` once, or set "
        "WANDB_MODE=offline to log locally (`wandb sync` uploads it later)"]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# What the run says while it runs: ETA with evaluations, long evaluations, slowdowns, threads
# ---------------------------------------------------------------------------------------------


def fake_monitor(step: int = 0, end: int = 100, max_steps: Optional[int] = None, interval: int = 25,
                 last_eval_s=None, log=None) -> monitor.Monitor:
    """A Monitor of a run at `step` of `end`: 2 micro-batches per step, 30 batches per evaluation split."""
    cfg = TrainConfig(max_steps=max_steps or end, eval_interval=interval, eval_batches=30)
    state = SimpleNamespace(procs=None, device=torch.device("cpu"), step=step, meta=CharTokenizer("ab").meta())
    evaluations = validator.Validator(cfg, None, {}, None, state, log, None, end_step=end)
    evaluations.last_seconds = last_eval_s
    return monitor.Monitor(cfg, None, state, evaluations, log, end_step=end, accum_steps=2)


@pytest.mark.parametrize("max_steps,interval,step,end", [(5000, 250, 0, 5000), (5000, 250, 250, 5000),
                                                         (100, 30, 0, 100), (100, 30, 90, 100), (100, 30, 100, 100),
                                                         (100, 30, 10, 50), (7, 7, 3, 7), (10, 4, 0, 6)])
def test_the_eta_counts_every_evaluation_still_to_come(max_steps, interval, step, end):
    due = [s for s in range(step + 1, end + 1) if s % interval == 0 or s == max_steps]  # the loop's evaluating
    at_one_second_each = fake_monitor(step, end, max_steps, interval, last_eval_s=1.0)
    assert at_one_second_each.eta(step_seconds=0.0) == len(due)


def test_the_eta_counts_the_evaluations_measured_or_estimated():
    # 40 steps left at 0.5 s; evaluations at 75 and 100: each 12 s as measured, or before the first one
    # 2 splits x 30 batches at a third of a micro-batch's step (0.5 s / 2 micro-batches / 3) = 5 s
    assert fake_monitor(step=60, last_eval_s=12.0).eta(0.5) == pytest.approx(40 * 0.5 + 2 * 12.0)
    assert fake_monitor(step=60).eta(0.5) == pytest.approx(40 * 0.5 + 2 * 5.0)
    assert fake_monitor(step=100).eta(0.5) == 0


def test_a_run_announces_each_long_evaluation_with_its_expected_duration(data_root, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(monitor, "LONG_EVAL_S", 0.0)  # every evaluation counts as long
    caplog.set_level("INFO")
    train(tiny_config(data_root, "max_steps=8", f"out_dir={tmp_path}/run"))
    lines = [r.getMessage() for r in caplog.records]
    announced = [line for line in lines if line.startswith("evaluating at step")]
    assert [line.split(", about ")[0] for line in announced] == ["evaluating at step 4: 2 x 2 batches",
                                                                  "evaluating at step 8: 2 x 2 batches"]


def test_compiling_is_not_counted_as_training_time(data_root, tmp_path, monkeypatch):
    """The log line's tokens/s (and so MFU and the ETA) count from the loop's start, after compile_now."""
    clock = {"t": 0.0}

    def perf_counter() -> float:  # a fake clock: 1 ms a reading, and the 1000 s compile_now takes
        clock["t"] += 0.001
        return clock["t"]

    monkeypatch.setattr(monitor, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(train_module, "compile_now", lambda run: clock.update(t=clock["t"] + 1000.0))
    cfg = tiny_config(data_root, "max_steps=1", f"out_dir={tmp_path}/run")
    train(cfg)
    block_size = load_checkpoint(tmp_path / "run/checkpoints/last.pt")["model_config"]["block_size"]
    tokens = cfg.batch_size * block_size
    assert metrics(tmp_path / "run")[0]["tokens_per_s"] > tokens  # a step in under a second, not 1000 s


def test_a_collapse_in_speed_gives_one_hint_naming_threads():
    said = []
    m = fake_monitor(log=SimpleNamespace(warning=lambda msg, *a: said.append(msg % a)))
    for tok_s in (9000, 10000, 8000, 3500, 3000, 2000, 1000, 9000, 1000):  # ±20% is noise; 3x slower is not
        m.notice_slowdown(tok_s)
    assert len(said) == 1 and said[0].startswith("training slowed to 3,000 tok/s from 10,000 (3x)")
    assert "threads=N" in said[0]


def test_threads_applies_to_the_run_alone_and_a_resume_takes_its_own(data_root, tmp_path, monkeypatch):
    before, seen = torch.get_num_threads(), []
    real_step = train_module.optimizer_step
    monkeypatch.setattr(train_module, "optimizer_step", lambda *a: (seen.append(torch.get_num_threads()),
                                                                    real_step(*a))[1])
    mine = before + 1  # differs from torch's default on any machine
    train(tiny_config(data_root, "max_steps=2", f"threads={mine}", f"out_dir={tmp_path}/run"))
    assert seen == [mine, mine] and torch.get_num_threads() == before
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["config"]["threads"] == mine
    seen.clear()
    resume(f"resume={tmp_path}/run", "max_steps=3")  # threads is this command's: not the checkpoint's
    assert len(seen) == 1 and 1 <= seen[0] <= before  # chosen from the free cores, up to torch's default


def test_patience_stops_after_n_evaluations_without_improvement_and_resume_keeps_count(data_root, tmp_path, caplog,
                                                                                      monkeypatch):
    # val losses by evaluation: better, better, worse, worse, (stop with patience=2)
    vals = iter([3.0, 2.0, 2.5, 2.1, 2.2])  # one per evaluation, every 2 steps
    losses = iter(x for v in vals for x in (0.0, v))  # evaluate() gives the train loss, then the val loss
    monkeypatch.setattr(validator, "evaluate", lambda *args, **kwargs: next(losses))
    caplog.set_level("INFO")
    summary = train(tiny_config(data_root, "max_steps=40", "eval_interval=2", "patience=2", f"out_dir={tmp_path}/r"))
    assert summary["step"] == 8 and summary["best_val_loss"] == 2.0
    assert any("has not improved for 2 evaluations (patience=2): stopping early at step 8" in r.getMessage()
               for r in caplog.records)
    assert load_checkpoint(tmp_path / "r/checkpoints/best.pt")["step"] == 4
    assert load_checkpoint(tmp_path / "r/checkpoints/last.pt")["evals_since_best"] == 2
    summary = resume(f"resume={tmp_path}/r", "patience=3")  # the count goes on: step 10 is the third miss
    assert summary["best_val_loss"] == 2.0 and summary["step"] == 10
