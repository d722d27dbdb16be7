"""Processes: the torchrun group a run belongs to, the few things its processes agree on, and stop signals.

A single process is a group of one: every collective below then returns at once, so the training
loop calls them the same way with or without torchrun.
"""

import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist

from runtime.devices import resolve_device
from runtime.errors import UserError

T = TypeVar("T")


WAIT_TIMEOUT = timedelta(hours=12)  # how long `decide` waits for the deciding process (preparing a corpus)


def collective_timeout() -> Optional[timedelta]:
    """The process group's timeout: $ROPEGPT_COLLECTIVE_TIMEOUT_S seconds, else torch's default (NCCL's
    watchdog: 10 minutes)."""
    seconds = os.environ.get("ROPEGPT_COLLECTIVE_TIMEOUT_S")
    return timedelta(seconds=float(seconds)) if seconds else None


@dataclass
class Processes:
    rank: int = 0  # this process among all of them
    local_rank: int = 0  # this process among those on its machine: its GPU
    world_size: int = 1
    waits: Any = field(default=None, repr=False)  # a gloo group with a long timeout, for `decide`

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs and talks to wandb."""
        return self.rank == 0

    def gather(self, obj: Any, group: Any = None) -> list:
        """obj from every process, in rank order (a list of one without torchrun)."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=group)
        return out

    def decide(self, decision: Callable[[], T], on_each_machine: bool = False) -> Optional[T]:
        """Run decision() in rank 0 (or, on_each_machine, in each machine's first process) and return its
        result there (None elsewhere). If it raises a UserError, every process raises one with the same
        message, so all stop together instead of some waiting forever for the others."""
        deciding = self.local_rank == 0 if on_each_machine else self.is_main
        result, error = None, None
        if deciding:
            try:
                result = decision()
            except UserError as e:
                error = e
        # the others wait on `waits`: a decision may take longer than NCCL's watchdog allows (a large corpus)
        messages = [m for m in self.gather(str(error) if error else None, group=self.waits) if m]
        if error is not None:
            raise error
        if messages:
            raise UserError(messages[0])
        return result

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Element-wise: is the flag set in any process? flags is a float tensor of 0s and 1s."""
        if self.world_size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """t averaged over the processes, in place."""
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.AVG)
        return t

    def from_main(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's t, in every process, in place."""
        if self.world_size > 1:
            dist.broadcast(t, src=0)
        return t

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def join_processes(device_name: str) -> tuple[Processes, torch.device]:
    """This process and its device; under torchrun, join the group (NCCL on CUDA, gloo otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes(), resolve_device(device_name, 0)
    p = Processes(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    device = resolve_device(device_name, p.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = collective_timeout()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **({"timeout": timeout} if timeout else {}))
    p.waits = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)  # every process creates it, in the same order
    return p, device


def launcher() -> str:
    """How this command was started, for the resume lines it prints: `python`, or the torchrun line of
    this process group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return "python"
    nodes = int(os.environ["WORLD_SIZE"]) // int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    return f"torchrun --nproc_per_node={per_node}" + (f" --nnodes={nodes}" if nodes > 1 else "")


STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number: a stopped command's exit code


class StopSignal:
    """SIGINT (Ctrl-C) or SIGTERM sets a flag: the loop finishes its step, saves and exits.

    A second Ctrl-C stops at once.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
