"""Train a GPT on a prepared dataset.

    python train.py                                       # the GPU recipe (nanoGPT's baby GPT)
    python train.py experiment=shakespeare_char_cpu       # the CPU recipe, about two minutes
    python train.py resume=outputs/2026-11-22/06-00-00    # continue a run exactly
    torchrun --nproc_per_node=2 train.py ...              # data-parallel on 2 processes

`train(cfg, run_dir)` does the work; `main()` is the thin Hydra entry point. Under torchrun every
process runs `train`; only rank 0 writes files, logs and talks to wandb.
"""

import dataclasses
import json
import logging
import math
import os
import secrets
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import CheckpointError, checkpoint_path, link_checkpoint, load_checkpoint, save_checkpoint
from configs.schema import OptimConfig, TrainConfig, register_configs
from data.config import DataConfig, DataError, dataset_dir
from devices import DeviceError, autocast, resolve_device, resolve_dtype
from data.loader import BatchSampler, fixed_batches
from data.prepare import load_meta, prepare
from model.gpt import GPT, GPTConfig

log = logging.getLogger("train")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Dense bf16 tensor-core peaks from the vendors' data sheets, for MFU. Matched against the device name.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                  "L4": 121e12, "4090": 165e12, "3090": 71e12}


class TrainError(Exception):
    """Bad configuration or a failed run. The message says what to do; train.py exits with code 2."""


# ------------------------------------------------------------------------------------------------
# Devices, precision, processes
# ------------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed(), resolve_device(device_name, 0)
    d = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    device = resolve_device(device_name, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def peak_flops(cfg: TrainConfig, device: torch.device, world_size: int) -> Optional[float]:
    if cfg.peak_flops:
        return cfg.peak_flops * world_size
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops * world_size
    return None


# ------------------------------------------------------------------------------------------------
# Optimisation
# ------------------------------------------------------------------------------------------------


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (embedding included) and none on the norm scales."""
    params = list(model.parameters())  # a tied weight appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), fused=device.type == "cuda")


def lr_at(step: int, o: OptimConfig, max_steps: int) -> float:
    """Linear warmup over warmup_steps, then cosine decay from lr to min_lr at max_steps."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, max_steps - o.warmup_steps))
    return o.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.lr - o.min_lr)


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
# Logging
# ------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """A one-line progress bar on a terminal's stderr; nothing when stderr is not a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.shown = total, enabled and sys.stderr.isatty(), False

    def update(self, step: int, text: str) -> None:
        if self.enabled:
            filled = int(30 * step / max(1, self.total))
            sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} {text}")
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


class StopSignal:
    """SIGINT (Ctrl-C) or SIGTERM sets a flag: the loop finishes its step, saves and exits.

    A second Ctrl-C stops at once.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def check_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Refuse keys the schema lacks: Hydra lets `+key=value` add them, and they would do nothing."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            raise TrainError(f"unknown config key {prefix}{key}: see configs/schema.py for the keys")
        nested = fields[key].default_factory
        if dataclasses.is_dataclass(nested):
            check_keys(node[key], nested, f"{prefix}{key}.")


def config_groups() -> set[str]:
    return {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}


def apply_resume(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """With resume=..., continue with the checkpoint's config plus this command line's key=value overrides.

    So `python train.py resume=RUN_DIR` alone continues the run as it was configured, and
    `resume=RUN_DIR max_steps=8000` extends it. Switching a config group (model=, data=, experiment=)
    would change what is being trained, so it is refused. stop_step is not carried over.
    """
    if not cfg.resume:
        return cfg
    state = load_checkpoint(checkpoint_path(cfg.resume))
    resumed = OmegaConf.merge(OmegaConf.structured(TrainConfig), state["config"])
    resumed.stop_step = None
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in config_groups():
            raise TrainError(f"resume continues with the checkpoint's config; '{override}' switches a config "
                             "group. Override single keys instead (e.g. max_steps=8000)")
        if "=" in override and not key.startswith("hydra.") and key != "resume":
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = cfg.resume
    return resumed


def compose_config(overrides: list[str], resume: bool = True) -> DictConfig:
    """The config train.py would run with, composed without Hydra's run directory or logging.

    Used by processes other than rank 0 under torchrun, and by tests.
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return apply_resume(cfg, overrides) if resume else cfg


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def train(cfg: DictConfig, run_dir: Optional[Path]) -> dict:
    """Train as cfg says; rank 0 writes into run_dir. Returns a summary (steps, losses, seconds)."""
    t_start = time.perf_counter()
    check_keys(cfg, TrainConfig)
    for key in ("max_steps", "batch_size", "eval_interval", "eval_batches", "log_interval"):
        if cfg[key] < 1:
            raise TrainError(f"{key}={cfg[key]} must be at least 1")
    d, device = setup_distributed(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = True

    # data: the first process on each machine prepares it (once), the others wait and share its verdict
    data_cfg: DataConfig = OmegaConf.to_object(cfg.data)
    problem = None
    if d.local_rank == 0:
        try:
            prepare(data_cfg)
        except DataError as e:
            problem = str(e)
    if d.world_size > 1:
        verdicts = [None] * d.world_size
        dist.all_gather_object(verdicts, problem)
        problem = next((v for v in verdicts if v), None)
    if problem:
        raise DataError(problem)
    data_dir = dataset_dir(data_cfg)
    meta = load_meta(data_dir, data_cfg.tokenizer)

    # batch geometry: tokens per optimizer step = batch_size * block_size whatever the process count
    if cfg.batch_size % d.world_size:
        raise TrainError(f"batch_size={cfg.batch_size} must be divisible by the {d.world_size} processes")
    per_process = cfg.batch_size // d.world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise TrainError(f"micro_batch_size={micro} must divide batch_size / processes = {per_process}")
    accum_steps = per_process // micro

    # model
    model_fields = OmegaConf.to_container(cfg.model)
    if model_fields["vocab_size"] not in (None, meta["vocab_size"]):
        raise TrainError(f"model.vocab_size={model_fields['vocab_size']} disagrees with the data's vocabulary "
                         f"of {meta['vocab_size']}: leave it unset, it comes from the data")
    model_fields["vocab_size"] = meta["vocab_size"]
    try:
        gpt_config = GPTConfig(**model_fields)
    except ValueError as e:
        raise TrainError(str(e)) from None
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    raw_model = GPT(gpt_config).to(device)
    optimizer = build_optimizer(raw_model, cfg.optim, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    torch.manual_seed(cfg.seed + d.rank)  # dropout differs between processes

    sampler = BatchSampler(data_dir, "train", gpt_config.block_size, micro, cfg.seed + d.rank, device, meta)
    eval_sets = {split: fixed_batches(data_dir, split, gpt_config.block_size, micro, cfg.eval_batches)
                 for split in ("train", "val")} if d.is_main else {}

    step, best_val, elapsed_before, wandb_id = 0, float("inf"), 0.0, None
    if cfg.resume:
        state = load_checkpoint(checkpoint_path(cfg.resume))
        if state["model_config"] != asdict(gpt_config):
            raise TrainError(f"the checkpoint's model {state['model_config']} differs from the config's "
                             f"{asdict(gpt_config)}")
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        proc = state["processes"]
        if len(proc) != d.world_size:
            raise TrainError(f"the checkpoint was written by {len(proc)} processes; resume with as many "
                             f"(it has their data and random states), not {d.world_size}")
        sampler.load_state_dict(proc[d.rank]["sampler"])
        torch.set_rng_state(proc[d.rank]["cpu_rng"])
        if device.type == "cuda" and proc[d.rank].get("cuda_rng") is not None:
            torch.cuda.set_rng_state(proc[d.rank]["cuda_rng"], device)
        step, best_val = state["step"], state["best_val_loss"]
        elapsed_before, wandb_id = state["elapsed_s"], state.get("wandb_id")

    model: torch.nn.Module = raw_model
    compiled = cfg.compile and device.type == "cuda"  # on a CPU, inductor needs a C++ toolchain and rarely pays
    if compiled:
        model = torch.compile(model)
    if d.world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def mixed_precision():
        return autocast(device, dtype)

    # rank 0's outputs: config, metrics, checkpoints, wandb
    metrics_file = wandb_run = None
    ckpt_dir = None
    if d.is_main and run_dir is not None:
        run_dir = Path(run_dir)
        ckpt_dir = run_dir / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        config_name = "config.yaml" if not cfg.resume else f"config.resumed-at-step-{step}.yaml"
        OmegaConf.save(cfg, run_dir / config_name, resolve=True)
        metrics_file = open(run_dir / "metrics.jsonl", "a")
        if cfg.wandb.enabled:
            import wandb

            wandb_id = wandb_id or secrets.token_hex(4)  # a wandb run id: lowercase letters and digits
            wandb_run = wandb.init(project=cfg.wandb.project, name=cfg.wandb.name or run_dir.name, id=wandb_id,
                                   resume="allow", dir=str(run_dir),
                                   config=OmegaConf.to_container(cfg, resolve=True))

    def record(entry: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(entry) + "\n")
            metrics_file.flush()
        if wandb_run is not None:
            wandb_run.log({k: v for k, v in entry.items() if k not in ("kind", "step")}, step=entry["step"])

    def save(step: int, val_loss: Optional[float]) -> None:
        """Every process takes part (to gather the data and random states); rank 0 writes."""
        mine = {"sampler": sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        processes = [None] * d.world_size
        if d.world_size > 1:
            dist.all_gather_object(processes, mine)
        else:
            processes = [mine]
        if ckpt_dir is None:
            return
        state = {"step": step, "model_config": asdict(gpt_config), "model": raw_model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                 "best_val_loss": best_val, "val_loss": val_loss, "elapsed_s": elapsed(),
                 "processes": processes, "config": OmegaConf.to_container(cfg, resolve=True),
                 "data_meta": meta, "wandb_id": wandb_id}
        save_checkpoint(state, ckpt_dir / "last.pt")
        if val_loss is not None and val_loss <= best_val:
            link_checkpoint(ckpt_dir / "last.pt", ckpt_dir / "best.pt")

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    end_step = min(cfg.max_steps, cfg.stop_step) if cfg.stop_step else cfg.max_steps
    tokens_per_step = cfg.batch_size * gpt_config.block_size
    flops_per_step = raw_model.flops_per_token(gpt_config.block_size) * tokens_per_step
    peak = peak_flops(cfg, device, d.world_size)
    progress = Progress(end_step, cfg.progress and d.is_main)

    def say(msg: str, *args) -> None:
        if d.is_main:
            progress.clear()
            log.info(msg, *args)

    say("run directory: %s", run_dir)
    say("model: %s parameters (%d layers, %d heads, %d K/V heads, width %d, context %d); data: %s, %s train "
        "tokens", f"{raw_model.num_params():,}", gpt_config.n_layer, gpt_config.n_head, gpt_config.kv_heads,
        gpt_config.n_embd, gpt_config.block_size, data_cfg.name, f"{meta['train_tokens']:,}")
    say("device %s, %s%s, %d process(es); %d sequences x %d tokens per step = %d micro-batches of %d per "
        "process", device, str(dtype).removeprefix("torch."), ", compiled" if compiled else "", d.world_size,
        cfg.batch_size, gpt_config.block_size, accum_steps, micro)
    if cfg.compile and not compiled:
        say("compile=true applies on CUDA only: running eagerly on %s", device.type)
    if cfg.resume:
        say("resumed from %s at step %d", checkpoint_path(cfg.resume), step)
    no_cuda_notice = device.type != "cuda" and cfg.suggest_cpu_recipe
    if no_cuda_notice:
        say("No CUDA GPU: training on %s. This recipe is meant for a GPU; estimating its duration here "
            "after two steps...", device.type)

    raw_model.train()
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite loss or gradient norm
    window_start, window_steps, val_loss, losses = time.perf_counter(), 0, None, []

    def diverged(where: str) -> TrainError:
        kept = f"the last good checkpoint is {ckpt_dir / 'last.pt'}" if ckpt_dir and (ckpt_dir / "last.pt").exists() \
            else "no checkpoint had been written yet"
        return TrainError(f"{where} became nan or inf by step {step}; {kept}. Lower optim.lr or raise "
                          "optim.warmup_steps, then resume from it or start again")

    with StopSignal() as stop:
        while step < end_step:
            lr = lr_at(step, cfg.optim, cfg.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = forward_backward(model, [sampler.next_batch() for _ in range(accum_steps)], mixed_precision,
                                    scaler)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.optim.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip)
                if scaler is None:  # with fp16 the scaler skips steps with inf gradients by design
                    nonfinite |= ~torch.isfinite(grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            nonfinite |= ~torch.isfinite(loss)  # no device sync here: read at the checks below
            step += 1
            window_steps += 1
            log_due = step % cfg.log_interval == 0 or step == end_step
            eval_due = step % cfg.eval_interval == 0 or step == cfg.max_steps  # the same in a resumed run

            if no_cuda_notice and window_steps == 2 and step < end_step:
                seconds = (time.perf_counter() - window_start) / 2 * (cfg.max_steps - step)
                say("At this speed the %d steps would take about %s. The CPU recipe trains a good model in "
                    "about two minutes: python train.py experiment=shakespeare_char_cpu", cfg.max_steps,
                    duration(seconds))
                no_cuda_notice = False

            # Decisions every process must take together (stop, divergence) are made only at log,
            # eval and final steps, from flags reduced over all processes: one small all-reduce there,
            # no device sync in other steps. A single process may stop at any step.
            stopping = stop.received is not None
            if log_due or eval_due or step == end_step or (stopping and d.world_size == 1):
                flags = torch.stack([nonfinite.float(), torch.tensor(float(stopping), device=device)])
                if d.world_size > 1:
                    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                    dist.all_reduce(loss, op=dist.ReduceOp.AVG)
                if flags[0].item():
                    raise diverged("the training loss or gradient norm")
                stopping = bool(flags[1].item())
            elif d.world_size > 1:
                stopping = False  # noticed at the next log step, by every process at once

            if log_due:
                dt = time.perf_counter() - window_start
                tok_s = window_steps * tokens_per_step / dt
                mfu = flops_per_step * window_steps / dt / peak if peak else None
                eta = dt / window_steps * (end_step - step)
                entry = {"kind": "train", "step": step, "loss": loss.item(), "lr": lr, "tokens_per_s": tok_s,
                         "mfu": mfu, "elapsed_s": elapsed()}
                losses.append(entry["loss"])
                record(entry)
                say("step %d/%d | loss %.4f | lr %.2e | %s tok/s%s | ETA %s", step, end_step, entry["loss"], lr,
                    f"{tok_s:,.0f}", f" | MFU {100 * mfu:.1f}%" if mfu is not None else "", duration(eta))
                window_start, window_steps = time.perf_counter(), 0

            if eval_due or stopping or step == end_step:
                paused = time.perf_counter()
                val_loss = None
                if eval_due:
                    if d.is_main:
                        train_loss = evaluate(raw_model, eval_sets["train"], mixed_precision, device)
                        val_loss = evaluate(raw_model, eval_sets["val"], mixed_precision, device)
                    result = torch.tensor([val_loss if d.is_main else 0.0], device=device)
                    if d.world_size > 1:  # every process learns whether the weights are still good
                        dist.broadcast(result, src=0)
                    if not math.isfinite(result.item()):
                        raise diverged("the validation loss")
                    if d.is_main:
                        best_val = min(best_val, val_loss)
                        record({"kind": "eval", "step": step, "train_loss": train_loss, "val_loss": val_loss,
                                "elapsed_s": elapsed()})
                        say("eval at step %d: train loss %.4f, val loss %.4f (best %.4f)", step, train_loss,
                            val_loss, best_val)
                save(step, val_loss)
                window_start += time.perf_counter() - paused  # evaluating and saving are not training time
            if stopping:
                say("%s received: saved step %d to %s. Continue with: python train.py resume=%s",
                    stop.received or "a stop", step, ckpt_dir, run_dir)
                break
            progress.update(step, f"loss {losses[-1]:.4f}" if losses else "")

    progress.clear()
    if metrics_file is not None:
        metrics_file.close()
    if wandb_run is not None:
        wandb_run.finish()
    say("done: step %d, val loss %s, %s", step, f"{val_loss:.4f}" if val_loss is not None else "n/a",
        duration(elapsed()))
    return {"step": step, "val_loss": val_loss, "best_val_loss": best_val, "losses": losses,
            "elapsed_s": elapsed(), "interrupted": stop.received}


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def run_dir_resolver(resume: Optional[str], fresh: str) -> str:
    """hydra.run.dir: a resumed run goes on in its own folder; anything else gets a fresh one."""
    if resume:
        path = Path(resume).expanduser()
        if path.is_dir():
            return str(path)
        if path.parent.name == "checkpoints":  # RUN_DIR/checkpoints/last.pt
            return str(path.parent.parent)
    return fresh


def hydra_subdir_resolver(resume: Optional[str], stamp: str) -> str:
    """Hydra's own copy of the config: a resumed run keeps the original's and adds its own."""
    return f".hydra/resumed-{stamp}" if resume else ".hydra"


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    OmegaConf.register_new_resolver("ropegpt_run_dir", run_dir_resolver, replace=True)
    OmegaConf.register_new_resolver("ropegpt_hydra_subdir", hydra_subdir_resolver, replace=True)

    def run(cfg: DictConfig, overrides: list[str], run_dir: Optional[Path]) -> None:
        try:
            train(apply_resume(cfg, overrides), run_dir)
        except (TrainError, DataError, CheckpointError, DeviceError) as e:
            logging.getLogger("train").error("error: %s", e)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    if int(os.environ.get("RANK", "0")) > 0:
        # Other torchrun processes: the same config, but no run directory (rank 0 has the only one)
        logging.basicConfig(level=logging.WARNING)
        overrides = [o for o in sys.argv[1:] if not o.startswith("hydra.")]
        run(compose_config(overrides, resume=False), overrides, None)
        return

    @hydra.main(version_base="1.3", config_path="configs", config_name="train")
    def hydra_main(cfg: DictConfig) -> None:
        hc = HydraConfig.get()
        run(cfg, list(hc.overrides.task), Path(hc.runtime.output_dir))

    hydra_main()


if __name__ == "__main__":
    main()
