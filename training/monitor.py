"""What a run tells its user as it trains: what it is, speed, MFU and ETA on a log line, and hints when
they help."""

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch

from model.gpt import GPT
from runtime.devices import emulated_bf16_warning, peak_flops
from runtime.runlog import RunLog, duration
from runtime.threads import Threads
from training.state import TrainState
from training.validator import Validator

SLOWDOWN = 3.0  # a fall in speed this large is another program at work, not this machine's ±20% noise
LONG_EVAL_S = 30.0  # an evaluation expected to take longer is announced, with its expected duration


class Monitor:
    """Training speed over the steps since the last log line (time inside `pause()` does not count),
    the best speed seen (to notice when the machine slows down), the ETA (steps and evaluations left),
    and the train losses logged. Its log steps: every log_interval, and the last."""

    def __init__(self, cfg: Any, model: GPT, state: TrainState, validator: Validator, log: RunLog, end_step: int,
                 accum_steps: int, threads: Optional[Threads] = None):
        self.cfg, self.model, self.state, self.validator, self.log = cfg, model, state, validator, log
        # on a CPU, checked every few seconds: fewer threads while other programs run (a Threads never chosen,
        # the default, never changes anything)
        self.threads = threads or Threads(state.device, None, say=lambda line: None)
        self.end_step, self.accum_steps = end_step, accum_steps
        self.best_tok_s, self.warned, self.logged_step_s = 0.0, False, None
        self.losses: list[float] = []
        self.hint_pending = state.device.type != "cuda" and cfg.suggest_cpu_recipe
        self.start()

    def start(self) -> None:
        """Start the clock: no steps timed yet."""
        self.started, self.steps = time.perf_counter(), 0

    def step_done(self) -> None:
        """Count a step; two steps into a GPU recipe without CUDA, say how long it would take."""
        self.steps += 1
        self.threads.check()
        if self.hint_pending and self.steps == 2:
            self.hint_pending = False
            if self.state.step < self.end_step:
                self.log.info("At this speed the %d steps would take about %s. The CPU recipe trains a good model "
                              "in about 80 seconds: python train.py experiment=shakespeare_char_cpu", self.end_step,
                              duration(self.eta(self.seconds() / 2)))

    def should_log(self, step: int) -> bool:
        return step % self.cfg.log_interval == 0 or step == self.end_step

    def log_step(self, loss: torch.Tensor, lr: float) -> None:
        """A log line and a metrics entry: loss (averaged over processes), lr, tokens/s, MFU, ETA."""
        procs, m, step = self.state.procs, self.model.config, self.state.step
        loss = procs.mean(loss).item()
        tok_s = self.steps * self.cfg.batch_size * m.block_size / self.seconds()
        peak = peak_flops(self.state.device, self.cfg.peak_flops)
        mfu = self.model.flops_per_token(m.block_size) * tok_s / (peak * procs.world_size) if peak else None
        self.log.record({"kind": "train", "step": step, "loss": loss, "lr": lr, "tokens_per_s": tok_s, "mfu": mfu,
                         "elapsed_s": self.state.elapsed()})
        self.log.info("step %d/%d | loss %.4f | lr %.2e | %s tok/s%s | ETA %s", step, self.end_step, loss, lr,
                      f"{tok_s:,.0f}", f" | MFU {100 * mfu:.1f}%" if mfu is not None else "",
                      duration(self.eta(self.step_seconds())))
        self.notice_slowdown(tok_s)
        self.losses.append(loss)
        self.logged_step_s = self.step_seconds()
        self.start()

    def progress(self) -> None:
        self.log.progress(self.state.step, f"loss {self.losses[-1]:.4f}" if self.losses else "")

    @contextmanager
    def pause(self, evaluating: bool = False):
        """Time spent inside (evaluating, saving) is not training time. An evaluation expected to take
        longer than LONG_EVAL_S is announced first, with its expected duration."""
        expected = self.eval_seconds(self.step_seconds())
        if evaluating and expected > LONG_EVAL_S:
            self.log.info("evaluating at step %d: 2 x %d batches, about %s", self.state.step, self.cfg.eval_batches,
                          duration(expected))
        t = time.perf_counter()
        yield
        self.started += time.perf_counter() - t

    # -- the numbers behind the log line ----------------------------------------------------------

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def step_seconds(self) -> float:
        """Seconds per step: over the steps since the last log line (at the last log line, if none since)."""
        return self.seconds() / self.steps if self.steps else self.logged_step_s or 0.0

    def eval_seconds(self, step_seconds: float) -> float:
        """How long an evaluation takes: as long as the last one did; before the first, its 2 * eval_batches
        forward passes at a third of a training micro-batch's forward and backward each."""
        if self.validator.last_seconds is not None:
            return self.validator.last_seconds
        return step_seconds / self.accum_steps / 3 * 2 * self.cfg.eval_batches

    def eta(self, step_seconds: float) -> float:
        """Seconds to end_step: the steps left, and the evaluations left."""
        step = self.state.step
        return step_seconds * (self.end_step - step) + self.eval_seconds(step_seconds) * self.validator.evals_left(step)

    def notice_slowdown(self, tok_s: float) -> None:
        """Once per run: a hint when training runs SLOWDOWN times slower than its best so far. On a CPU the
        usual cause is another program on the same cores, which slows both by far more than half."""
        if self.best_tok_s > SLOWDOWN * tok_s and not self.warned:
            where = ("the GPU (see nvidia-smi)" if self.state.device.type == "cuda" else
                     f"the {os.cpu_count()} CPU cores; stop it, or give this run fewer threads with threads=N (now "
                     f"{torch.get_num_threads()})")
            self.log.warning("training slowed to %s tok/s from %s (%.0fx): another program is probably using %s",
                             f"{tok_s:,.0f}", f"{self.best_tok_s:,.0f}", self.best_tok_s / tok_s, where)
            self.warned = True
        self.best_tok_s = max(self.best_tok_s, tok_s)

    def finished(self, val_loss: Optional[float], stopped_by: Optional[str]) -> None:
        """The run's last line: done after its last step; stopped after a stop signal, with the best val
        loss so far (the last evaluation may lie steps behind)."""
        if stopped_by:
            best = self.state.best_val_loss
            best_text = f"{best:.4f}{self.in_bpb(best)}" if best < float("inf") else "n/a: no evaluation yet"
            self.log.info("stopped at step %d by %s (best val loss %s), %s", self.state.step, stopped_by, best_text,
                          duration(self.state.elapsed()))
        else:
            self.log.info("done: step %d, val loss %s, %s", self.state.step,
                          f"{val_loss:.4f}{self.in_bpb(val_loss)}" if val_loss is not None else "n/a",
                          duration(self.state.elapsed()))

    def in_bpb(self, val_loss: float) -> str:
        bpb = self.validator.bpb(val_loss)
        return f", {bpb:.3f} bits per byte" if bpb is not None else ""

    def announce(self, out_dir: Optional[Path], resumed_from: Optional[Path], dtype: torch.dtype) -> None:
        """What this run is: its folder, model, data, device and batch."""
        cfg, m, log, procs = self.cfg, self.model.config, self.log, self.state.procs
        log.info("run folder: %s", out_dir)
        log.info("model: %s parameters (%d layers, %d heads, %d K/V heads, width %d, context %d); data: %s, %s "
                 "train tokens", f"{self.model.num_params():,}", m.n_layer, m.n_head, m.kv_heads, m.n_embd,
                 m.block_size, cfg.data.name, f"{self.state.meta['train_tokens']:,}")
        micro = cfg.batch_size // procs.world_size // self.accum_steps
        log.info("device %s, %s%s, %d process(es); %d sequences x %d tokens per step = %s of %d per process",
                 self.state.device, str(dtype).removeprefix("torch."), ", compiled" if cfg.compile else "",
                 procs.world_size, cfg.batch_size, m.block_size,
                 "1 micro-batch" if self.accum_steps == 1 else f"{self.accum_steps} micro-batches", micro)
        if (slow := emulated_bf16_warning(dtype, self.state.device)) is not None:
            log.warning("%s", slow)
        if resumed_from is not None:
            log.info("resumed from %s at step %d", resumed_from, self.state.step)
        elif cfg.init_from:
            log.info("weights from %s (a Hugging Face Llama folder), fresh optimizer", cfg.init_from)
        if self.state.device.type != "cuda" and cfg.suggest_cpu_recipe:
            log.info("No CUDA GPU: training on %s. This recipe is meant for a GPU; estimating its duration here "
                     "after two steps...", self.state.device.type)
