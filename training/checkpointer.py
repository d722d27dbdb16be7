"""Checkpoints of a run: checkpoints/last.pt, and best.pt for the best val loss so far."""

from pathlib import Path
from typing import Optional

from runtime.checkpoint import link_checkpoint, save_checkpoint
from training import TrainError
from training.state import TrainState


class Checkpointer:
    """Writes the run's state (`TrainState.state_dict`) atomically: a crash or a full disk leaves the
    previous last.pt intact. best.pt becomes the same file as last.pt when an evaluation improved the
    val loss strictly (the rule patience counts by). Off rank 0 (out_dir None) it only takes part."""

    def __init__(self, state: TrainState, out_dir: Optional[Path]):
        self.state, self.dir = state, out_dir / "checkpoints" if out_dir else None

    def save(self, val_loss: Optional[float]) -> None:
        """val_loss: this step's evaluation, or None when the step saves without one (a stop, the end)."""
        checkpoint = self.state.state_dict(val_loss)  # every process takes part
        if self.dir is None:
            return
        try:
            save_checkpoint(checkpoint, self.dir / "last.pt")
        except OSError as e:
            raise TrainError(f"could not save {self.dir / 'last.pt'} at step {self.state.loop.step}: "
                             f"{e.strerror or e}; the previous checkpoint is intact. Free some space, then "
                             "resume") from None
        if val_loss is not None and self.state.loop.evals_since_best == 0:  # a better val loss than any before
            link_checkpoint(self.dir / "last.pt", self.dir / "best.pt")
