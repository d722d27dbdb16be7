"""CPU threads that fit the cores other programs leave free.

torch runs one thread per core, and each parallel operation waits for its slowest thread. When another
program holds a core, one of torch's threads gets that core only part of the time, and every operation
waits for it: the CPU recipe on a 2-core machine beside one busy program ran at 26% of its speed alone
with 2 threads and at 64% with 1 (docs/results.md: Beside another program). So a command that is given
no `threads=` measures how much of its cores other programs use (/proc/stat: every process's CPU time on
the cores this process may run on, less this process's own) and takes its share of torch's default: its
2 threads on 2 free cores, 1 when another program keeps one core busy. Training measures again every few
seconds (`Threads.check`): fewer threads as soon as another program starts, more once it has stopped
for two measurements in a row. Each choice is one line on the log. An explicit `threads=N` is never changed.

Data preparation chooses its tokenizer processes the same way (`free_cores`). Without /proc/stat (macOS,
Windows), the start-up choice reads the load average instead, and training keeps it (its slowdown
warning still names threads=). torch is imported where it is used: data preparation runs without it.
"""

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

if TYPE_CHECKING:
    import torch

CHECK_EVERY_S = 2.0  # how often training measures: 2 s at the wrong thread count costs little either way
PROBE_S = 0.2  # the start-up measurement: long enough for /proc/stat's 10 ms ticks to give +-0.1 core


def cores() -> list[int]:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


@dataclass
class Usage:
    """CPU time so far, in seconds: all processes' on our cores (busy), and this process's own (ours)."""

    busy: float
    ours: float
    at: float

    @classmethod
    def now(cls) -> Optional["Usage"]:
        """None where /proc is not there (not Linux)."""
        try:
            stat = Path("/proc/stat").read_text().splitlines()
            own = Path("/proc/self/stat").read_text()
        except OSError:
            return None
        tick, mine, busy = os.sysconf("SC_CLK_TCK"), {f"cpu{i}" for i in cores()}, 0
        for line in stat:
            name, *fields = line.split()
            if name in mine:  # user nice system idle iowait irq softirq steal (guest is inside user)
                counts = [int(f) for f in fields[:8]]
                busy += sum(counts) - counts[3] - counts[4]  # all but idle and iowait; steal: the host took it
        utime, stime = own.rsplit(")", 1)[1].split()[11:13]  # fields 14 and 15 of proc(5), after the name
        return cls(busy / tick, (int(utime) + int(stime)) / tick, time.monotonic())

    def others_since(self, before: "Usage") -> float:
        """Cores other processes kept busy, on average, between before and now."""
        return max(0.0, (self.busy - before.busy) - (self.ours - before.ours)) / max(self.at - before.at, 1e-3)


def share(others: float, most: int, n_cores: int) -> int:
    """Threads for this process: most (torch's default) scaled by the fraction of the cores left free,
    rounded, at least 1. On 2 cores: 2 threads while others use under half a core, else 1."""
    return max(1, min(most, round(most * (n_cores - others) / n_cores)))


def busy_text(others: float, n_cores: int) -> str:
    return f"other programs keep {others:.1f} of {n_cores} cores busy" if others >= 0.05 else f"{n_cores} cores free"


def free_cores(most: int, probe_s: float = PROBE_S) -> tuple[int, str, Optional[Usage]]:
    """How many of `most` threads (or processes) the cores other programs leave free allow now: (that
    count, a few words on what was measured, the Usage at the end of the measurement, None without /proc)."""
    n_cores, before = len(cores()), Usage.now()
    if before is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return share(min(load, n_cores), most, n_cores), f"load average {load:.1f} on {n_cores} cores", None
    time.sleep(probe_s)
    after = Usage.now()
    others = after.others_since(before)
    return share(others, most, n_cores), busy_text(others, n_cores), after


class Threads:
    """The CPU thread count of a command on `device`. explicit: the user's threads=N, kept as it is; None:
    on a CPU, chosen from the free cores at start-up and, in training, by `check` every CHECK_EVERY_S.
    fixed: torch's default throughout (deterministic=true: a sum split over another number of threads
    rounds differently). Off the CPU only threads=N is applied, silently."""

    def __init__(self, device: "torch.device", explicit: Optional[int], say: Callable[[str], None],
                 fixed: bool = False):
        import torch

        self.explicit, self.say, self.fixed = explicit, say, fixed
        self.on_cpu = device.type == "cpu"
        self.most = torch.get_num_threads()  # torch's default: one per physical core (or OMP_NUM_THREADS)
        self.n_cores = len(cores())
        self.last: Optional[Usage] = None
        self.rising = 0  # measurements in a row that asked for more threads

    def choose(self, probe_s: float = PROBE_S) -> int:
        """Set, and on a CPU announce, the thread count: threads=N, or what the free cores allow now."""
        import torch

        if self.explicit:
            torch.set_num_threads(self.explicit)
            if self.on_cpu:
                self.say(f"CPU threads: {self.explicit} (threads={self.explicit})")
            return self.explicit
        if not self.on_cpu:
            return self.most
        if self.fixed:
            self.say(f"CPU threads: {self.most} (deterministic=true keeps torch's count; threads=N sets it)")
            return self.most
        threads, measured, self.last = free_cores(self.most, probe_s)
        self.say(f"CPU threads: {threads} of {self.most} ({measured}); threads=N sets them")
        torch.set_num_threads(threads)
        return threads

    @contextmanager
    def chosen(self) -> Iterator[int]:
        """choose(), and torch's thread count put back afterwards (a test or a notebook goes on as before)."""
        import torch

        before = torch.get_num_threads()
        try:
            yield self.choose()
        finally:
            torch.set_num_threads(before)

    def check(self) -> None:
        """In training, every CHECK_EVERY_S: fewer threads at once when other programs take cores, more
        after two measurements in a row that find them free again."""
        if self.explicit or self.last is None or time.monotonic() - self.last.at < CHECK_EVERY_S:
            return
        import torch

        now = Usage.now()
        others, self.last = now.others_since(self.last), now
        wanted, current = share(others, self.most, self.n_cores), torch.get_num_threads()
        self.rising = self.rising + 1 if wanted > current else 0
        if wanted < current or self.rising >= 2:
            torch.set_num_threads(wanted)
            self.rising = 0
            self.say(f"CPU threads: {current} -> {wanted} ({busy_text(others, self.n_cores)}); threads=N fixes them")
