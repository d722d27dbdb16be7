"""Evaluation: the mean loss on fixed batches of both splits, at every eval_interval and at max_steps."""

import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from model.gpt import GPT
from runtime.plots import plot_losses, read_metrics
from runtime.runlog import RunLog, duration
from training.guard import diverged
from training.monitor import Monitor
from training.state import TrainState

LONG_EVAL_S = 30.0  # an evaluation expected to take longer is announced, with its expected duration


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list, precision: Callable, device: torch.device,
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


class Validator:
    """Evaluates on the same fixed batches every time (so losses compare across evaluations and resumes),
    keeps the best val loss and the count of evaluations without a better one, logs both losses, and
    redraws loss.png. Every process evaluates (under FSDP each forward needs them all) and takes rank
    0's verdict on whether the loss is finite."""

    def __init__(self, cfg, model: GPT, eval_sets: dict, precision: Callable, state: TrainState, log: RunLog,
                 monitor: Monitor, out_dir: Optional[Path]):
        self.cfg, self.model, self.eval_sets, self.precision = cfg, model, eval_sets, precision
        self.state, self.log, self.monitor, self.out_dir = state, log, monitor, out_dir

    def should_validate(self, step: int) -> bool:
        return step % self.cfg.eval_interval == 0 or step == self.cfg.max_steps  # the same steps when resumed

    def validate(self) -> float:
        """Train and val loss, logged; a long evaluation says so first and moves the progress bar."""
        started, loop, n = time.perf_counter(), self.state.loop, self.cfg.eval_batches
        expected = self.monitor.eval_seconds(self.monitor.step_seconds())
        if expected > LONG_EVAL_S:
            self.log.info("evaluating at step %d: 2 x %d batches, about %s", loop.step, n, duration(expected))
        losses = {}
        for i, split in enumerate(("train", "val")):
            shown = lambda done: self.log.progress(loop.step, f"evaluating {i * n + done}/{2 * n}")  # noqa: E731
            losses[split] = evaluate(self.model, self.eval_sets[split], self.precision, self.state.device, shown)
        train_loss, val_loss = losses["train"], losses["val"]
        val_loss = self.state.procs.from_main(torch.tensor([val_loss], device=self.state.device)).item()
        if not math.isfinite(val_loss):
            raise diverged(self.out_dir, loop.step, "the validation loss")
        loop.evals_since_best = 0 if val_loss < loop.best_val_loss else loop.evals_since_best + 1
        loop.best_val_loss = min(loop.best_val_loss, val_loss)
        self.log.record({"kind": "eval", "step": loop.step, "train_loss": train_loss, "val_loss": val_loss,
                         "elapsed_s": self.state.elapsed()})
        self.log.info("eval at step %d: train loss %.4f, val loss %.4f (best %.4f)", loop.step, train_loss, val_loss,
                      loop.best_val_loss)
        self.monitor.last_eval_s = time.perf_counter() - started
        return val_loss

    def draw(self) -> None:
        """Rank 0: loss.png in the run folder, from metrics.jsonl (so a resumed run's picture covers it all),
        written under a temporary name and renamed, so a viewer never sees half a picture. A picture that
        cannot be drawn costs one warning, never the run."""
        if self.out_dir is None or not self.cfg.plot:
            return
        partial = self.out_dir / ".loss.png.partial"
        try:
            plot_losses([(self.out_dir.name, read_metrics(self.out_dir))], partial,
                        title=f"{self.out_dir}: {self.cfg.data.name}, {self.model.num_params():,} parameters")
            os.replace(partial, self.out_dir / "loss.png")
        except (ImportError, OSError, ValueError, RuntimeError) as e:
            self.log.warning("could not draw loss.png (%s); training goes on, and plot.py can draw it later", e)
            partial.unlink(missing_ok=True)
