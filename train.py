"""Train a GPT on a prepared dataset.

    python train.py                                       # the GPU recipe (nanoGPT's baby GPT)
    python train.py experiment=shakespeare_char_cpu       # the CPU recipe, about two minutes
    python train.py resume=outputs/2026-11-22/06-00-00    # continue a run exactly
    torchrun --nproc_per_node=2 train.py ...              # data-parallel on 2 processes

Read it top to bottom: the settings (every knob with its default, which is the GPU recipe); the
pieces of one training step; `setup`, which builds a run's state and checks everything before it
writes anything; and `train`, the loop, whose first lines are the training step and whose other
lines are named operations a reader can skip. Under torchrun every process runs the same code; only
rank 0 writes files, logs and talks to wandb.
"""

import math
import secrets
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from data.config import DataConfig, DataError, dataset_dir
from data.loader import BatchSampler, fixed_batches
from data.prepare import load_meta, prepare
from model.gpt import GPT, GPTConfig
from runtime.checkpoint import find_checkpoint, link_checkpoint, load_checkpoint, run_dir_of, save_checkpoint
from runtime.config import is_group, parse_overrides, run_command
from runtime.devices import autocast, peak_flops, resolve_dtype
from runtime.errors import UserError
from runtime.processes import Processes, StopSignal, join_processes, torchrun_command
from runtime.runlog import NullRunLog, RunLog, duration

# ------------------------------------------------------------------------------------------------
# Settings: every knob, with its default. Groups (model=, data=, experiment=) come from configs/.
# ------------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    min_lr: float = 1e-4  # the cosine decay ends here at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only, not on norm scales
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


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
    max_steps: int = 5000  # optimizer steps; the learning-rate schedule ends here
    stop_step: Optional[int] = None  # stop (with a checkpoint) at this step, to continue later with resume=
    batch_size: int = 64  # sequences per optimizer step, across all processes and micro-batches
    micro_batch_size: Optional[int] = None  # sequences per forward pass; None: batch_size / processes
    eval_interval: int = 250  # evaluate, and save the checkpoints, every this many steps (and at the end)
    eval_batches: int = 200  # fixed batches per split for each evaluation
    log_interval: int = 10  # a log line (and a metrics.jsonl entry) every this many steps
    device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu
    dtype: str = "auto"  # auto (bf16 on CUDA where supported, else fp16; fp32 elsewhere), bf16, fp16, fp32
    compile: bool = True  # torch.compile the model (on CUDA; ignored elsewhere)
    peak_flops: Optional[float] = None  # FLOP/s per device that MFU is measured against; None: known GPUs
    seed: int = 1337
    out_dir: Optional[str] = None  # the run folder; None: outputs/DATE/TIME (with resume=: the run's own)
    resume: Optional[str] = None  # a run folder or a checkpoint file to continue from
    suggest_cpu_recipe: bool = True  # on a machine without CUDA, point to the CPU recipe
    progress: bool = True  # a progress bar when the output is a terminal


# Settings about this command rather than the run: a resumed run never takes them from its checkpoint.
PER_COMMAND = ("resume", "stop_step", "out_dir")


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


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (embedding included) and none on the norm scales."""
    params = list(model.parameters())  # a tied weight appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), fused=device.type == "cuda")


def forward_backward(model: torch.nn.Module, micro_batches: list, precision: Callable,
                     scaler: Optional[torch.amp.GradScaler] = None) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over the micro-batches; return that loss, detached.

    Each micro-batch's loss is divided by their number, so k micro-batches of b sequences give the
    gradient of one batch of k*b. Under DDP the gradients are all-reduced (averaged over processes)
    only in the last backward pass: `no_sync` skips the others.
    """
    n, total = len(micro_batches), 0.0
    for i, (x, y) in enumerate(micro_batches):
        sync = i == n - 1 or not isinstance(model, DDP)
        with nullcontext() if sync else model.no_sync():
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
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@torch.no_grad()
def evaluate(model: GPT, batches: list, precision: Callable, device: torch.device) -> float:
    """Mean loss over fixed batches, with dropout off."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in batches:
        with precision():
            losses.append(model(x.to(device), y.to(device))[1].float())
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


@dataclass
class Run:
    cfg: TrainConfig
    procs: Processes
    device: torch.device
    dtype: torch.dtype
    raw_model: GPT  # the model itself: what checkpoints hold
    model: torch.nn.Module  # what the loop calls: raw_model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]  # fp16 only
    sampler: BatchSampler
    eval_sets: dict  # rank 0: {"train": [...], "val": [...]}, fixed batches
    meta: dict  # the dataset's meta.json
    accum_steps: int  # micro-batches per optimizer step in each process
    end_step: int  # max_steps, or stop_step when it comes first
    out_dir: Optional[Path]  # rank 0: the run folder
    log: RunLog  # a NullRunLog off rank 0
    state: LoopState
    started: float = field(default_factory=time.perf_counter)
    nonfinite: Optional[torch.Tensor] = None  # set once any loss or gradient norm is nan or inf (no sync)

    def precision(self):
        return autocast(self.device, self.dtype)

    def micro_batches(self) -> list:
        return [self.sampler.next_batch() for _ in range(self.accum_steps)]

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def close(self) -> None:
        self.log.close()
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
        if is_group(key):
            raise TrainError(f"resume continues with the checkpoint's config; '{override.input_line}' switches a "
                             "config group. Override single keys instead (e.g. max_steps=8000)")
        if not key.startswith("hydra.") and not override.is_delete():
            OmegaConf.update(resumed, key, OmegaConf.select(given, key), merge=False)
    for key in PER_COMMAND:
        resumed[key] = given[key]
    return OmegaConf.to_object(resumed)


def check_settings(cfg: TrainConfig, overrides: Sequence[str]) -> None:
    if any(o.key_or_group == "hydra.run.dir" for o in parse_overrides(overrides)):
        raise TrainError("train.py chooses its run folder itself: give out_dir=PATH instead of hydra.run.dir")
    for key in ("max_steps", "batch_size", "eval_interval", "eval_batches", "log_interval"):
        if getattr(cfg, key) < 1:
            raise TrainError(f"{key}={getattr(cfg, key)} must be at least 1")


def new_out_dir(cfg: TrainConfig, resumed_from: Optional[Path]) -> Path:
    """The run folder: out_dir= as given; else a resumed run's own folder; else outputs/DATE/TIME.

    A folder that holds another run is never written by a new run: naming one is refused (with the
    resume= line), and a timestamp that is taken already gets a suffix.
    """
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
        raise TrainError(f"{out} already holds a run: continue it with `python train.py resume={out}`, or "
                         "choose another out_dir")
    return out


def prepare_data(cfg: DataConfig, procs: Processes) -> tuple[Path, dict]:
    """The first process on each machine prepares the dataset (once); the others wait and share its verdict."""
    problem = None
    if procs.local_rank == 0:
        try:
            prepare(cfg)
        except DataError as e:
            problem = str(e)
    problem = next((p for p in procs.gather(problem) if p), None)
    if problem:
        raise DataError(problem)
    data_dir = dataset_dir(cfg)
    return data_dir, load_meta(data_dir, cfg.tokenizer)


def setup(cfg: TrainConfig, overrides: Sequence[str] = ()) -> Run:
    """Everything a run needs. The checkpoint (with resume=) is read once; every check comes before
    the run folder is created, so a refused command writes nothing (data preparation aside)."""
    checkpoint, resumed_from = None, None
    if cfg.resume:
        path = find_checkpoint(cfg.resume)
        checkpoint = load_checkpoint(path)
        cfg = resumed_config(cfg, overrides, checkpoint["config"])
        resumed_from = run_dir_of(path)
    check_settings(cfg, overrides)
    procs, device = join_processes(cfg.device)
    end_step = min(cfg.max_steps, cfg.stop_step) if cfg.stop_step else cfg.max_steps
    log = RunLog(end_step, cfg.progress) if procs.is_main else NullRunLog()
    try:
        out_dir = new_out_dir(cfg, resumed_from) if procs.is_main else None  # chosen now, created last
        return build_run(cfg, procs, device, checkpoint, out_dir, end_step, log)
    except BaseException:
        log.close()
        procs.close()
        raise


def build_run(cfg: TrainConfig, procs: Processes, device: torch.device, checkpoint: Optional[dict],
              out_dir: Optional[Path], end_step: int, log: RunLog) -> Run:
    dtype = resolve_dtype(cfg.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = True
    data_dir, meta = prepare_data(cfg.data, procs)

    # batch geometry: tokens per optimizer step = batch_size * block_size whatever the process count
    if cfg.batch_size % procs.world_size:
        raise TrainError(f"batch_size={cfg.batch_size} must be divisible by the {procs.world_size} processes")
    per_process = cfg.batch_size // procs.world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise TrainError(f"micro_batch_size={micro} must divide batch_size / processes = {per_process}")

    # the model: its vocabulary comes from the data
    if cfg.model.vocab_size not in (None, meta["vocab_size"]):
        raise TrainError(f"model.vocab_size={cfg.model.vocab_size} disagrees with the data's vocabulary of "
                         f"{meta['vocab_size']}: leave it unset, it comes from the data")
    try:
        gpt_config = GPTConfig(**{**asdict(cfg.model), "vocab_size": meta["vocab_size"]})
    except ValueError as e:
        raise TrainError(str(e)) from None
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    raw_model = GPT(gpt_config).to(device)
    optimizer = build_optimizer(raw_model, cfg.optim, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    torch.manual_seed(cfg.seed + procs.rank)  # dropout differs between processes
    sampler = BatchSampler(data_dir, "train", gpt_config.block_size, micro, cfg.seed + procs.rank, device, meta)
    eval_sets = {split: fixed_batches(data_dir, split, gpt_config.block_size, micro, cfg.eval_batches)
                 for split in ("train", "val")} if procs.is_main else {}

    state = LoopState()
    if checkpoint is not None:
        restore(checkpoint, gpt_config, raw_model, optimizer, scaler, sampler, procs, device)
        state = LoopState(checkpoint["step"], checkpoint["best_val_loss"], checkpoint["elapsed_s"],
                          checkpoint.get("wandb_id"))

    model: torch.nn.Module = raw_model
    compiled = cfg.compile and device.type == "cuda"  # on a CPU, inductor needs a C++ toolchain and rarely pays
    if compiled:
        model = torch.compile(model)
    if procs.world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    if out_dir is not None:  # rank 0, every check passed: now the run folder
        try:
            (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot create the run folder {out_dir}: {e.strerror}; choose another out_dir") from None
        log.open(out_dir)
        name = f"config.resumed-at-step-{state.step}.yaml" if checkpoint else "config.yaml"
        OmegaConf.save(OmegaConf.structured(cfg), out_dir / name, resolve=True)
        if cfg.wandb.enabled:
            state.wandb_id = state.wandb_id or secrets.token_hex(4)  # a wandb run id: lowercase letters, digits
            log.start_wandb(project=cfg.wandb.project, name=cfg.wandb.name or out_dir.name, id=state.wandb_id,
                            resume="allow", dir=str(out_dir), config=asdict(cfg))

    run = Run(cfg, procs, device, dtype, raw_model, model, optimizer, scaler, sampler, eval_sets, meta,
              per_process // micro, end_step, out_dir, log, state,
              nonfinite=torch.zeros((), dtype=torch.bool, device=device))
    announce(run, compiled, resumed=checkpoint is not None)
    return run


def restore(checkpoint: dict, gpt_config: GPTConfig, model: GPT, optimizer, scaler, sampler: BatchSampler,
            procs: Processes, device: torch.device) -> None:
    """Weights, optimizer, scaler, and this process's data and random states, from a checkpoint."""
    if checkpoint["model_config"] != asdict(gpt_config):
        raise TrainError(f"the checkpoint's model {checkpoint['model_config']} differs from the config's "
                         f"{asdict(gpt_config)}")
    processes = checkpoint["processes"]
    if len(processes) != procs.world_size:
        raise TrainError(f"the checkpoint was written by {len(processes)} processes; resume with as many "
                         f"(it has their data and random states), not {procs.world_size}")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    mine = processes[procs.rank]
    sampler.load_state_dict(mine["sampler"])
    torch.set_rng_state(mine["cpu_rng"])
    if device.type == "cuda" and mine.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(mine["cuda_rng"], device)


def announce(run: Run, compiled: bool, resumed: bool) -> None:
    cfg, m = run.cfg, run.raw_model.config
    run.log.info("run folder: %s", run.out_dir)
    run.log.info("model: %s parameters (%d layers, %d heads, %d K/V heads, width %d, context %d); data: %s, %s "
                 "train tokens", f"{run.raw_model.num_params():,}", m.n_layer, m.n_head, m.kv_heads, m.n_embd,
                 m.block_size, cfg.data.name, f"{run.meta['train_tokens']:,}")
    run.log.info("device %s, %s%s, %d process(es); %d sequences x %d tokens per step = %d micro-batches of %d "
                 "per process", run.device, str(run.dtype).removeprefix("torch."), ", compiled" if compiled else "",
                 run.procs.world_size, cfg.batch_size, m.block_size, run.accum_steps,
                 cfg.batch_size // run.procs.world_size // run.accum_steps)
    if cfg.compile and not compiled:
        run.log.info("compile=true applies on CUDA only: running eagerly on %s", run.device.type)
    if resumed:
        run.log.info("resumed at step %d", run.state.step)
    if run.device.type != "cuda" and cfg.suggest_cpu_recipe:
        run.log.info("No CUDA GPU: training on %s. This recipe is meant for a GPU; estimating its duration here "
                     "after two steps...", run.device.type)


# ------------------------------------------------------------------------------------------------
# Operations around the step: speed, cross-process agreement, evaluation, checkpoints
# ------------------------------------------------------------------------------------------------


class Meter:
    """Training speed over the steps since the last log line; evaluating and saving do not count."""

    def __init__(self):
        self.start, self.steps = time.perf_counter(), 0

    def tick(self) -> None:
        self.steps += 1

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def restart(self) -> None:
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


def agree_on_stop(run: Run, loss: torch.Tensor, signalled: bool) -> bool:
    """Whether every process stops now: a stop signal in any process. A nan or inf anywhere ends the run.

    Decided only at log, eval and final steps, from flags reduced over all processes: one small
    all-reduce there (which also averages the loss to log), no device sync at the other steps. A single
    process decides at any step, so Ctrl-C stops it at once.
    """
    step, cfg = run.state.step, run.cfg
    due = step % cfg.log_interval == 0 or step % cfg.eval_interval == 0 or step == run.end_step
    if not (due or (signalled and run.procs.world_size == 1)):
        return False  # with torchrun: noticed at the next log step, by every process at once
    flags = run.procs.any(torch.stack([run.nonfinite.float(), torch.tensor(float(signalled), device=run.device)]))
    run.procs.mean(loss)
    if flags[0].item():
        raise diverged(run, "the training loss or gradient norm")
    return bool(flags[1].item())


def log_step(run: Run, meter: Meter, loss: torch.Tensor, lr: float) -> float:
    """A log line and a metrics entry: loss, lr, tokens/s, MFU, ETA. Returns the loss."""
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
                 duration(seconds / meter.steps * (run.end_step - run.state.step)))
    meter.restart()
    return entry["loss"]


def suggest_cpu_recipe(run: Run, meter: Meter) -> None:
    """Two steps into a GPU recipe on a machine without CUDA: how long it would take, and the CPU recipe."""
    if run.state.step < run.end_step:
        seconds = meter.seconds() / 2 * (run.cfg.max_steps - run.state.step)
        run.log.info("At this speed the %d steps would take about %s. The CPU recipe trains a good model in "
                     "about two minutes: python train.py experiment=shakespeare_char_cpu", run.cfg.max_steps,
                     duration(seconds))


def evaluate_and_check(run: Run) -> float:
    """Train and val loss on the fixed batches (rank 0), logged; every process learns whether it is finite."""
    train_loss = val_loss = 0.0
    if run.procs.is_main:
        train_loss = evaluate(run.raw_model, run.eval_sets["train"], run.precision, run.device)
        val_loss = evaluate(run.raw_model, run.eval_sets["val"], run.precision, run.device)
    val_loss = run.procs.from_main(torch.tensor([val_loss], device=run.device)).item()
    if not math.isfinite(val_loss):
        raise diverged(run, "the validation loss")
    run.state.best_val_loss = min(run.state.best_val_loss, val_loss)
    run.log.record({"kind": "eval", "step": run.state.step, "train_loss": train_loss, "val_loss": val_loss,
                    "elapsed_s": run.elapsed()})
    run.log.info("eval at step %d: train loss %.4f, val loss %.4f (best %.4f)", run.state.step, train_loss,
                 val_loss, run.state.best_val_loss)
    return val_loss


def save(run: Run, val_loss: Optional[float]) -> None:
    """checkpoints/last.pt (and best.pt when val_loss is the best so far). Every process takes part, to
    gather its data and random states; rank 0 writes."""
    mine = {"sampler": run.sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None}
    processes = run.procs.gather(mine)
    if run.out_dir is None:
        return
    s = run.state
    state = {"step": s.step, "model_config": asdict(run.raw_model.config), "model": run.raw_model.state_dict(),
             "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None,
             "best_val_loss": s.best_val_loss, "val_loss": val_loss, "elapsed_s": run.elapsed(),
             "processes": processes, "config": asdict(run.cfg), "data_meta": run.meta, "wandb_id": s.wandb_id}
    ckpt_dir = run.out_dir / "checkpoints"
    save_checkpoint(state, ckpt_dir / "last.pt")
    if val_loss is not None and val_loss <= s.best_val_loss:
        link_checkpoint(ckpt_dir / "last.pt", ckpt_dir / "best.pt")


def resume_command(run: Run) -> str:
    launcher = torchrun_command() or "python"
    return f"{launcher} train.py resume={run.out_dir}"


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, overrides: Sequence[str] = ()) -> dict:
    """Train as cfg says. overrides: the command line's key=value list, which resume= applies on top of
    the checkpoint's config. Returns a summary (steps, losses, seconds)."""
    run = setup(cfg, overrides)
    try:
        with StopSignal() as stop:
            return loop(run, stop)
    finally:
        run.close()


def loop(run: Run, stop: StopSignal) -> dict:
    cfg, state = run.cfg, run.state
    meter, losses, val_loss = Meter(), [], None
    hint_pending = run.device.type != "cuda" and cfg.suggest_cpu_recipe
    run.raw_model.train()
    while state.step < run.end_step:
        # the training step
        lr = lr_at(state.step, cfg.optim, cfg.max_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss = forward_backward(run.model, run.micro_batches(), run.precision, run.scaler)
        grad_norm = optimizer_step(run.raw_model, run.optimizer, run.scaler, cfg.optim.grad_clip)
        state.step += 1

        # operations
        meter.tick()
        watch_for_divergence(run, loss, grad_norm)
        if hint_pending and meter.steps == 2:
            suggest_cpu_recipe(run, meter)
            hint_pending = False
        stopping = agree_on_stop(run, loss, stop.received is not None)
        if state.step % cfg.log_interval == 0 or state.step == run.end_step:
            losses.append(log_step(run, meter, loss, lr))
        eval_due = state.step % cfg.eval_interval == 0 or state.step == cfg.max_steps  # the same when resumed
        if eval_due or stopping or state.step == run.end_step:
            with meter.paused():
                val_loss = evaluate_and_check(run) if eval_due else None
                save(run, val_loss)
        if stopping:
            run.log.info("%s received: saved step %d to %s. Continue with: %s", stop.received or "a stop",
                         state.step, run.out_dir / "checkpoints" if run.out_dir else None, resume_command(run))
            break
        run.log.progress(state.step, f"loss {losses[-1]:.4f}" if losses else "")

    run.log.info("done: step %d, val loss %s, %s", state.step, f"{val_loss:.4f}" if val_loss is not None else "n/a",
                 duration(run.elapsed()))
    return {"step": state.step, "val_loss": val_loss, "best_val_loss": state.best_val_loss, "losses": losses,
            "elapsed_s": run.elapsed(), "interrupted": stop.received}


def main() -> None:
    run_command("train", TrainConfig, train)


if __name__ == "__main__":
    main()
