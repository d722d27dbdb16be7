"""Checkpoints of a run: checkpoints/last.pt, and best.pt for the best val loss so far."""

from pathlib import Path
from typing import Optional

from runtime.checkpoint import link_checkpoint, save_checkpoint
from training import TrainError
from training.state import TrainState


class Checkpointer:
    """Writes the run's state (`TrainState.state_dict`) atomically: a crash or a full disk leaves the
    previous last.pt intact. best.pt becomes the same file as last.pt when the evaluation just made
    improved the val loss. Off rank 0 (out_dir None) it only takes part."""

    def __init__(self, state: TrainState, out_dir: Optional[Path]):
        self.state, self.dir = state, out_dir / "checkpoints" if out_dir else None

    def save(self, val_loss: Optional[float], best: bool) -> None:
        """val_loss: the evaluation at this step (None: a save at a stop or at the end, without one);
        best: whether it is better than every evaluation before."""
        checkpoint = self.state.state_dict(val_loss)  # every process takes part
        if self.dir is None:
            return
        try:
            save_checkpoint(checkpoint, self.dir / "last.pt")
        except OSError as e:
            raise TrainError(f"could not save {self.dir / 'last.pt'} at step {self.state.step}: "
                             f"{e.strerror or e}; the previous checkpoint is intact. Free some space, then "
                             "resume") from None
        if best:
            link_checkpoint(self.dir / "last.pt", self.dir / "best.pt")
