"""What a run tells its user as it trains: speed, MFU and ETA on a log line, and hints when they help."""

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch

from model.gpt import GPT
from runtime.devices import peak_flops
from runtime.processes import Processes
from runtime.runlog import RunLog, duration
from training.state import TrainState

SLOWDOWN = 3.0  # a fall in speed this large is another program at work, not this machine's ±20% noise


class Monitor:
    """Training speed over the steps since the last log line (evaluating and saving do not count: the loop
    pauses it), the best speed seen (to notice when the machine slows down), how long an evaluation
    takes (for the ETA), and the train losses logged. Its log steps: every log_interval, and the last."""

    def __init__(self, cfg: Any, model: GPT, state: TrainState, log: RunLog, end_step: int, accum_steps: int):
        self.cfg, self.model, self.state, self.log = cfg, model, state, log
        self.procs: Processes = state.procs
        self.end_step, self.accum_steps = end_step, accum_steps
        self.start, self.steps = time.perf_counter(), 0
        self.best_tok_s, self.warned, self.logged_step_s = 0.0, False, None
        self.last_eval_s: Optional[float] = None
        self.losses: list[float] = []
        self.hint_pending = state.device.type != "cuda" and cfg.suggest_cpu_recipe

    def tick(self) -> None:
        """A step is done; two steps into a GPU recipe without CUDA, say how long it would take."""
        self.steps += 1
        if self.hint_pending and self.steps == 2:
            self.hint_pending = False
            if self.state.loop.step < self.end_step:
                self.log.info("At this speed the %d steps would take about %s. The CPU recipe trains a good model "
                              "in about 80 seconds: python train.py experiment=shakespeare_char_cpu", self.end_step,
                              duration(self.eta(self.seconds() / 2)))

    def should_log(self, step: int) -> bool:
        return step % self.cfg.log_interval == 0 or step == self.end_step

    def log_step(self, loss: torch.Tensor, lr: float) -> None:
        """A log line and a metrics entry: loss (averaged over processes), lr, tokens/s, MFU, ETA."""
        loss, step, m = self.procs.mean(loss).item(), self.state.loop.step, self.model.config
        tok_s = self.steps * self.cfg.batch_size * m.block_size / self.seconds()
        peak = peak_flops(self.state.device, self.cfg.peak_flops)
        mfu = self.model.flops_per_token(m.block_size) * tok_s / (peak * self.procs.world_size) if peak else None
        self.log.record({"kind": "train", "step": step, "loss": loss, "lr": lr, "tokens_per_s": tok_s, "mfu": mfu,
                         "elapsed_s": self.state.elapsed()})
        self.log.info("step %d/%d | loss %.4f | lr %.2e | %s tok/s%s | ETA %s", step, self.end_step, loss, lr,
                      f"{tok_s:,.0f}", f" | MFU {100 * mfu:.1f}%" if mfu is not None else "",
                      duration(self.eta(self.step_seconds())))
        self.notice_slowdown(tok_s)
        self.losses.append(loss)
        self.logged_step_s, self.start, self.steps = self.step_seconds(), time.perf_counter(), 0

    def progress(self) -> None:
        self.log.progress(self.state.loop.step, f"loss {self.losses[-1]:.4f}" if self.losses else "")

    @contextmanager
    def paused(self):
        """Time spent inside does not count as training."""
        t = time.perf_counter()
        yield
        self.start += time.perf_counter() - t

    # -- the numbers behind the log line ----------------------------------------------------------

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def step_seconds(self) -> float:
        """Seconds per step: over the steps since the last log line (at the last log line, if none since)."""
        return self.seconds() / self.steps if self.steps else self.logged_step_s or 0.0

    def eval_seconds(self, step_seconds: float) -> float:
        """How long an evaluation takes: as long as the last one did; before the first, its 2 * eval_batches
        forward passes at a third of a training micro-batch's forward and backward each."""
        if self.last_eval_s is not None:
            return self.last_eval_s
        return step_seconds / self.accum_steps / 3 * 2 * self.cfg.eval_batches

    def eta(self, step_seconds: float) -> float:
        """Seconds to end_step: the steps left, and the evaluations left (at each multiple of eval_interval
        and at max_steps)."""
        cfg, step = self.cfg, self.state.loop.step
        evals = self.end_step // cfg.eval_interval - step // cfg.eval_interval
        evals += int(step < self.end_step == cfg.max_steps and cfg.max_steps % cfg.eval_interval != 0)
        return step_seconds * (self.end_step - step) + self.eval_seconds(step_seconds) * evals

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

    def announce(self, out_dir: Optional[Path], resumed_from: Optional[Path], dtype: torch.dtype) -> None:
        """What this run is: its folder, model, data, device and batch."""
        cfg, m, log = self.cfg, self.model.config, self.log
        log.info("run folder: %s", out_dir)
        log.info("model: %s parameters (%d layers, %d heads, %d K/V heads, width %d, context %d); data: %s, %s "
                 "train tokens", f"{self.model.num_params():,}", m.n_layer, m.n_head, m.kv_heads, m.n_embd,
                 m.block_size, cfg.data.name, f"{self.state.meta['train_tokens']:,}")
        log.info("device %s, %s%s, %d process(es); %d sequences x %d tokens per step = %d micro-batches of %d "
                 "per process", self.state.device, str(dtype).removeprefix("torch."),
                 ", compiled" if cfg.compile else "",
                 self.procs.world_size, cfg.batch_size, m.block_size, self.accum_steps,
                 cfg.batch_size // self.procs.world_size // self.accum_steps)
        if resumed_from is not None:
            log.info("resumed from %s at step %d", resumed_from, self.state.loop.step)
        elif cfg.init_from:
            log.info("weights from %s (a Hugging Face Llama folder), fresh optimizer", cfg.init_from)
        if self.state.device.type != "cuda" and cfg.suggest_cpu_recipe:
            log.info("No CUDA GPU: training on %s. This recipe is meant for a GPU; estimating its duration here "
                     "after two steps...", self.state.device.type)
