"""A run's state: what the loop carries from step to step and what a checkpoint holds, one object.

`TrainState.state_dict()` builds a checkpoint's contents and `load_state_dict()` restores them.
`runtime.checkpoint.save_checkpoint` adds two keys of its own (format, version). Other readers take
only what they need from a saved one: setup (config, data_meta: what to resume), sample.py and export.py
(model_config, model, data_meta; step and val_loss to say which). The format is that of every ropegpt
checkpoint so far: runs trained before this file existed still resume and sample.
"""

import time
from dataclasses import asdict
from typing import Any, Optional

import torch

from data.loader import BatchSampler
from model.gpt import GPT, GPTConfig
from runtime.optimizers import Optimizers
from runtime.parallel import load_model_state, load_optimizer_state, model_state, optimizer_state
from runtime.processes import Processes
from training import TrainError

# The loop's own fields, with their values at step 0 (a checkpoint from before one was added gets it).
PROGRESS = {"step": 0, "best_val_loss": float("inf"), "elapsed_s": 0.0, "wandb_id": None, "evals_since_best": 0}


class TrainState:
    """The model, its optimizer and (fp16) loss scaler, this process's batch sampler and random state, and
    the loop's progress:

        step              optimizer steps taken
        best_val_loss     the best val loss of any evaluation so far
        elapsed_s         training seconds of the run before this command started (elapsed(): in all)
        wandb_id          the wandb run's id, so a resume logs to the same run
        evals_since_best  evaluations since the val loss last improved (what patience counts)

    A checkpoint holds those, model_config, model, optimizer, scaler, processes (each process's sampler
    and RNG states, so a resume is exact), config and data_meta (the run's settings and data), and
    val_loss (the evaluation it was saved at, if any).
    """

    def __init__(self, cfg: Any, model: GPT, optimizer: torch.optim.Optimizer | Optimizers,
                 scaler: Optional[torch.amp.GradScaler], sampler: BatchSampler, procs: Processes,
                 device: torch.device, meta: dict, started: float):
        self.cfg, self.model, self.optimizer, self.scaler, self.sampler = cfg, model, optimizer, scaler, sampler
        self.procs, self.device, self.meta, self.started = procs, device, meta, started
        self.step, self.best_val_loss, self.elapsed_s, self.wandb_id, self.evals_since_best = PROGRESS.values()

    def elapsed(self) -> float:
        """Training seconds of the whole run: before this command, and since it started."""
        return self.elapsed_s + time.perf_counter() - self.started

    def state_dict(self, val_loss: Optional[float] = None) -> dict:
        """The checkpoint's contents. Every process must call it (it gathers their states and, under FSDP,
        the whole weights); only rank 0's result is complete."""
        mine = {"sampler": self.sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {**{k: getattr(self, k) for k in PROGRESS}, "elapsed_s": self.elapsed(), "val_loss": val_loss,
                "processes": self.procs.gather(mine),
                "model_config": asdict(self.model.config), "model": model_state(self.model),
                "optimizer": optimizer_state(self.model, self.optimizer),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "config": asdict(self.cfg), "data_meta": self.meta}

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue exactly where a checkpoint left off: the same model and as many processes, or a TrainError."""
        if asdict(GPTConfig(**checkpoint["model_config"])) != asdict(self.model.config):  # keys added since: defaults
            raise TrainError(f"the checkpoint's model {checkpoint['model_config']} differs from the config's "
                             f"{asdict(self.model.config)}")
        if len(checkpoint["processes"]) != self.procs.world_size:
            raise TrainError(f"the checkpoint was written by {len(checkpoint['processes'])} processes; resume with "
                             f"as many (it has their data and random states), not {self.procs.world_size}")
        load_model_state(self.model, checkpoint["model"])
        try:
            load_optimizer_state(self.model, self.optimizer, checkpoint["optimizer"])
        except (ValueError, KeyError) as e:  # e.g. resume=RUN optim.name=muon on a run trained with AdamW
            raise TrainError(f"the checkpoint's optimizer state does not fit this optimizer ({e}): resume with the "
                             "run's own optim.name, or start from its weights in a new run") from None
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        mine = checkpoint["processes"][self.procs.rank]
        self.sampler.load_state_dict(mine["sampler"])
        torch.set_rng_state(mine["cpu_rng"])
        if self.device.type == "cuda" and mine.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        for key, at_start in PROGRESS.items():
            setattr(self, key, checkpoint.get(key, at_start))
