"""The run folder: which one (never another run's), and what goes in it first (train.log, metrics.jsonl,
the config, wandb). Only rank 0 calls these."""

import os
import secrets
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from runtime.checkpoint import run_dir_of
from runtime.processes import launcher
from runtime.runlog import RunLog
from training import TrainError
from training.state import TrainState


def new_out_dir(cfg: Any, checkpoint: Optional[Path]) -> Path:
    """The run folder: out_dir= as given; else the folder of the run being resumed; else outputs/DATE/TIME.

    A folder that holds another run is never written by a new run: naming one is refused (with the
    resume= line), and a timestamp that is taken already gets a suffix. A checkpoint file outside a
    run folder (resume=some/file.pt) starts a new folder.
    """
    resumed_from = run_dir_of(checkpoint) if checkpoint else None
    if cfg.out_dir is None:
        if resumed_from is not None:
            return resumed_from
        stamp = datetime.now()
        out, n = Path("outputs") / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S"), 1
        while out.exists():
            out, n = out.with_name(f"{stamp.strftime('%H-%M-%S')}-{n}"), n + 1
        return out
    out = Path(cfg.out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainError(f"out_dir={out} is a file: give a folder")
    holds_run = (out / "metrics.jsonl").exists() or (out / "checkpoints").is_dir()
    if holds_run and (resumed_from is None or out.resolve() != resumed_from.resolve()):
        raise TrainError(f"{out} already holds a run: continue it with `{launcher()} train.py resume={out}`, or "
                         "choose another out_dir")
    return out


def check_wandb(cfg: Any) -> None:
    """wandb.enabled=true needs an API key (wandb login) unless WANDB_MODE keeps the run local: checked
    before anything is written, instead of wandb's traceback after the run folder exists."""
    if not cfg.wandb.enabled or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    import wandb

    try:
        wandb.login(verify=False)  # finds a key (WANDB_API_KEY, ~/.netrc); prompts for one on a terminal
    except wandb.errors.UsageError:
        raise TrainError("wandb.enabled=true, but wandb has no API key here: run `wandb login` once, or set "
                         "WANDB_MODE=offline to log locally (`wandb sync` uploads it later)") from None


def open_run_folder(cfg: Any, out_dir: Path, state: TrainState, log: RunLog, resumed: bool) -> None:
    """Once every check has passed: the folder, train.log, metrics.jsonl, the config, wandb."""
    try:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        log.open(out_dir)
        name = f"config.resumed-at-step-{state.step}.yaml" if resumed else "config.yaml"
        OmegaConf.save(OmegaConf.structured(cfg), out_dir / name, resolve=True)
    except OSError as e:
        raise TrainError(f"cannot create the run folder {out_dir}: {e.strerror}; choose another out_dir") from None
    if cfg.wandb.enabled:
        state.wandb_id = state.wandb_id or secrets.token_hex(4)  # a wandb run id: lowercase letters and digits
        log.start_wandb(project=cfg.wandb.project, name=cfg.wandb.name or out_dir.name, id=state.wandb_id,
                        resume="allow", dir=str(out_dir), config=asdict(cfg))
