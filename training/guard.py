"""When a run must end early: a loss that diverged, a stop signal, or patience run out."""

from pathlib import Path
from typing import Optional

import torch

from runtime.processes import Processes, StopSignal, torchrun_command
from runtime.runlog import RunLog
from training import TrainError
from training.state import LoopState


def diverged(out_dir: Optional[Path], step: int, what: str) -> TrainError:
    last = out_dir / "checkpoints" / "last.pt" if out_dir else None
    kept = f"the last good checkpoint is {last}" if last and last.exists() else "no checkpoint had been written yet"
    return TrainError(f"{what} became nan or inf by step {step}; {kept}. Lower optim.lr or raise "
                      "optim.warmup_steps, then resume from it or start again")


def launcher() -> str:
    """How this command was started: `python`, or the torchrun line of this process group."""
    return torchrun_command() or "python"


class Guard:
    """Watches every step for nan/inf without waiting for the device, holds the stop signals (Ctrl-C,
    SIGTERM) while the loop runs (`with guard:`), and counts patience. Off rank 0 its messages go nowhere."""

    def __init__(self, procs: Processes, device: torch.device, loop: LoopState, log: RunLog, out_dir: Optional[Path],
                 fp16: bool, patience: Optional[int], end_step: int):
        self.procs, self.device, self.loop, self.log, self.out_dir = procs, device, loop, log, out_dir
        self.fp16, self.patience, self.end_step = fp16, patience, end_step
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # has any loss or grad norm been nan/inf?
        self.stop = StopSignal()

    def __enter__(self) -> "Guard":
        self.stop.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.__exit__(*exc)

    def watch(self, loss: torch.Tensor, grad_norm: Optional[torch.Tensor]) -> None:
        """Remember, on the device and without waiting for it, whether the loss or gradient norm is nan/inf."""
        self.nonfinite |= ~torch.isfinite(loss)
        if grad_norm is not None and not self.fp16:  # with fp16 the scaler skips inf steps by design
            self.nonfinite |= ~torch.isfinite(grad_norm)

    def should_stop(self, due: bool) -> bool:
        """Whether every process stops now (a stop signal in any of them); a nan or inf seen by any ends the run.

        Decided at log, eval and last steps (`due`) from flags reduced over all processes: one small
        all-reduce there, the loop's only wait for the device. A single process also decides at any step
        once signalled, so Ctrl-C stops it at once; under torchrun every process notices at the next due step.
        """
        signalled = self.stop.received is not None
        if not (due or (signalled and self.procs.world_size == 1)):
            return False
        signal = torch.tensor(float(signalled), device=self.device)
        flags = self.procs.any(torch.stack([self.nonfinite.float(), signal]))
        if flags[0].item():
            raise diverged(self.out_dir, self.loop.step, "the training loss or gradient norm")
        return bool(flags[1].item())

    def stopped(self) -> None:
        """Say where the run was saved and how to continue it."""
        self.log.info("%s received: saved step %d to %s. Continue with: %s train.py resume=%s",
                      self.stop.received or "a stop", self.loop.step, self.out_dir and self.out_dir / "checkpoints",
                      launcher(), self.out_dir)

    def out_of_patience(self) -> bool:
        """With patience=N: whether the last N evaluations all failed to improve the val loss (then say so)."""
        n, loop = self.patience, self.loop
        if n is None or loop.evals_since_best < n or loop.step >= self.end_step:
            return False
        self.log.info("val loss has not improved for %d evaluations (patience=%d): stopping early at step %d. "
                      "checkpoints/best.pt holds the best (val %.4f)", loop.evals_since_best, n, loop.step,
                      loop.best_val_loss)
        return True
