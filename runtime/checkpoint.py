"""Checkpoints: written atomically, read with weights_only=True, with clear errors when they are bad.

A checkpoint is a dict of plain Python values and tensors (no pickled classes), so
`torch.load(path, weights_only=True)` reads it. It holds everything needed to sample from the model
(`model_config`, `model`, `data_meta`) and to continue training exactly (the rest).
"""

import os
import warnings
from pathlib import Path

import torch

from runtime.errors import UserError

FORMAT = "ropegpt-checkpoint"
VERSION = 1


class CheckpointError(UserError):
    """A missing, unreadable or foreign checkpoint. The message says what to do."""


def find_checkpoint(where: str | Path | None, prefer: str = "last.pt", runs_dir: str | Path = "outputs") -> Path:
    """The checkpoint file a user means by `where`, the one resolver every command uses.

    A file: itself. A run directory: its checkpoints/<prefer> (train.py's resume wants last.pt,
    sampling best.pt), else checkpoints/last.pt. None: the newest run under runs_dir, the one whose
    checkpoints/last.pt was written last.
    """
    if where is None:
        runs = sorted(Path(runs_dir).rglob("checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise CheckpointError(f"no runs under {runs_dir}/: train one (python train.py ...) or name a run "
                                  "folder or checkpoint file (ckpt=PATH)")
        where = runs[-1].parent.parent
    path = Path(where).expanduser()
    if path.is_dir():
        for name in (prefer, "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        names = " or ".join(dict.fromkeys((prefer, "last.pt")))
        raise CheckpointError(f"{path} holds no checkpoints/{names}: is it a run folder of train.py?")
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: give a run directory or a .pt file written by train.py")
    return path


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint file sits in (RUN/checkpoints/last.pt -> RUN), or None."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def save_checkpoint(state: dict, path: Path) -> None:
    """Write state to path so that a crash or kill at any moment leaves the previous file intact.

    The bytes go to a temporary file beside path, are flushed to disk, and only then renamed over
    path: a rename within one folder is atomic, so path is always either the old file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def checkpoint_bytes(state: dict) -> int:
    """About the size of state's checkpoint file: the bytes of its tensors' storages, each counted once
    (tied weights share one, as torch.save writes it), plus a little for the zip's entries and the rest."""
    storages, other = {}, 0

    def visit(value) -> None:
        nonlocal other
        if isinstance(value, torch.Tensor):
            try:
                storage = value.untyped_storage()
                storages[(value.device, storage.data_ptr())] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # a tensor without a storage of its own
                other += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        else:
            other += 64  # a number, a string, a config entry: pickled in a few bytes

    visit(state)
    return sum(storages.values()) + other + 192 * len(storages) + 4096  # 192: a zip entry, its alignment, its pickle


def link_checkpoint(src: Path, dest: Path) -> None:
    """Make dest the same file as src (a hard link, else a copy), atomically, e.g. best.pt = last.pt."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # a file system without hard links
            tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by save_checkpoint, refusing anything else with a clear message."""
    try:
        with warnings.catch_warnings():  # bytes that look like an old pickle make torch warn first: one line only
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled classes: all unusable here
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}). "
                              "It may be truncated or corrupt: use another one, e.g. checkpoints/best.pt "
                              "of the same run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ropegpt checkpoint (no format tag '{FORMAT}')")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this ropegpt reads {VERSION}")
    return state
