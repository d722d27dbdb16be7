"""Train a GPT on a prepared dataset.

    python train.py                                       # the GPU recipe (nanoGPT's baby GPT)
    python train.py experiment=shakespeare_char_cpu       # the CPU recipe, 1.3-2.5 min on 2 cores
    python train.py resume=outputs/2026-11-22/06-00-00    # continue a run exactly
    python train.py init_from=models/SmolLM2-135M data=text data.path=my.txt data.tokenizer=hf:models/SmolLM2-135M
                                                          # fine-tune a Hugging Face Llama model on your text
    torchrun --nproc_per_node=2 train.py ...              # data-parallel on 2 processes

Read it in the order it runs: the settings (every knob with its default: the GPU recipe, whose model
and data come from configs/model/small.yaml and configs/data/shakespeare_char.yaml);
`train` and its `loop`, whose first lines are the training step and whose other lines call the run's
operations by name (components in training/: monitor, guard, validator, checkpointer); the pieces of
the step; then `setup`, which builds the run and checks everything before it writes anything. Under
torchrun every process runs the same code; only rank 0 writes files, logs and talks to wandb.
"""

import gc
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from data.config import DataConfig
from data.loader import BatchSampler, fixed_batches
from model.gpt import GPT, GPTConfig, pad_vocab
from runtime import checkpoint, devices, parallel, processes
from runtime.config import require, run_command
from runtime.processes import STOP_EXIT_CODES
from runtime.optimizers import Muon, Optimizers
from runtime.runlog import NullRunLog, RunLog, duration
from runtime.threads import Threads
from training import TrainError, corpus, pretrained, resume, run_folder
from training.checkpointer import Checkpointer
from training.guard import Guard, out_of_memory
from training.monitor import Monitor
from training.state import TrainState
from training.sweep import run_sweep
from training.validator import Validator

# ------------------------------------------------------------------------------------------------
# Settings: every knob, with its default. Groups (model=, data=, experiment=) come from configs/.
# ------------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw; or muon: Muon for the blocks' matrices, AdamW (at lr) for the rest
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    min_lr: float = 1e-4  # the cosine decay ends here at max_steps
    warmup_steps: int = 100  # linear warm-up from 0 to lr over these first steps
    weight_decay: float = 0.1  # on matrices only, not on norm scales
    beta1: float = 0.9  # AdamW's decay of its gradient average (momentum)
    beta2: float = 0.99  # AdamW's decay of its squared-gradient average (0.99: small models, short runs)
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
    project: str = "ropegpt"  # the wandb project the run is logged under
    name: Optional[str] = None  # the run's name; None: the run folder's name


@dataclass
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)  # configs/model/ (the GPU recipe: small); vocab from the data
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
    threads: Optional[int] = None  # CPU threads of each process; None: as many as other programs leave cores free
    seed: int = 1337  # initial weights, dropout and batch order; the same seed on the same machine repeats a run
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
                 (devices.DEVICE.fullmatch(self.device) is not None,
                  f"device={self.device!r} must be auto, cpu, cuda, cuda:N or mps"),
                 (self.dtype in devices.DTYPE_NAMES,
                  f"dtype={self.dtype!r} must be one of {', '.join(devices.DTYPE_NAMES)}"),
                 (not (self.fsdp and self.optim.name == "muon"), "optim.name=muon with fsdp=true: Muon "
                  "orthogonalises whole matrices and FSDP shards them; use DDP (fsdp=false) or optim.name=adamw")])


# ------------------------------------------------------------------------------------------------
# The loop: the training step first, then the operations around it
# ------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, overrides: Sequence[str] = ()) -> dict:
    """Train as cfg says. overrides: the command line's key=value list, which resume= applies on top of
    the checkpoint's config. Returns a summary (steps, losses, seconds)."""
    run = setup(cfg, overrides)
    try:
        compile_now(run)
        with run.guard:  # Ctrl-C or SIGTERM: finish the step, save, stop
            summary = loop(run)
    except torch.OutOfMemoryError as e:  # one line that says what to lower, not a traceback
        run.close(failure="out of memory")
        raise out_of_memory(run.cfg, run.state, e, run.validator.out_dir) from None
    except BaseException as e:
        run.close(failure=str(e) or type(e).__name__)  # train.log says why the run stopped
        raise
    run.close()
    return summary


def loop(run: "Run") -> dict:
    cfg, state = run.cfg, run.state  # state.step: optimizer steps so far
    val_loss = None
    state.model.train()
    run.monitor.start()  # tokens/s and the ETA count from here: setup and compiling are not training
    while state.step < run.end_step:
        # the training step (run.model: the model as called, maybe wrapped and compiled; state.model: itself)
        lr = lr_at(state.step, cfg.optim, cfg.max_steps)
        for group in state.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_ratio", 1.0)
        loss = forward_backward(run.model, run.micro_batches(), run.precision, state.scaler)
        grad_norm = optimizer_step(state.model, state.optimizer, state.scaler, cfg.optim.grad_clip)
        state.step += 1

        # operations, each a named component a reader can skip (training/)
        run.monitor.step_done()
        run.guard.watch(loss, grad_norm)
        log_now, evaluating = run.monitor.should_log(state.step), run.validator.should_validate(state.step)
        stopping = run.guard.should_stop(due=log_now or evaluating)  # the processes sync at these steps anyway
        if log_now:
            run.monitor.log_step(loss, lr)
        if evaluating or stopping or state.step == run.end_step:  # save at each evaluation, a stop, the end
            with run.monitor.pause(evaluating):
                val_loss, best = run.validator.validate() if evaluating else (None, False)
                run.checkpointer.save(val_loss, best)
                if evaluating:
                    run.validator.draw_loss_png()
        if stopping:
            run.guard.say_how_to_resume()
            break
        if evaluating and run.validator.out_of_patience():
            break
        run.monitor.progress()

    run.monitor.finished(val_loss, stopped_by=run.guard.stop.received)
    return {"step": state.step, "val_loss": val_loss, "best_val_loss": state.best_val_loss,
            "losses": run.monitor.losses, "elapsed_s": state.elapsed(), "interrupted": run.guard.stop.received}


# ------------------------------------------------------------------------------------------------
# The pieces of one training step
# ------------------------------------------------------------------------------------------------


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
    gradient of one batch of k*b. Under DDP or FSDP the gradients are averaged over the processes only
    in the last backward pass (`gradient_sync`).
    """
    n, total = len(micro_batches), 0.0
    for i, (x, y) in enumerate(micro_batches):
        with parallel.gradient_sync(model, sync=i == n - 1):
            with precision():  # a fresh autocast context (or nullcontext) per micro-batch
                _, loss = model(x, y)
            loss = loss / n
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total = total + loss.detach()
    return total


def optimizer_step(model: GPT, optimizer: torch.optim.Optimizer | Optimizers, scaler: Optional[torch.amp.GradScaler],
                   grad_clip: float) -> Optional[torch.Tensor]:
    """Clip the gradient's global norm, step, zero the gradients; return the norm (None: no clipping).

    With fp16 the scaler first unscales the gradients, and skips the step if any is inf or nan.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = parallel.whole(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)) if grad_clip > 0 else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# ------------------------------------------------------------------------------------------------
# Setup: a run's state and its operations, every check before anything is written
# ------------------------------------------------------------------------------------------------


def build_optimizer(model: torch.nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.Optimizer | Optimizers:
    """AdamW with weight decay on the matrices (embedding included) and none on the norm scales.

    With name=muon, the blocks' matrices (W_Q, W_K, W_V, W_O and the MLP's) go to Muon instead: momentum,
    then each update matrix orthogonalised (Newton-Schulz: its singular values pushed towards 1), so
    every direction of a matrix learns at the same rate (Jordan et al. 2024, as in modded-nanogpt and
    nanochat); in bf16 where the device has it natively, in fp32 elsewhere (runtime/optimizers.py). The
    embedding, the LM head and the norm scales stay with AdamW. Each param group's lr_ratio is its peak
    learning rate over optim.lr: the loop's schedule scales every group alike.
    """
    to_muon = {n: o.name == "muon" and n.startswith("blocks.") and p.dim() == 2 for n, p in model.named_parameters()}
    hidden = [p for n, p in model.named_parameters() if to_muon[n]]  # a tied weight appears once
    rest = [p for n, p in model.named_parameters() if not to_muon[n]]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    fused = device.type in devices.fused_adamw_devices()
    adamw = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), fused=fused)
    if not hidden:
        return adamw
    muon = Muon(hidden, devices.fast_matmul_dtype(device), lr=o.muon_lr, weight_decay=o.weight_decay,
                momentum=o.muon_momentum)  # its Newton-Schulz in bf16 where bf16 is native, else in fp32
    muon.param_groups[0]["lr_ratio"] = o.muon_lr / o.lr if o.lr > 0 else 0.0
    return Optimizers(adamw, muon)



@dataclass
class Run:
    """Everything the loop touches, built once by `setup`."""

    cfg: TrainConfig
    model: torch.nn.Module  # what the loop calls: state.model in DDP (or sharded in place by FSDP), compiled
    state: TrainState  # the model itself, optimizer, scaler, sampler, the loop's progress: what a checkpoint holds
    precision: Callable  # a fresh autocast context (or nullcontext) for the run's dtype
    accum_steps: int  # micro-batches per optimizer step in each process
    end_step: int  # max_steps, or stop_step when it comes first
    log: RunLog  # a NullRunLog off rank 0
    monitor: Monitor
    guard: Guard
    validator: Validator
    checkpointer: Checkpointer
    torch_settings: Optional[devices.TorchSettings] = None  # what the run changed in torch: close() puts it back

    def micro_batches(self) -> list:
        return [self.state.sampler.next_batch() for _ in range(self.accum_steps)]

    def close(self, failure: Optional[str] = None) -> None:
        """Close the log; then drop everything that holds the process group (DDP's reducer, FSDP's
        modules) before the group itself is destroyed. In the other order the group's destructor runs
        later, holding the GIL, and waits for its own worker thread, which waits for the GIL: a hang."""
        self.log.close(failure)
        self.torch_settings.restore()
        self.model = self.state.model = self.state.optimizer = self.validator.model = self.monitor.model = None
        gc.collect()
        self.state.procs.close()


def setup(cfg: TrainConfig, overrides: Sequence[str] = ()) -> Run:
    """Everything a run needs. The checkpoint (with resume=) is read once, and every check comes before
    the run folder is created, so a refused command writes nothing (data preparation aside). A check
    that one process makes (rank 0: the run folder; each machine's first: the data) is shared, so all
    processes stop together with the same message. A failure puts torch's settings back."""
    started, saved, path = time.perf_counter(), None, None
    if cfg.resume:
        path = checkpoint.find_checkpoint(cfg.resume)
        saved = checkpoint.load_checkpoint(path)
        cfg = resume.resumed_config(cfg, overrides, saved)
    procs, device = processes.join_processes(cfg.device)
    before = devices.TorchSettings.apply(cfg.deterministic, threads=None)  # threads: chosen in build_run
    end_step = min(cfg.max_steps, cfg.stop_step) if cfg.stop_step else cfg.max_steps
    log = RunLog(end_step, cfg.progress) if procs.is_main else NullRunLog()
    try:
        run = build_run(cfg, overrides, saved, path, procs, device, log, end_step, started)
    except BaseException as e:
        log.close(failure=str(e) or type(e).__name__)  # the process group, if any, is left to the exit
        before.restore()
        raise
    run.torch_settings = before
    return run


def build_run(cfg: TrainConfig, overrides: Sequence[str], saved: Optional[dict], path: Optional[Path],
              procs: processes.Processes, device: torch.device, log: RunLog, end_step: int, started: float) -> Run:
    """setup's checks and pieces, in order: the run folder's name, data, model, optimizer, batches, the
    saved state (saved: the checkpoint read from path), and last the run folder itself."""
    dtype = devices.resolve_dtype(cfg.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = True
    out_dir = procs.decide(lambda: run_folder.new_out_dir(cfg, path))  # chosen now, created last; None off rank 0
    procs.decide(lambda: run_folder.check_wandb(cfg))
    imported = None
    if cfg.init_from and saved is None:  # a resumed run has its weights in its checkpoint
        imported = pretrained.imported_model(cfg, overrides)  # checked before preparing data: a typo costs nothing
    data, data_dir, meta = corpus.prepare_data(cfg.data, procs, trained_on=saved["data_meta"] if saved else None)
    cfg = replace(cfg, data=data, model=imported or cfg.model)
    if imported is not None:
        pretrained.check_tokenizer(cfg, meta)
    micro, accum_steps = batch_geometry(cfg, procs)
    raw_model = build_model(cfg, meta, device, imported is not None)
    model = wrap(raw_model, cfg, device, procs)
    optimizer = build_optimizer(raw_model, cfg.optim, device)  # after sharding: on this process's shards
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None  # fp16 needs loss scaling
    torch.manual_seed(cfg.seed + procs.rank)  # dropout differs between processes
    block_size = raw_model.config.block_size
    sampler = BatchSampler(data_dir, "train", block_size, micro, cfg.seed + procs.rank, device, meta)
    eval_sets = {split: fixed_batches(data_dir, split, block_size, micro, cfg.eval_batches, device=device)
                 for split in ("train", "val")}  # on the device once: no copy of them at each evaluation
    state = TrainState(cfg, raw_model, optimizer, scaler, sampler, procs, device, meta, started)
    if saved is not None:
        state.load_state_dict(saved)
    procs.decide(lambda: run_folder.open_run_folder(cfg, out_dir, state, log, resumed=saved is not None))
    precision = partial(devices.autocast, device, dtype)
    threads = Threads(device, cfg.threads, log.info, fixed=cfg.deterministic)
    threads.choose()  # on a CPU, after every check: the cores other programs leave free (runtime/threads.py)
    validator = Validator(cfg, raw_model, eval_sets, precision, state, log, out_dir, end_step)
    monitor = Monitor(cfg, raw_model, state, validator, log, end_step, accum_steps, threads)
    monitor.announce(out_dir, path, dtype)
    return Run(cfg=cfg, model=model, state=state, precision=precision, accum_steps=accum_steps, end_step=end_step,
               log=log, monitor=monitor, validator=validator, checkpointer=Checkpointer(state, out_dir),
               guard=Guard(state, log, out_dir, fp16=scaler is not None))


def batch_geometry(cfg: TrainConfig, procs: processes.Processes) -> tuple[int, int]:
    """(sequences per forward pass, micro-batches per step) in each process. The tokens per optimizer
    step are batch_size * block_size whatever the number of processes."""
    if cfg.batch_size % procs.world_size:
        raise TrainError(f"batch_size={cfg.batch_size} must be divisible by the {procs.world_size} processes")
    per_process = cfg.batch_size // procs.world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise TrainError(f"micro_batch_size={micro} must divide batch_size / processes = {per_process}")
    return micro, per_process // micro


def build_model(cfg: TrainConfig, meta: dict, device: torch.device, pretrained_weights: bool = False) -> GPT:
    """The model: its vocabulary from the data (an imported one's is its own, maybe larger), the same
    initial weights in every process; pretrained_weights: the init_from folder's weights instead."""
    vocab = cfg.model.vocab_size if cfg.init_from else meta["vocab_size"]
    if not cfg.init_from and cfg.model.vocab_size not in (None, vocab):
        raise TrainError(f"model.vocab_size={cfg.model.vocab_size} disagrees with the data's vocabulary of "
                         f"{vocab}: leave it unset, it comes from the data")
    torch.manual_seed(cfg.seed)
    padded = cfg.model.padded_vocab or (None if cfg.init_from else pad_vocab(vocab))  # an import keeps its own
    model = GPT(GPTConfig(**{**asdict(cfg.model), "vocab_size": vocab, "padded_vocab": padded}))
    if pretrained_weights:
        pretrained.load_weights(model, cfg)
    return model.to(device)


def wrap(model: GPT, cfg: TrainConfig, device: torch.device, procs: processes.Processes) -> torch.nn.Module:
    """What the loop calls: the model sharded in place, each block compiled before (fsdp=true), or in DDP
    under torchrun, then compiled (DDP inside, as torch recommends: the compiler splits the graph where DDP
    communicates)."""
    if procs.world_size > 1 and cfg.fsdp:  # model's parameters become this process's shards: the optimizer comes after
        bf16 = device.type == "cuda" and devices.resolve_dtype(cfg.dtype, device) == torch.bfloat16
        return parallel.shard(model, compile_blocks=cfg.compile, param_dtype=torch.bfloat16 if bf16 else None)
    if procs.world_size > 1 and not cfg.fsdp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    gradient_as_bucket_view=True)  # gradients live in DDP's buckets: no copy in and out
    return torch.compile(model) if cfg.compile else model


def compile_now(run: Run) -> None:
    """With compile=true, compile before the first step instead of during it: one training forward and
    backward on an evaluation batch, with the random state put back and the gradients cleared, so the
    run is the same as without this. Its time is reported apart (the loop's clock starts after it).
    Evaluation runs the model uncompiled. If the compiler fails (no C++ toolchain, an unsupported GPU),
    every process goes on eagerly."""
    if not run.cfg.compile:
        return
    started, error, device = time.perf_counter(), None, run.state.device
    x, y = run.validator.eval_sets["train"][0]
    batch = run.state.sampler.on_device(torch.cat([x, y[:, -1:]], dim=1).cpu())  # the loop's strides: one graph
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            forward_backward(run.model, [batch], run.precision, run.state.scaler)
    except torch._dynamo.exc.TorchDynamoException as e:
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    finally:
        run.state.optimizer.zero_grad(set_to_none=True)
    errors = [e for e in run.state.procs.gather(error) if e is not None]  # every process decides alike
    if errors:
        run.model = parallel.uncompiled(run.model)  # the DDP, FSDP or plain model, eager
        torch._dynamo.reset()
        run.log.warning("torch.compile failed (%s): training eagerly; compile=false skips the attempt", errors[0])
    else:
        run.log.info("compiled in %s (the training step's graphs)", duration(time.perf_counter() - started))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python train.py key=value ...` (argv: those items; None reads sys.argv); `-m`: a sweep of runs."""
    summary = run_command("train", TrainConfig, train, argv, sweep=run_sweep)
    if isinstance(summary, dict) and summary["interrupted"]:  # stopped, not finished: scripts and sweeps can tell
        sys.exit(STOP_EXIT_CODES[summary["interrupted"]])  # 130 after SIGINT, 143 after SIGTERM, as shells say


if __name__ == "__main__":
    main()
