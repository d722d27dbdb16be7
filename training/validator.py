"""Evaluation: the mean loss on fixed batches of both splits and its bits per byte, when it is due, what it
logs, the best val loss and patience, and loss.png.

Bits per byte compare runs whatever their tokenizers. A loss of L nats per token, over batches whose
target tokens stand for B bytes of UTF-8 text in N tokens, is a code of L N / ln 2 bits for those B
bytes: bpb = L N / (B ln 2). A character model's text of one byte per character has bpb = L / ln 2; a
BPE of 2.26 bytes per token and the same bpb has a loss 2.26 times as high. <|endoftext|> stands for
no bytes, but what it costs to predict counts: it is part of the text's code."""

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from data.tokenizers import tokenizer_from_meta
from model.gpt import GPT
from runtime.files import writing
from runtime.plots import plot_losses, read_metrics
from runtime.runlog import RunLog, after_full_disk
from training.guard import diverged
from training.state import TrainState

PICTURE_BYTES = 100_000  # about the size of a first loss.png (1200 x 450 pixels); later ones replace it


def tokens_per_byte(batches: list, lengths) -> Optional[float]:
    """Target tokens per UTF-8 byte of text they stand for, over batches; None if they stand for none."""
    tokens = sum(y.numel() for _, y in batches)
    n_bytes = sum(int(lengths[y.cpu().numpy()].sum()) for _, y in batches)
    return tokens / n_bytes if n_bytes else None


def bpb_text(bpb: Optional[float]) -> str:
    return f"{bpb:.3f}" if bpb is not None else "n/a"


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
    """Evaluates at every eval_interval and at max_steps, on the same fixed batches every time (so losses
    compare across evaluations and resumes). It keeps the state's best val loss and the count of
    evaluations since it improved, and stops the run when that count reaches patience. Every process
    evaluates (under FSDP each forward needs them all) and takes rank 0's verdict on whether the loss
    is finite."""

    def __init__(self, cfg: Any, model: GPT, eval_sets: dict, precision: Callable, state: TrainState, log: RunLog,
                 out_dir: Optional[Path], end_step: int):
        self.cfg, self.model, self.eval_sets, self.precision = cfg, model, eval_sets, precision
        self.state, self.log, self.out_dir, self.end_step = state, log, out_dir, end_step
        self.last_seconds: Optional[float] = None  # how long the last evaluation took
        lengths = tokenizer_from_meta(state.meta).byte_lengths()  # (vocab,) each token's UTF-8 bytes
        self.tokens_per_byte = {split: tokens_per_byte(batches, lengths) for split, batches in eval_sets.items()}

    def should_validate(self, step: int) -> bool:
        return step % self.cfg.eval_interval == 0 or step == self.cfg.max_steps  # the same steps when resumed

    def evals_left(self, step: int) -> int:
        """Evaluations after `step`, up to this command's last step: the steps should_validate picks."""
        interval, max_steps = self.cfg.eval_interval, self.cfg.max_steps
        n = self.end_step // interval - step // interval
        return n + int(step < self.end_step == max_steps and max_steps % interval != 0)

    def validate(self) -> tuple[float, bool]:
        """Train and val loss on the fixed batches, logged; returns the val loss and whether it is the best
        so far (strictly better than every evaluation before). A long one moves the progress bar."""
        started, state, n = time.perf_counter(), self.state, self.cfg.eval_batches
        losses = {}
        for i, split in enumerate(("train", "val")):
            shown = lambda done: self.log.progress(state.step, f"evaluating {i * n + done}/{2 * n}")  # noqa: E731
            losses[split] = evaluate(self.model, self.eval_sets[split], self.precision, state.device, shown)
        train_loss, val_loss = losses["train"], losses["val"]
        val_loss = state.procs.from_main(torch.tensor([val_loss], device=state.device)).item()
        if not math.isfinite(val_loss):
            raise diverged(self.out_dir, state.step, "the validation loss")
        best = val_loss < state.best_val_loss
        state.evals_since_best = 0 if best else state.evals_since_best + 1
        state.best_val_loss = min(state.best_val_loss, val_loss)
        train_bpb, val_bpb = self.bpb(train_loss, "train"), self.bpb(val_loss)
        self.log.record({"kind": "eval", "step": state.step, "train_loss": train_loss, "val_loss": val_loss,
                         "train_bpb": train_bpb, "val_bpb": val_bpb, "elapsed_s": state.elapsed()})
        self.log.info("eval at step %d: train loss %.4f, val loss %.4f (best %.4f); bits per byte: train %s, val %s "
                      "(best %s)", state.step, train_loss, val_loss, state.best_val_loss, bpb_text(train_bpb),
                      bpb_text(val_bpb), bpb_text(self.bpb(state.best_val_loss)))
        self.last_seconds = time.perf_counter() - started
        return val_loss, best

    def bpb(self, loss: float, split: str = "val") -> Optional[float]:
        """loss (nats per token of split's fixed batches) in bits per byte of their text; None without bytes."""
        ratio = self.tokens_per_byte[split]
        return loss * ratio / math.log(2) if ratio is not None and math.isfinite(loss) else None

    def out_of_patience(self) -> bool:
        """With patience=N: whether the last N evaluations all failed to improve the val loss (then say so).
        Never at the last step: the run ends there anyway."""
        n, state = self.cfg.patience, self.state
        if n is None or state.evals_since_best < n or state.step >= self.end_step:
            return False
        self.log.info("val loss has not improved for %d evaluations (patience=%d): stopping early at step %d. "
                      "checkpoints/best.pt holds the best (val %.4f)", state.evals_since_best, n, state.step,
                      state.best_val_loss)
        return True

    def draw_loss_png(self) -> None:
        """Rank 0: loss.png in the run folder, from metrics.jsonl (so a resumed run's picture covers it all),
        written under a temporary name and renamed, so a viewer never sees half a picture. A picture that
        cannot be drawn costs one warning, never the run; a full disk stops it (DiskFullError: one line)
        right after the checkpoint this evaluation saved, before it fails a later one."""
        if self.out_dir is None or not self.cfg.plot:
            return
        partial, picture = self.out_dir / ".loss.png.partial", self.out_dir / "loss.png"
        needed = picture.stat().st_size if picture.exists() else PICTURE_BYTES
        then = after_full_disk(self.out_dir, f"its checkpoint of step {self.state.step}")  # saved just before
        try:
            with writing(self.out_dir, "drawing loss.png", needed, then):
                try:
                    title = f"{self.out_dir}: {self.cfg.data.name}, {self.model.num_params():,} parameters"
                    plot_losses([(self.out_dir.name, read_metrics(self.out_dir))], partial, title=title)
                    os.replace(partial, picture)
                finally:
                    partial.unlink(missing_ok=True)  # what a failed drawing left (nothing after the rename)
        except (ImportError, OSError, ValueError, RuntimeError) as e:
            self.log.warning("could not draw loss.png (%s); training goes on, and plot.py can draw it later", e)
