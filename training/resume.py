"""resume=: a run continues as it was configured (the checkpoint's config, with this command's overrides)."""

import shlex
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from runtime.checkpoint import CheckpointError, load_checkpoint
from runtime.config import groups, parse_overrides, to_schema
from runtime.processes import launcher
from training import TrainError

# data.* keys a resume may change: where the prepared data lives, and how it is prepared; not which data
RESUMABLE_DATA_KEYS = ("data.root", "data.workers")

# Settings about this command rather than the run: a resumed run never takes them from its checkpoint.
PER_COMMAND = ("resume", "stop_step", "out_dir", "threads")


def resumed_config(cfg: Any, overrides: Sequence[str], checkpoint: dict) -> Any:
    """With resume=..., the checkpoint's config, with this command line's key=value overrides on top.

    So `resume=RUN` alone continues the run as it was configured, and `resume=RUN max_steps=8000`
    extends it. Switching a config group (model=, data=, experiment=) would change what is trained,
    so it is refused; so is a resume with no step left to take (a finished run, or stop_step at or
    before the checkpoint's step), which would only write into the run folder. The overrides are read
    with Hydra's own parser; their values come from cfg, where Hydra has already typed them.
    """
    saved = checkpoint["config"]
    schema = type(cfg)
    given = OmegaConf.structured(cfg)
    resumed = OmegaConf.merge(OmegaConf.structured(schema), saved)
    for override in parse_overrides(overrides):
        key = override.key_or_group
        if key in groups("train"):
            raise TrainError(f"resume continues with the checkpoint's config; '{override.input_line}' switches a "
                             "config group. Override single keys instead (e.g. max_steps=8000)")
        if key.startswith("data.") and key not in RESUMABLE_DATA_KEYS:
            raise TrainError(f"resume continues on the data the run trained on; '{override.input_line}' would change "
                             "it. Train on other data in a new run (init_from= takes a Hugging Face folder's weights)")
        if not override.is_delete():
            OmegaConf.update(resumed, key, OmegaConf.select(given, key), merge=False)
    for key in PER_COMMAND:
        resumed[key] = given[key]
    resumed = to_schema(resumed, schema)
    steps_left(resumed, checkpoint)
    return resumed


def steps_left(cfg: Any, checkpoint: dict) -> None:
    """Refuse, in one line, a resume that would take no step: the checkpoint is at max_steps (or past the
    max_steps= given), or at or past stop_step=. The line says how to train further."""
    step, saved_max = checkpoint["step"], checkpoint["config"]["max_steps"]
    best = checkpoint.get("best_val_loss", float("inf"))
    where = f"{cfg.resume} " + (f"already finished at step {step} of max_steps={saved_max}" if step >= saved_max
                                else f"is at step {step} of max_steps={saved_max}")
    where += f" (best val loss {best:.4f})" if best < float("inf") else " (no evaluation yet)"
    if cfg.max_steps <= step:
        asked = "add" if cfg.max_steps == saved_max else f"max_steps={cfg.max_steps} trains nothing; give"
        raise TrainError(f"{where}: {asked} max_steps=N (more than {step}) to train further, e.g. "
                         f"{launcher()} {shlex.join(['train.py', f'resume={cfg.resume}', f'max_steps={2 * step}'])}")
    if cfg.stop_step is not None and cfg.stop_step <= step:
        raise TrainError(f"{where}: stop_step={cfg.stop_step} trains nothing; give a stop_step more than {step}, "
                         f"or leave it out to train on to max_steps={cfg.max_steps}")


def finished(run_dir: Path) -> bool:
    """Whether the run in run_dir took every step it was started for: its checkpoints/last.pt is at the
    max_steps (or the stop_step) of its own config. A sweep skips such a run instead of resuming it, which
    resumed_config refuses. An unreadable checkpoint is not finished: resuming it says what is wrong."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    try:
        checkpoint = load_checkpoint(last)
    except CheckpointError:
        return False
    config = checkpoint["config"]
    return checkpoint["step"] >= min(config["max_steps"], config.get("stop_step") or config["max_steps"])
