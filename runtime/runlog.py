"""What a run says and writes down: console lines, train.log, metrics.jsonl, wandb, a progress bar.

Rank 0 gets a RunLog; every other process gets a NullRunLog, whose methods do nothing, so the
training loop logs without asking which process it is. train.log and metrics.jsonl take whole lines
only: a disk that fills stops the run with one line (DiskFullError) and leaves no half line behind.
"""

import json
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Optional

from runtime.files import AppendFile, DiskFullError, writing


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def after_full_disk(run_dir: Path, intact: str = "the last checkpoint") -> str:
    """What to do when the disk holding run_dir fills during the run, and what is intact (`intact`: which
    checkpoint that is): the end of the DiskFullError's line for a checkpoint, a log line or a picture."""
    from runtime.processes import launcher  # here: data preparation uses this module without torch

    if (run_dir / "checkpoints" / "last.pt").exists():
        return (f"free some space, then resume ({launcher()} train.py resume={run_dir}), or resume into a folder "
                f"on another disk (add out_dir=...); {intact} is intact")
    return "free some space, or give out_dir= on another disk, and start the run again; it had no checkpoint yet"


class LogFile(logging.Handler):
    """train.log: each record appended whole (AppendFile). A full disk raises DiskFullError from the
    logging call; after that the handler stays silent, so the run can still close and say why it stopped."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.dir, self.file, self.failed = run_dir, AppendFile(run_dir / "train.log"), False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            line = (self.format(record) + "\n").encode("utf-8")
        except Exception:
            self.handleError(record)  # a bad format string: logging's usual report
            return
        try:
            with writing(self.dir, "writing train.log", len(line), after_full_disk(self.dir)):
                self.file.append(line)
        except DiskFullError:
            self.failed = True
            raise

    def close(self) -> None:
        self.file.close()
        super().close()


class Progress:
    """A one-line progress bar on a terminal's stderr; nothing when stderr is not a terminal.

    update(done, text) draws done / total as a bar (no bar when the total is unknown: None), then text.
    """

    def __init__(self, total: Optional[float], enabled: bool = True):
        self.total, self.enabled, self.shown = total, enabled and sys.stderr.isatty(), False

    def update(self, done: float, text: str) -> None:
        if self.enabled:
            filled = int(30 * min(1.0, done / self.total)) if self.total else 0
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] " if self.total else ""
            sys.stderr.write(f"\r\033[K{bar}{text}")
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


class RunLog:
    """Console lines from the start; train.log, metrics.jsonl and wandb once `open` names the run folder.

    The handlers go on the root logger (so data preparation's messages show too) and come off again
    in `close`, which the run always calls. Lines said before the folder exists are held back and
    written to train.log first when it opens.
    """

    def __init__(self, total_steps: int, progress: bool = True):
        self.root = logging.getLogger()
        self.previous_level = self.root.level
        self.root.setLevel(logging.INFO)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        self.early = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
        self.handlers = [console, self.early]
        for handler in self.handlers:
            self.root.addHandler(handler)
        self.bar = Progress(total_steps, progress)
        self.dir = self.file = self.metrics = self.wandb = None

    def open(self, out_dir: Path) -> None:
        """Start writing into out_dir (which exists): train.log (timestamped lines) and metrics.jsonl."""
        self.dir = out_dir
        self.file = LogFile(out_dir)
        self.file.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
        self.root.removeHandler(self.early)
        self.root.addHandler(self.file)
        self.handlers.append(self.file)
        self.early.setTarget(self.file)
        self.early.flush()  # what was said before the folder existed
        self.metrics = AppendFile(out_dir / "metrics.jsonl")

    def start_wandb(self, **init) -> None:
        """wandb.init(**init); its files go where init's dir says."""
        import wandb

        self.wandb = wandb.init(**init)

    def info(self, msg: str, *args) -> None:
        self.bar.clear()
        logging.getLogger("train").info(msg, *args)

    def warning(self, msg: str, *args) -> None:
        self.bar.clear()
        logging.getLogger("train").warning("warning: " + msg, *args)

    def record(self, entry: dict) -> None:
        """One line of metrics.jsonl ({"kind": "train"|"eval", "step": ..., ...}), and the same to wandb."""
        if self.metrics is not None:
            line = (json.dumps(entry) + "\n").encode("utf-8")
            with writing(self.dir, "writing metrics.jsonl", len(line), after_full_disk(self.dir)):
                self.metrics.append(line)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in entry.items() if k not in ("kind", "step")}, step=entry["step"])

    def progress(self, step: int, text: str) -> None:
        self.bar.update(step, f"{step}/{self.bar.total} {text}")

    def close(self, failure: Optional[str] = None) -> None:
        """Flush and detach everything. failure: why the run stopped, written to train.log alone (the
        command prints it) and reported to wandb as a failed run."""
        self.bar.clear()
        if failure and self.file is not None:
            try:
                self.file.handle(logging.makeLogRecord({"msg": f"error: {failure}", "levelno": logging.ERROR}))
            except DiskFullError:
                pass  # the line the command prints says it
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failure else 0)
        for handler in self.handlers:
            self.root.removeHandler(handler)
            handler.close()
        self.root.setLevel(self.previous_level)


class NullRunLog(RunLog):
    """The run log of every process but rank 0: says and writes nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def open(self, out_dir: Optional[Path]) -> None:
        pass

    def start_wandb(self, **init) -> None:
        pass

    def info(self, msg: str, *args) -> None:
        pass

    def warning(self, msg: str, *args) -> None:
        pass

    def record(self, entry: dict) -> None:
        pass

    def progress(self, step: int, text: str) -> None:
        pass

    def close(self, failure: Optional[str] = None) -> None:
        pass
