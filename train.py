"""Train a GPT on a prepared dataset.

    python train.py                                       # the GPU recipe (nanoGPT's baby GPT)
    python train.py experiment=shakespeare_char_cpu       # the CPU recipe, about 80 s
    python train.py resume=outputs/2026-11-22/06-00-00    # continue a run exactly
    python train.py init_from=models/SmolLM2-135M data=text data.path=my.txt data.tokenizer=hf:models/SmolLM2-135M
                                                          # fine-tune a Hugging Face Llama model on your text
    torchrun --nproc_per_node=2 train.py ...              # data-parallel on 2 processes

Read it top to bottom: the settings (every knob with its default, which is the GPU recipe); the
pieces of one training step; `setup`, which builds a run's state and checks everything before it
writes anything; and `train` with its `loop`, whose first lines are the training step and whose other
lines are named operations a reader can skip. Under torchrun every process runs the same code; only
rank 0 writes files, logs and talks to wandb.
"""

import gc
import json
import math
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from data.config import DataConfig, DataError, dataset_dir
from data.loader import BatchSampler, fixed_batches
from data.prepare import has_source, is_prepared, prepare
from data.shards import load_meta
from data.tokenizers import HFTokenizer
from model.gpt import GPT, GPTConfig
from model.llama import LlamaFormatError, gpt_config, is_llama_folder, load_llama_state_dict, read_config, read_weights
from runtime.checkpoint import find_checkpoint, link_checkpoint, load_checkpoint, run_dir_of, save_checkpoint
from runtime.config import groups, parse_overrides, require, run_command, to_schema
from runtime.devices import (
    DEVICE,
    DTYPE_NAMES,
    autocast,
    fused_adamw_devices,
    peak_flops,
    resolve_dtype,
    set_deterministic,
)
from runtime.errors import UserError
from runtime.optimizers import Optimizers
from runtime.parallel import (
    gradient_sync,
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
    shard,
    whole,
)
from runtime.plots import plot_losses, read_metrics
from runtime.processes import Processes, StopSignal, join_processes, torchrun_command
from runtime.runlog import NullRunLog, RunLog, duration

# ------------------------------------------------------------------------------------------------
# Settings: every knob, with its default. Groups (model=, data=, experiment=) come from configs/.
# ------------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw; or muon: Muon for the blocks' matrices, AdamW (at lr) for the rest
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    min_lr: float = 1e-4  # the cosine decay ends here at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only, not on norm scales
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    muon_lr: float = 0.02  # with name=muon: the matrices' peak learning rate (the schedule scales both)
    muon_momentum: float = 0.95

    def __post_init__(self):
        require([(self.name in ("adamw", "muon"), f"name={self.name!r} must be adamw or muon"),
                 (self.muon_lr >= 0, f"muon_lr={self.muon_lr} must be >= 0"),
                 (0 <= self.muon_momentum < 1, f"muon_momentum={self.muon_momentum} must be in [0, 1)"),
                 (self.lr >= 0, f"lr={self.lr} must be >= 0"),
                  (self.lr < 0 or 0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must be in [0, lr={self.lr}]"),
                  (self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0"),
                  (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
                  (0 <= self.beta1 < 1, f"beta1={self.beta1} must be in [0, 1)"),
                  (0 <= self.beta2 < 1, f"beta2={self.beta2} must be in [0, 1)"),
                  (self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0 (0 disables clipping)")])


@dataclass
class WandbConfig:
    enabled: bool = False  # wandb.enabled=true turns it on; WANDB_MODE=offline keeps it local
    project: str = "ropegpt"
    name: Optional[str] = None  # the run's name; None: the run folder's name


@dataclass
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)  # configs/model/; vocab_size comes from the data
    data: DataConfig = field(default_factory=DataConfig)  # configs/data/
    optim: OptimConfig = field(default_factory=OptimConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    max_steps: int = 2500  # optimizer steps; the learning-rate schedule ends here
    stop_step: Optional[int] = None  # stop (with a checkpoint) at this step, to continue later with resume=
    batch_size: int = 64  # sequences per optimizer step, across all processes and micro-batches
    micro_batch_size: Optional[int] = None  # sequences per forward pass; None: batch_size / processes
    eval_interval: int = 250  # evaluate, and save the checkpoints, every this many steps (and at the end)
    eval_batches: int = 200  # fixed batches per split for each evaluation
    patience: Optional[int] = None  # stop early after this many evaluations without a better val loss; None: never
    log_interval: int = 10  # a log line (and a metrics.jsonl entry) every this many steps
    device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu
    dtype: str = "auto"  # auto (bf16 on CUDA where supported, else fp16; fp32 elsewhere), bf16, fp16, fp32
    compile: bool = True  # torch.compile the model (any device; eager with a warning if compiling fails)
    fsdp: bool = False  # under torchrun: shard parameters, gradients, optimizer state (FSDP2) instead of DDP
    peak_flops: Optional[float] = None  # FLOP/s per device that MFU is measured against; None: known GPUs
    deterministic: bool = False  # deterministic kernels: the same seed gives the same bits, compiled too (slower)
    threads: Optional[int] = None  # CPU threads of each process (torch.set_num_threads); None: torch's default
    seed: int = 1337
    out_dir: Optional[str] = None  # the run folder; None: outputs/DATE/TIME (with resume=: the run's own)
    resume: Optional[str] = None  # a run folder or a checkpoint file to continue from
    init_from: Optional[str] = None  # a Hugging Face Llama folder to fine-tune; data.tokenizer=hf:FOLDER
    suggest_cpu_recipe: bool = True  # on a machine without CUDA, point to the CPU recipe
    progress: bool = True  # a progress bar when the output is a terminal
    plot: bool = True  # loss.png in the run folder (train and val loss), redrawn at each evaluation

    def __post_init__(self):
        at_least_1 = ["max_steps", "batch_size", "eval_interval", "eval_batches", "log_interval"]
        require([(getattr(self, k) >= 1, f"{k}={getattr(self, k)} must be >= 1") for k in at_least_1] +
                [(self.stop_step is None or self.stop_step >= 1, f"stop_step={self.stop_step} must be >= 1"),
                 (self.patience is None or self.patience >= 1, f"patience={self.patience} must be >= 1 (or null)"),
                 (self.micro_batch_size is None or 1 <= self.micro_batch_size <= self.batch_size,
                  f"micro_batch_size={self.micro_batch_size} must be in [1, batch_size={self.batch_size}]"),
                 (self.peak_flops is None or self.peak_flops > 0, f"peak_flops={self.peak_flops} must be > 0"),
                 (self.threads is None or self.threads >= 1, f"threads={self.threads} must be >= 1"),
                 (0 <= self.seed < 2**63, f"seed={self.seed} must be in [0, 2^63)"),
                 (DEVICE.fullmatch(self.device) is not None,
                  f"device={self.device!r} must be auto, cpu, cuda, cuda:N or mps"),
                 (self.dtype in DTYPE_NAMES, f"dtype={self.dtype!r} must be one of {', '.join(DTYPE_NAMES)}"),
                 (not (self.fsdp and self.optim.name == "muon"), "optim.name=muon with fsdp=true: Muon "
                  "orthogonalises whole matrices and FSDP shards them; use DDP (fsdp=false) or optim.name=adamw")])


# data.* keys a resume may change: where the prepared data lives, and how it is prepared; not which data
RESUMABLE_DATA_KEYS = ("data.root", "data.workers")

# Settings about this command rather than the run: a resumed run never takes them from its checkpoint.
PER_COMMAND = ("resume", "stop_step", "out_dir", "threads")


class TrainError(UserError):
    """Bad configuration or a failed run. The message says what to do; train.py exits with code 2."""


# ------------------------------------------------------------------------------------------------
# One training step: learning rate, forward and backward, optimizer step; and evaluation
# ------------------------------------------------------------------------------------------------


def lr_at(step: int, o: OptimConfig, max_steps: int) -> float:
    """Linear warmup over warmup_steps, then cosine decay from lr to min_lr at max_steps."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, max_steps - o.warmup_steps))
    return o.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.lr - o.min_lr)


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device):
    """AdamW with weight decay on the matrices (embedding included) and none on the norm scales.

    With name=muon, the blocks' matrices (W_Q, W_K, W_V, W_O and the MLP's) go to Muon instead: momentum,
    then each update matrix orthogonalised (Newton-Schulz: its singular values pushed towards 1), so
    every direction of a matrix learns at the same rate (Jordan et al. 2024, as in modded-nanogpt and
    nanochat). The embedding, the LM head and the norm scales stay with AdamW. Each param group's
    lr_ratio is its peak learning rate over optim.lr: the loop's schedule scales every group alike.
    """
    to_muon = {n: o.name == "muon" and n.startswith("blocks.") and p.dim() == 2 for n, p in model.named_parameters()}
    hidden = [p for n, p in model.named_parameters() if to_muon[n]]  # a tied weight appears once
    rest = [p for n, p in model.named_parameters() if not to_muon[n]]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), fused=device.type in fused_adamw_devices())
    if not hidden:
        return adamw
    muon = torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum)
    muon.param_groups[0]["lr_ratio"] = o.muon_lr / o.lr if o.lr > 0 else 0.0
    return Optimizers(adamw, muon)


def forward_backward(model: torch.nn.Module, micro_batches: list, precision: Callable,
                     scaler: Optional[torch.amp.GradScaler] = None) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over the micro-batches; return that loss, detached.

    Each micro-batch's loss is divided by their number, so k micro-batches of b sequences give the
    gradient of one batch of k*b. Under DDP or FSDP the gradients are averaged over the processes only
    in the last backward pass (`gradient_sync`).
    """
    n, total = len(micro_batches), 0.0
    for i, (x, y) in enumerate(micro_batches):
        with gradient_sync(model, sync=i == n - 1):
            with precision():  # a fresh autocast context (or nullcontext) per micro-batch
                _, loss = model(x, y)
            loss = loss / n
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total = total + loss.detach()
    return total


def optimizer_step(model: GPT, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                   grad_clip: float) -> Optional[torch.Tensor]:
    """Clip the gradient's global norm, step, zero the gradients; return the norm (None: no clipping).

    With fp16 the scaler first unscales the gradients, and skips the step if any is inf or nan.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = whole(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)) if grad_clip > 0 else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@torch.no_grad()
def evaluate(model: GPT, batches: list, precision: Callable, device: torch.device,
             on_batch: Callable[[int], None] = lambda done: None) -> float:
    """Mean loss over fixed batches, with dropout off. on_batch(n) is called after each batch."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in batches:
        with precision():
            losses.append(model(x.to(device), y.to(device))[1].float())
        on_batch(len(losses))
    model.train(was_training)
    return torch.stack(losses).mean().item()


# ------------------------------------------------------------------------------------------------
# A run's state, built by setup
# ------------------------------------------------------------------------------------------------


@dataclass
class LoopState:
    """What the loop carries from step to step. Checkpoints save it; resume restores it."""

    step: int = 0
    best_val_loss: float = float("inf")
    elapsed_s: float = 0.0  # training seconds of the run before this command started
    wandb_id: Optional[str] = None
    evals_since_best: int = 0  # evaluations since the val loss last improved (for patience)


@dataclass
class Run:
    """Everything the loop touches, built once by `setup`."""

    cfg: TrainConfig
    procs: Processes
    device: torch.device
    dtype: torch.dtype
    raw_model: GPT  # the model itself: what checkpoints hold
    model: torch.nn.Module  # what the loop calls: raw_model in DDP (or sharded in place by FSDP), compiled
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]  # fp16 only
    sampler: BatchSampler
    eval_sets: dict  # {"train": [...], "val": [...]}: fixed batches
    meta: dict  # the dataset's meta.json
    accum_steps: int  # micro-batches per optimizer step in each process
    end_step: int  # max_steps, or stop_step when it comes first
    out_dir: Optional[Path]  # rank 0: the run folder
    log: RunLog  # a NullRunLog off rank 0
    state: LoopState
    nonfinite: torch.Tensor  # a bool on the device: has any loss or gradient norm been nan or inf?
    started: float  # time.perf_counter() when this command started
    was_deterministic: bool  # torch's settings before this run: put back by close()
    was_threads: int
    last_eval_s: Optional[float] = None  # how long the last evaluation took

    def precision(self):
        return autocast(self.device, self.dtype)

    def micro_batches(self) -> list:
        return [self.sampler.next_batch() for _ in range(self.accum_steps)]

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def close(self, failure: Optional[str] = None) -> None:
        """Close the log; then drop everything that holds the process group (DDP's reducer, FSDP's
        modules) before the group itself is destroyed. In the other order the group's destructor runs
        later, holding the GIL, and waits for its own worker thread, which waits for the GIL: a hang."""
        self.log.close(failure)
        set_deterministic(self.was_deterministic)
        torch.set_num_threads(self.was_threads)
        self.model = self.raw_model = self.optimizer = None
        gc.collect()
        self.procs.close()


def resumed_config(cfg: TrainConfig, overrides: Sequence[str], saved: dict) -> TrainConfig:
    """With resume=..., the checkpoint's config, with this command line's key=value overrides on top.

    So `resume=RUN` alone continues the run as it was configured, and `resume=RUN max_steps=8000`
    extends it. Switching a config group (model=, data=, experiment=) would change what is trained,
    so it is refused. The overrides are read with Hydra's own parser; their values come from cfg,
    where Hydra has already typed them.
    """
    given = OmegaConf.structured(cfg)
    resumed = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
    for override in parse_overrides(overrides):
        key = override.key_or_group
        if key in groups("train"):
            raise TrainError(f"resume continues with the checkpoint's config; '{override.input_line}' switches a "
                             "config group. Override single keys instead (e.g. max_steps=8000)")
        if key.startswith("data.") and key not in RESUMABLE_DATA_KEYS:
            raise TrainError(f"resume continues on the data the run trained on; '{override.input_line}' would change "
                             "it. Train on other data in a new run (init_from= takes a Hugging Face folder's weights)")
        if not override.is_delete():
            OmegaConf.update(resumed, key, OmegaConf.select(given, key), merge=False)
    for key in PER_COMMAND:
        resumed[key] = given[key]
    return to_schema(resumed, TrainConfig)


def new_out_dir(cfg: TrainConfig, checkpoint: Optional[Path]) -> Path:
    """The run folder: out_dir= as given; else the folder of the run being resumed; else outputs/DATE/TIME.

    A folder that holds another run is never written by a new run: naming one is refused (with the
    resume= line), and a timestamp that is taken already gets a suffix. A checkpoint file outside a
    run folder (resume=some/file.pt) starts a new folder.
    """
    resumed_from = run_dir_of(checkpoint) if checkpoint else None
    if cfg.out_dir is None:
        if resumed_from is not None:
            return resumed_from
        stamp = datetime.now()
        out, n = Path("outputs") / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S"), 1
        while out.exists():
            out, n = out.with_name(f"{stamp.strftime('%H-%M-%S')}-{n}"), n + 1
        return out
    out = Path(cfg.out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"out_dir={out} is a file: give a folder")
    holds_run = (out / "metrics.jsonl").exists() or (out / "checkpoints").is_dir()
    if holds_run and (resumed_from is None or out.resolve() != resumed_from.resolve()):
        raise TrainError(f"{out} already holds a run: continue it with `{launcher()} train.py resume={out}`, or "
                         "choose another out_dir")
    return out


def prepare_data(cfg: DataConfig, procs: Processes, trained_on: Optional[dict] = None) -> tuple[Path, dict]:
    """The first process on each machine prepares the dataset (once); the others wait for its verdict.
    A Hub corpus streams for hours, longer than the others may wait: it is prepared beforehand.

    trained_on: a resumed run's data (its meta.json). The run continues on exactly those tokens: found
    under its data.name, or prepared again only where that folder is gone, and refused if they differ.
    """
    if procs.world_size > 1 and cfg.hf_dataset and not is_prepared(cfg):
        raise DataError(f"{cfg.hf_dataset} is not prepared yet, and preparing it takes hours, longer than the other "
                        "processes may wait: run `python -m data.prepare` with the same data settings first "
                        "(e.g. python -m data.prepare data=fineweb_edu)")
    data_dir = dataset_dir(cfg)
    if trained_on is None or not (data_dir / "meta.json").exists():
        procs.decide(lambda: prepare(cfg), on_each_machine=True)
    meta = load_meta(data_dir, cfg.tokenizer if has_source(cfg) else None)  # without a source: as prepared
    if trained_on is not None and "shards" in trained_on and same_tokens(trained_on) != same_tokens(meta):
        raise TrainError(f"{data_dir} no longer holds the tokens this run trained on: it was prepared again since "
                         f"(from {meta.get('source')}, or with other data settings). Prepare the run's corpus under "
                         "its own data.name for new runs; this run cannot continue on other data")
    return data_dir, meta


def same_tokens(meta: dict) -> tuple:
    """What identifies a prepared dataset's tokens: each shard's size and sha256, and the tokenizer
    (a re-preparation that gives the same tokens, e.g. after `touch`, keeps it)."""
    return tuple(json.dumps(meta.get(k), sort_keys=True) for k in ("shards", "tokenizer", "chars", "tokenizer_json"))


def batch_geometry(cfg: TrainConfig, procs: Processes) -> tuple[int, int]:
    """(sequences per forward pass, micro-batches per step) in each process. The tokens per optimizer
    step are batch_size * block_size whatever the number of processes."""
    if cfg.batch_size % procs.world_size:
        raise TrainError(f"batch_size={cfg.batch_size} must be divisible by the {procs.world_size} processes")
    per_process = cfg.batch_size // procs.world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise TrainError(f"micro_batch_size={micro} must divide batch_size / processes = {per_process}")
    return micro, per_process // micro


# model.* keys that apply with init_from; the folder's config.json sets the others
FINE_TUNING_KEYS = ("block_size", "dropout", "attn_dropout", "emb_dropout", "attn_impl")


def imported_model(cfg: TrainConfig, overrides: Sequence[str]) -> GPTConfig:
    """With init_from=FOLDER: the folder's architecture, checked before any data is prepared.

    Of the model settings only model.block_size (a shorter training context; by default the folder's),
    model.dropout (by default 0, as fine-tuning usually is) and model.attn_impl apply, when given on the
    command line; any other model setting there is refused rather than silently ignored.
    """
    folder = Path(cfg.init_from).expanduser()
    if not is_llama_folder(folder):
        raise TrainError(f"init_from={cfg.init_from}: not a Hugging Face model folder (no config.json there); "
                         "to continue a run of train.py, use resume=")
    if not cfg.data.tokenizer.startswith("hf:"):
        raise TrainError(f"init_from={cfg.init_from} reads tokens of its own tokenizer: prepare your text with it, "
                         f"e.g. data=text data.path=FILE data.tokenizer=hf:{cfg.init_from}")
    given = {o.key_or_group for o in parse_overrides(overrides)}
    ignored = sorted(k for k in given if k.split(".")[0] == "model" and k.removeprefix("model.") not in FINE_TUNING_KEYS)
    if ignored:
        raise TrainError(f"init_from={cfg.init_from} takes the model's shape from its config.json: drop "
                         f"{', '.join(ignored)} (model.{', model.'.join(FINE_TUNING_KEYS)} apply)")
    chosen = {"dropout": 0.0, **{k: getattr(cfg.model, k) for k in FINE_TUNING_KEYS if f"model.{k}" in given}}
    try:
        return gpt_config(read_config(folder), **chosen)
    except LlamaFormatError as e:
        raise TrainError(f"init_from={cfg.init_from}: {e}") from None


def check_tokenizer(cfg: TrainConfig, meta: dict) -> None:
    """The prepared data's tokens must be the init_from folder's."""
    theirs = HFTokenizer.from_folder(cfg.init_from)
    if meta.get("tokenizer") != "hf" or json.loads(meta["tokenizer_json"]) != json.loads(theirs.tokenizer_json):
        raise TrainError(f"init_from={cfg.init_from} reads tokens of its own tokenizer, but the data {cfg.data.name} "
                         f"was prepared with another ({meta.get('tokenizer')}): prepare it with the folder's, "
                         f"e.g. data=text data.path=FILE data.tokenizer=hf:{cfg.init_from} data.name=NEW_NAME")


def build_model(cfg: TrainConfig, meta: dict, device: torch.device, weights_from: Optional[str] = None) -> GPT:
    """The model: its vocabulary from the data (an imported one's may be larger), the same initial weights
    in every process; weights_from: a Hugging Face folder's weights instead."""
    vocab = meta["vocab_size"]
    if cfg.init_from and cfg.model.vocab_size < vocab:
        raise TrainError(f"init_from={cfg.init_from}: its vocabulary of {cfg.model.vocab_size} is smaller than the "
                         f"tokenizer's {vocab}")
    if cfg.init_from:
        vocab = cfg.model.vocab_size
    elif cfg.model.vocab_size not in (None, vocab):
        raise TrainError(f"model.vocab_size={cfg.model.vocab_size} disagrees with the data's vocabulary of "
                         f"{vocab}: leave it unset, it comes from the data")
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(**{**asdict(cfg.model), "vocab_size": vocab}))
    if weights_from:
        try:
            load_llama_state_dict(model, read_weights(Path(weights_from).expanduser()))
        except LlamaFormatError as e:
            raise TrainError(f"init_from={cfg.init_from}: {e}") from None
    return model.to(device)


def check_checkpoint(checkpoint: dict, model: GPT, procs: Processes) -> None:
    if asdict(GPTConfig(**checkpoint["model_config"])) != asdict(model.config):  # keys added since: defaults
        raise TrainError(f"the checkpoint's model {checkpoint['model_config']} differs from the config's "
                         f"{asdict(model.config)}")
    if len(checkpoint["processes"]) != procs.world_size:
        raise TrainError(f"the checkpoint was written by {len(checkpoint['processes'])} processes; resume with as "
                         f"many (it has their data and random states), not {procs.world_size}")


def restore(checkpoint: dict, model: GPT, optimizer, scaler, sampler: BatchSampler, procs: Processes,
            device: torch.device) -> LoopState:
    """Weights, optimizer, scaler, and this process's data and random states, from a checkpoint."""
    load_model_state(model, checkpoint["model"])
    try:
        load_optimizer_state(model, optimizer, checkpoint["optimizer"])
    except (ValueError, KeyError) as e:  # e.g. resume=RUN optim.name=muon on a run trained with AdamW
        raise TrainError(f"the checkpoint's optimizer state does not fit this optimizer ({e}): resume with the "
                         "run's own optim.name, or start from its weights in a new run") from None
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    mine = checkpoint["processes"][procs.rank]
    sampler.load_state_dict(mine["sampler"])
    torch.set_rng_state(mine["cpu_rng"])
    if device.type == "cuda" and mine.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(mine["cuda_rng"], device)
    return LoopState(checkpoint["step"], checkpoint["best_val_loss"], checkpoint["elapsed_s"],
                     checkpoint.get("wandb_id"), checkpoint.get("evals_since_best", 0))


def check_wandb(cfg: TrainConfig) -> None:
    """wandb.enabled=true needs an API key (wandb login) unless WANDB_MODE keeps the run local: checked
    before anything is written, instead of wandb's traceback after the run folder exists."""
    if not cfg.wandb.enabled or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    import wandb

    try:
        wandb.login(verify=False)  # finds a key (WANDB_API_KEY, ~/.netrc); prompts for one on a terminal
    except wandb.errors.UsageError:
        raise TrainError("wandb.enabled=true, but wandb has no API key here: run `wandb login` once, or set "
                         "WANDB_MODE=offline to log locally (`wandb sync` uploads it later)") from None


def open_run_folder(cfg: TrainConfig, out_dir: Path, state: LoopState, log: RunLog, resumed: bool) -> None:
    """Rank 0, once every check has passed: the folder, train.log, metrics.jsonl, the config, wandb."""
    try:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        log.open(out_dir)
        name = f"config.resumed-at-step-{state.step}.yaml" if resumed else "config.yaml"
        OmegaConf.save(OmegaConf.structured(cfg), out_dir / name, resolve=True)
    except OSError as e:
        raise TrainError(f"cannot create the run folder {out_dir}: {e.strerror}; choose another out_dir") from None
    if cfg.wandb.enabled:
        state.wandb_id = state.wandb_id or secrets.token_hex(4)  # a wandb run id: lowercase letters and digits
        log.start_wandb(project=cfg.wandb.project, name=cfg.wandb.name or out_dir.name, id=state.wandb_id,
                        resume="allow", dir=str(out_dir), config=asdict(cfg))


def wrap(model: GPT, cfg: TrainConfig, device: torch.device, procs: Processes) -> torch.nn.Module:
    """What the loop calls: the model sharded in place (fsdp=true) or in DDP under torchrun, then compiled
    (DDP inside, as torch recommends, so the compiler splits the graph where DDP communicates)."""
    if procs.world_size > 1 and cfg.fsdp:
        shard(model)  # model's parameters are now this process's shards: build the optimizer after this
    if procs.world_size > 1 and not cfg.fsdp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if cfg.compile else model


def compile_now(run: Run) -> None:
    """With compile=true, compile before the first step instead of during it: one training forward and
    backward and one evaluation forward on an evaluation batch, with the random state put back and the
    gradients cleared, so the run is the same as without this. Its time is reported apart (not in the
    ETA). If the compiler fails (no C++ toolchain, an unsupported GPU), every process goes on eagerly."""
    if not run.cfg.compile:
        return
    started, error = time.perf_counter(), None
    x, y = run.eval_sets["train"][0]
    batch = [(x.to(run.device), y.to(run.device))]
    try:
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            forward_backward(run.model, batch, run.precision, run.scaler)
            evaluate(run.model, batch, run.precision, run.device)
    except torch._dynamo.exc.TorchDynamoException as e:
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    finally:
        run.optimizer.zero_grad(set_to_none=True)
    errors = [e for e in run.procs.gather(error) if e is not None]  # every process decides alike
    if errors:
        run.model = run.model._orig_mod  # the DDP (or plain) model, uncompiled
        torch._dynamo.reset()
        run.log.warning("torch.compile failed (%s): training eagerly; compile=false skips the attempt", errors[0])
    else:
        run.log.info("compiled in %s (training and evaluation graphs)", duration(time.perf_counter() - started))


def setup(cfg: TrainConfig, overrides: Sequence[str] = ()) -> Run:
    """Everything a run needs. The checkpoint (with resume=) is read once, and every check comes before
    the run folder is created, so a refused command writes nothing (data preparation aside). A check
    that one process makes (rank 0: the run folder; each machine's first: the data) is shared, so all
    processes stop together with the same message."""
    started = time.perf_counter()
    checkpoint, path = None, None
    if cfg.resume:
        path = find_checkpoint(cfg.resume)
        checkpoint = load_checkpoint(path)
        cfg = resumed_config(cfg, overrides, checkpoint["config"])
    procs, device = join_processes(cfg.device)
    was_deterministic, was_threads = set_deterministic(cfg.deterministic), torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    end_step = min(cfg.max_steps, cfg.stop_step) if cfg.stop_step else cfg.max_steps
    log = RunLog(end_step, cfg.progress) if procs.is_main else NullRunLog()
    try:
        dtype = resolve_dtype(cfg.dtype, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls autocast leaves
            torch.backends.cudnn.allow_tf32 = True
        out_dir = procs.decide(lambda: new_out_dir(cfg, path))  # chosen now, created last; None off rank 0
        procs.decide(lambda: check_wandb(cfg))
        imported = None
        if cfg.init_from and checkpoint is None:  # a resumed run has its weights in its checkpoint
            imported = imported_model(cfg, overrides)  # checked before preparing data: a typo costs nothing
        data_dir, meta = prepare_data(cfg.data, procs, trained_on=checkpoint["data_meta"] if checkpoint else None)
        if not has_source(cfg.data):  # found by data.name alone: its config says the tokenizer it was made with
            kind, source = meta.get("tokenizer"), meta.get("tokenizer_source")
            made_with = kind if kind in ("char", "gpt2") else f"hf:{source}" if kind == "hf" and source else None
            cfg = replace(cfg, data=replace(cfg.data, tokenizer=made_with or cfg.data.tokenizer))
        if imported is not None:
            check_tokenizer(cfg, meta)
            cfg = replace(cfg, model=imported)
        micro, accum_steps = batch_geometry(cfg, procs)
        raw_model = build_model(cfg, meta, device, weights_from=cfg.init_from if imported else None)
        if checkpoint is not None:
            check_checkpoint(checkpoint, raw_model, procs)
        model = wrap(raw_model, cfg, device, procs)
        optimizer = build_optimizer(raw_model, cfg.optim, device)  # after sharding: on this process's shards
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None  # fp16 needs loss scaling
        torch.manual_seed(cfg.seed + procs.rank)  # dropout differs between processes
        block_size = raw_model.config.block_size
        sampler = BatchSampler(data_dir, "train", block_size, micro, cfg.seed + procs.rank, device, meta)
        eval_sets = {split: fixed_batches(data_dir, split, block_size, micro, cfg.eval_batches)
                     for split in ("train", "val")}
        state = LoopState()
        if checkpoint is not None:
            state = restore(checkpoint, raw_model, optimizer, scaler, sampler, procs, device)
        procs.decide(lambda: open_run_folder(cfg, out_dir, state, log, resumed=checkpoint is not None))
        run = Run(cfg=cfg, procs=procs, device=device, dtype=dtype, raw_model=raw_model, model=model,
                  optimizer=optimizer, scaler=scaler, sampler=sampler, eval_sets=eval_sets, meta=meta,
                  accum_steps=accum_steps, end_step=end_step, out_dir=out_dir, log=log, state=state,
                  nonfinite=torch.zeros((), dtype=torch.bool, device=device), started=started,
                  was_deterministic=was_deterministic, was_threads=was_threads)
    except BaseException as e:
        log.close(failure=str(e))  # the process group, if any, is left to the exit (runtime.errors.fail)
        set_deterministic(was_deterministic)
        torch.set_num_threads(was_threads)
        raise
    announce(run, path)
    return run


def announce(run: Run, resumed_from: Optional[Path]) -> None:
    cfg, m = run.cfg, run.raw_model.config
    compiled = cfg.compile
    run.log.info("run folder: %s", run.out_dir)
    run.log.info("model: %s parameters (%d layers, %d heads, %d K/V heads, width %d, context %d); data: %s, %s "
                 "train tokens", f"{run.raw_model.num_params():,}", m.n_layer, m.n_head, m.kv_heads, m.n_embd,
                 m.block_size, cfg.data.name, f"{run.meta['train_tokens']:,}")
    run.log.info("device %s, %s%s, %d process(es); %d sequences x %d tokens per step = %d micro-batches of %d "
                 "per process", run.device, str(run.dtype).removeprefix("torch."), ", compiled" if compiled else "",
                 run.procs.world_size, cfg.batch_size, m.block_size, run.accum_steps,
                 cfg.batch_size // run.procs.world_size // run.accum_steps)
    if resumed_from is not None:
        run.log.info("resumed from %s at step %d", resumed_from, run.state.step)
    elif cfg.init_from:
        run.log.info("weights from %s (a Hugging Face Llama folder), fresh optimizer", cfg.init_from)
    if run.device.type != "cuda" and cfg.suggest_cpu_recipe:
        run.log.info("No CUDA GPU: training on %s. This recipe is meant for a GPU; estimating its duration here "
                     "after two steps...", run.device.type)


# ------------------------------------------------------------------------------------------------
# Operations around the step: speed, cross-process agreement, evaluation, checkpoints
# ------------------------------------------------------------------------------------------------


class Meter:
    """Training speed over the steps since the last log line; evaluating and saving do not count. It keeps
    the best speed seen, to notice when the machine slows down."""

    def __init__(self):
        self.start, self.steps = time.perf_counter(), 0
        self.best_tok_s, self.warned, self.logged_step_s = 0.0, False, None

    def tick(self) -> None:
        self.steps += 1

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def step_seconds(self) -> float:
        """Seconds per step: over the steps since the last log line (at the last log line, if none since)."""
        return self.seconds() / self.steps if self.steps else self.logged_step_s or 0.0

    def restart(self) -> None:
        self.logged_step_s = self.step_seconds()
        self.start, self.steps = time.perf_counter(), 0

    @contextmanager
    def paused(self):
        t = time.perf_counter()
        yield
        self.start += time.perf_counter() - t


def watch_for_divergence(run: Run, loss: torch.Tensor, grad_norm: Optional[torch.Tensor]) -> None:
    """Remember, on the device and without waiting for it, whether the loss or gradient norm is nan/inf."""
    run.nonfinite |= ~torch.isfinite(loss)
    if grad_norm is not None and run.scaler is None:  # with fp16 the scaler skips inf steps by design
        run.nonfinite |= ~torch.isfinite(grad_norm)


def diverged(run: Run, what: str) -> TrainError:
    last = run.out_dir / "checkpoints" / "last.pt" if run.out_dir else None
    kept = f"the last good checkpoint is {last}" if last and last.exists() else "no checkpoint had been written yet"
    return TrainError(f"{what} became nan or inf by step {run.state.step}; {kept}. Lower optim.lr or raise "
                      "optim.warmup_steps, then resume from it or start again")


def agree_on_stop(run: Run, stop: StopSignal, due: bool) -> bool:
    """Whether every process stops now (a stop signal in any of them); a nan or inf seen by any ends the run.

    Decided at log, eval and last steps (`due`) from flags reduced over all processes: one small
    all-reduce there, the loop's only wait for the device. A single process also decides at any step
    once signalled, so Ctrl-C stops it at once; under torchrun every process notices at the next due step.
    """
    signalled = stop.received is not None
    if not (due or (signalled and run.procs.world_size == 1)):
        return False
    flags = run.procs.any(torch.stack([run.nonfinite.float(), torch.tensor(float(signalled), device=run.device)]))
    if flags[0].item():
        raise diverged(run, "the training loss or gradient norm")
    return bool(flags[1].item())


def evals_left(cfg: TrainConfig, step: int, end_step: int) -> int:
    """Evaluations after `step`, up to end_step: at each multiple of eval_interval, and at max_steps."""
    n = end_step // cfg.eval_interval - step // cfg.eval_interval
    return n + int(step < end_step == cfg.max_steps and cfg.max_steps % cfg.eval_interval != 0)


def eval_seconds(run: Run, step_seconds: float) -> float:
    """How long an evaluation takes: as long as the last one did; before the first, its 2 * eval_batches
    forward passes at a third of a training micro-batch's forward and backward each."""
    if run.last_eval_s is not None:
        return run.last_eval_s
    return step_seconds / run.accum_steps / 3 * 2 * run.cfg.eval_batches


def eta(run: Run, step_seconds: float) -> float:
    """Seconds to end_step: the steps left and the evaluations left."""
    return (step_seconds * (run.end_step - run.state.step) +
            eval_seconds(run, step_seconds) * evals_left(run.cfg, run.state.step, run.end_step))


SLOWDOWN = 3.0  # a fall in speed this large is another program at work, not this machine's ±20% noise


def notice_slowdown(run: Run, meter: Meter, tok_s: float) -> None:
    """Once per run: a hint when training runs SLOWDOWN times slower than its best so far. On a CPU the
    usual cause is another program on the same cores, which slows both by far more than half."""
    if meter.best_tok_s > SLOWDOWN * tok_s and not meter.warned:
        where = ("the GPU (see nvidia-smi)" if run.device.type == "cuda" else
                 f"the {os.cpu_count()} CPU cores; stop it, or give this run fewer threads with threads=N (now "
                 f"{torch.get_num_threads()})")
        run.log.warning("training slowed to %s tok/s from %s (%.0fx): another program is probably using %s",
                        f"{tok_s:,.0f}", f"{meter.best_tok_s:,.0f}", meter.best_tok_s / tok_s, where)
        meter.warned = True
    meter.best_tok_s = max(meter.best_tok_s, tok_s)


def log_step(run: Run, meter: Meter, loss: torch.Tensor, lr: float) -> float:
    """A log line and a metrics entry: loss (averaged over processes), lr, tokens/s, MFU, ETA. Returns the loss."""
    loss = run.procs.mean(loss)
    cfg, m = run.cfg, run.raw_model.config
    seconds = meter.seconds()
    tokens_per_step = cfg.batch_size * m.block_size
    tok_s = meter.steps * tokens_per_step / seconds
    peak = peak_flops(run.device, cfg.peak_flops)
    mfu = run.raw_model.flops_per_token(m.block_size) * tok_s / (peak * run.procs.world_size) if peak else None
    entry = {"kind": "train", "step": run.state.step, "loss": loss.item(), "lr": lr, "tokens_per_s": tok_s,
             "mfu": mfu, "elapsed_s": run.elapsed()}
    run.log.record(entry)
    run.log.info("step %d/%d | loss %.4f | lr %.2e | %s tok/s%s | ETA %s", run.state.step, run.end_step,
                 entry["loss"], lr, f"{tok_s:,.0f}", f" | MFU {100 * mfu:.1f}%" if mfu is not None else "",
                 duration(eta(run, meter.step_seconds())))
    notice_slowdown(run, meter, tok_s)
    meter.restart()
    return entry["loss"]


def hint_cpu_recipe(run: Run, meter: Meter) -> None:
    """Two steps into a GPU recipe on a machine without CUDA: how long it would take, and the CPU recipe."""
    if run.state.step < run.end_step:
        seconds = eta(run, meter.seconds() / 2)
        run.log.info("At this speed the %d steps would take about %s. The CPU recipe trains a good model in "
                     "about 80 seconds: python train.py experiment=shakespeare_char_cpu", run.end_step,
                     duration(seconds))


LONG_EVAL_S = 30.0  # an evaluation expected to take longer is announced, with its expected duration


def evaluate_and_check(run: Run, step_seconds: float) -> float:
    """Train and val loss on the fixed batches, logged. Every process evaluates (under FSDP each forward
    needs them all) and takes rank 0's verdict on whether the loss is finite. A long one says so first,
    and moves the progress bar batch by batch."""
    started, step, n = time.perf_counter(), run.state.step, run.cfg.eval_batches
    expected = eval_seconds(run, step_seconds)
    if expected > LONG_EVAL_S:
        run.log.info("evaluating at step %d: 2 x %d batches, about %s", step, n, duration(expected))
    losses = {}
    for i, split in enumerate(("train", "val")):
        losses[split] = evaluate(run.raw_model, run.eval_sets[split], run.precision, run.device,
                                 on_batch=lambda done: run.log.progress(step, f"evaluating {i * n + done}/{2 * n}"))
    train_loss, val_loss = losses["train"], losses["val"]
    val_loss = run.procs.from_main(torch.tensor([val_loss], device=run.device)).item()
    if not math.isfinite(val_loss):
        raise diverged(run, "the validation loss")
    run.state.evals_since_best = 0 if val_loss < run.state.best_val_loss else run.state.evals_since_best + 1
    run.state.best_val_loss = min(run.state.best_val_loss, val_loss)
    run.log.record({"kind": "eval", "step": run.state.step, "train_loss": train_loss, "val_loss": val_loss,
                    "elapsed_s": run.elapsed()})
    run.log.info("eval at step %d: train loss %.4f, val loss %.4f (best %.4f)", run.state.step, train_loss,
                 val_loss, run.state.best_val_loss)
    run.last_eval_s = time.perf_counter() - started
    return val_loss


def save(run: Run, val_loss: Optional[float]) -> None:
    """checkpoints/last.pt (and best.pt when val_loss is the best so far). Every process takes part, to
    gather its data and random states; rank 0 writes."""
    mine = {"sampler": run.sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None}
    processes = run.procs.gather(mine)
    weights, optimizer = model_state(run.raw_model), optimizer_state(run.raw_model, run.optimizer)  # FSDP: gathered
    if run.out_dir is None:
        return
    loop = run.state
    checkpoint = {"step": loop.step, "model_config": asdict(run.raw_model.config), "model": weights,
                  "optimizer": optimizer, "scaler": run.scaler.state_dict() if run.scaler else None,
                  "best_val_loss": loop.best_val_loss, "val_loss": val_loss, "elapsed_s": run.elapsed(),
                  "processes": processes, "config": asdict(run.cfg), "data_meta": run.meta, "wandb_id": loop.wandb_id,
                  "evals_since_best": loop.evals_since_best}
    ckpt_dir = run.out_dir / "checkpoints"
    try:
        save_checkpoint(checkpoint, ckpt_dir / "last.pt")
    except OSError as e:
        raise TrainError(f"could not save {ckpt_dir / 'last.pt'} at step {loop.step}: {e.strerror or e}; the "
                         "previous checkpoint is intact. Free some space, then resume") from None
    if val_loss is not None and loop.evals_since_best == 0:  # a better val loss than any before
        link_checkpoint(ckpt_dir / "last.pt", ckpt_dir / "best.pt")


def draw_losses(run: Run) -> None:
    """Rank 0: loss.png in the run folder, from metrics.jsonl (so a resumed run's picture covers it all),
    written under a temporary name and renamed, so a viewer never sees half a picture. A picture that
    cannot be drawn costs one warning, never the run."""
    if run.out_dir is None or not run.cfg.plot:
        return
    partial = run.out_dir / ".loss.png.partial"
    try:
        plot_losses([(run.out_dir.name, read_metrics(run.out_dir))], partial,
                    title=f"{run.out_dir}: {run.cfg.data.name}, {run.raw_model.num_params():,} parameters")
        os.replace(partial, run.out_dir / "loss.png")
    except (ImportError, OSError, ValueError, RuntimeError) as e:
        run.log.warning("could not draw loss.png (%s); training goes on, and plot.py can draw it later", e)
        partial.unlink(missing_ok=True)


def out_of_patience(run: Run) -> bool:
    """With patience=N: whether the last N evaluations all failed to improve the val loss (then say so)."""
    n = run.cfg.patience
    if n is None or run.state.evals_since_best < n or run.state.step >= run.end_step:
        return False
    run.log.info("val loss has not improved for %d evaluations (patience=%d): stopping early at step %d. "
                 "checkpoints/best.pt holds the best (val %.4f)", run.state.evals_since_best, n, run.state.step,
                 run.state.best_val_loss)
    return True


def launcher() -> str:
    """How this command was started: `python`, or the torchrun line of this process group."""
    return torchrun_command() or "python"


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, overrides: Sequence[str] = ()) -> dict:
    """Train as cfg says. overrides: the command line's key=value list, which resume= applies on top of
    the checkpoint's config. Returns a summary (steps, losses, seconds)."""
    run = setup(cfg, overrides)
    try:
        compile_now(run)
        with StopSignal() as stop:
            summary = loop(run, stop)
    except BaseException as e:
        run.close(failure=str(e) or type(e).__name__)  # train.log says why the run stopped
        raise
    run.close()
    return summary


def loop(run: Run, stop: StopSignal) -> dict:
    """The training loop: the step first, then the operations around it. Returns a summary."""
    cfg, state = run.cfg, run.state
    meter, losses, val_loss = Meter(), [], None
    hint_pending = run.device.type != "cuda" and cfg.suggest_cpu_recipe
    run.raw_model.train()
    while state.step < run.end_step:
        # the training step
        lr = lr_at(state.step, cfg.optim, cfg.max_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_ratio", 1.0)
        loss = forward_backward(run.model, run.micro_batches(), run.precision, run.scaler)
        grad_norm = optimizer_step(run.raw_model, run.optimizer, run.scaler, cfg.optim.grad_clip)
        state.step += 1

        # operations, each a named call a reader can skip
        meter.tick()
        watch_for_divergence(run, loss, grad_norm)
        if hint_pending and meter.steps == 2:
            hint_cpu_recipe(run, meter)
            hint_pending = False
        log_due = state.step % cfg.log_interval == 0 or state.step == run.end_step
        eval_due = state.step % cfg.eval_interval == 0 or state.step == cfg.max_steps  # the same when resumed
        stopping = agree_on_stop(run, stop, due=log_due or eval_due)
        if log_due:
            losses.append(log_step(run, meter, loss, lr))
        if eval_due or stopping or state.step == run.end_step:
            with meter.paused():
                val_loss = evaluate_and_check(run, meter.step_seconds()) if eval_due else None
                save(run, val_loss)
                if eval_due:
                    draw_losses(run)
        if stopping:
            run.log.info("%s received: saved step %d to %s. Continue with: %s train.py resume=%s",
                         stop.received or "a stop", state.step, run.out_dir and run.out_dir / "checkpoints",
                         launcher(), run.out_dir)
            break
        if eval_due and out_of_patience(run):
            break
        run.log.progress(state.step, f"loss {losses[-1]:.4f}" if losses else "")

    run.log.info("done: step %d, val loss %s, %s", state.step, f"{val_loss:.4f}" if val_loss is not None else "n/a",
                 duration(run.elapsed()))
    return {"step": state.step, "val_loss": val_loss, "best_val_loss": state.best_val_loss, "losses": losses,
            "elapsed_s": run.elapsed(), "interrupted": stop.received}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python train.py key=value ...` (argv: those items; None reads sys.argv)."""
    run_command("train", TrainConfig, train, argv)


if __name__ == "__main__":
    main()
