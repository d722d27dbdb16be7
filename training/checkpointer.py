"""Checkpoints of a run: checkpoints/last.pt, and best.pt for the best val loss so far."""

from pathlib import Path
from typing import Optional

from runtime.checkpoint import checkpoint_bytes, link_checkpoint, save_checkpoint
from runtime.files import writing
from runtime.runlog import after_full_disk
from training import TrainError
from training.state import TrainState


class Checkpointer:
    """Writes the run's state (`TrainState.state_dict`) atomically: a crash or a full disk leaves the
    previous last.pt intact, and a full disk is one line (the folder, the space needed, the space free).
    best.pt becomes the same file as last.pt when the evaluation just made improved the val loss. Off
    rank 0 (out_dir None) it only takes part, and stops with rank 0 when rank 0 cannot write."""

    def __init__(self, state: TrainState, out_dir: Optional[Path]):
        self.state, self.out_dir = state, out_dir
        self.dir = out_dir / "checkpoints" if out_dir else None

    def save(self, val_loss: Optional[float], best: bool) -> None:
        """val_loss: the evaluation at this step (None: a save at a stop or at the end, without one);
        best: whether it is better than every evaluation before."""
        checkpoint = self.state.state_dict(val_loss)  # every process takes part
        self.state.procs.decide(lambda: self.write(checkpoint, best))  # a refusal stops every process

    def write(self, checkpoint: dict, best: bool) -> None:
        """Rank 0: last.pt, then best.pt when best."""
        if self.dir is None:
            return
        last, step = self.dir / "last.pt", self.state.step
        # the new file is written beside the old one before replacing it: it needs its whole size free
        needed = max(checkpoint_bytes(checkpoint), last.stat().st_size if last.exists() else 0)
        try:
            then = after_full_disk(self.out_dir, "the previous checkpoint")
            with writing(self.dir, f"saving the checkpoint of step {step}", needed, then):
                save_checkpoint(checkpoint, last)
        except OSError as e:  # not a full disk: no permission, an I/O error...
            raise TrainError(f"could not save {last} at step {step}: {e.strerror or e}; the previous checkpoint "
                             "is intact. Fix that, then resume") from None
        if best:
            then = (f"checkpoints/last.pt holds step {step}, best.pt is the previous best: free some space, "
                    "then copy last.pt to best.pt")
            with writing(self.dir, "making best.pt", last.stat().st_size, then):
                link_checkpoint(last, self.dir / "best.pt")
