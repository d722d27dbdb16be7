"""When a run must end early: a loss that became nan or inf, the device's memory ran out, or a stop signal
(Ctrl-C, SIGTERM)."""

from pathlib import Path
from typing import Optional

import torch

from runtime.processes import Processes, StopSignal, launcher
from runtime.runlog import RunLog
from training import TrainError
from training.state import TrainState


def diverged(out_dir: Optional[Path], step: int, what: str) -> TrainError:
    """The error that ends a run whose `what` became nan or inf (the validator raises it for the val loss)."""
    last = out_dir / "checkpoints" / "last.pt" if out_dir else None
    kept = f"the last good checkpoint is {last}" if last and last.exists() else "no checkpoint had been written yet"
    return TrainError(f"{what} became nan or inf by step {step}; {kept}. Lower optim.lr or raise "
                      "optim.warmup_steps, then resume from it or start again")


def out_of_memory(cfg, state: TrainState, error: BaseException, out_dir: Optional[Path]) -> TrainError:
    """The error that ends a run out of device memory: one line that says what was asked and what to lower.
    micro_batch_size splits each step's batch into more, smaller forward passes: the same training, less
    memory (nothing about the run changes but its speed)."""
    last = out_dir / "checkpoints" / "last.pt" if out_dir else None
    kept = f"; the last checkpoint, {last}, is intact" if last and last.exists() else ""
    micro = cfg.micro_batch_size or cfg.batch_size // state.procs.world_size
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else "no details"
    lower = f"micro_batch_size={max(1, micro // 2)} (the same steps in more, smaller passes)" if micro > 1 else \
        "model.block_size or the model's size"
    return TrainError(f"out of memory on {state.device} at step {state.step} with {micro} sequences of "
                      f"{cfg.model.block_size} tokens per forward pass ({first}): lower {lower}, or use "
                      f"dtype=bf16{kept}")


class Guard:
    """Watches every step for a nan/inf loss or gradient norm without waiting for the device, and holds
    the stop signals while the loop runs (`with guard:`): the step finishes, is saved, and the run stops.
    Off rank 0 its messages go nowhere."""

    def __init__(self, state: TrainState, log: RunLog, out_dir: Optional[Path], fp16: bool):
        self.state, self.log, self.out_dir, self.fp16 = state, log, out_dir, fp16
        self.procs: Processes = state.procs
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=state.device)  # any nan/inf loss or grad norm?
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

        Decided at the steps the loop syncs anyway (`due`: log, eval and last steps) from flags reduced
        over all processes: one small all-reduce there, the loop's only wait for the device. A single
        process also decides at any step once signalled, so Ctrl-C stops it at once; under torchrun every
        process notices at the next due step.
        """
        signalled = self.stop.received is not None
        if not (due or (signalled and self.procs.world_size == 1)):
            return False
        signal = torch.tensor(float(signalled), device=self.state.device)
        flags = self.procs.any(torch.stack([self.nonfinite.float(), signal]))
        if flags[0].item():
            raise diverged(self.out_dir, self.state.step, "the training loss or gradient norm")
        return bool(flags[1].item())

    def say_how_to_resume(self) -> None:
        self.log.info("%s received: saved step %d to %s. Continue with: %s train.py resume=%s",
                      self.stop.received or "a stop", self.state.step, self.out_dir and self.out_dir / "checkpoints",
                      launcher(), self.out_dir)
