"""A 2-run sweep with jobs=2 (both at once, a share of the cores each) against jobs=1 (one after the other).

    python -m bench.sweep_jobs                       # the CPU recipe, 300 steps, optim.lr=3e-3,1e-2
    python -m bench.sweep_jobs --steps 1000 --repeats 3

Each sweep is `python train.py -m experiment=shakespeare_char_cpu max_steps=N optim.lr=3e-3,1e-2 jobs=J`
in a temporary folder, timed from start to end (process starts, data already prepared, both runs,
the table and the picture), alternated jobs=1, jobs=2, jobs=1, ... so a slow minute hits both alike.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.errors import UserError, exit_on_user_error

TRAIN = Path(__file__).resolve().parent.parent / "train.py"


def sweep_seconds(jobs: int, steps: int, folder: Path) -> float:
    command = [sys.executable, str(TRAIN), "-m", "experiment=shakespeare_char_cpu", f"max_steps={steps}",
               "optim.lr=3e-3,1e-2", f"jobs={jobs}", f"sweep_dir={folder}", "eval_batches=5"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"the sweep failed (exit code {result.returncode}): {result.stderr.strip()[-300:]}")
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    with exit_on_user_error(), tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "data.prepare"], check=True, capture_output=True)  # prepared once
        times = {1: [], 2: []}
        for i in range(args.repeats):
            for jobs in (1, 2):
                times[jobs].append(sweep_seconds(jobs, args.steps, Path(tmp) / f"{jobs}-{i}"))
                print(f"jobs={jobs}: {times[jobs][-1]:.1f} s", flush=True)
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"| sweep of 2 runs x {args.steps} steps | jobs=1 | jobs=2 | jobs=1 / jobs=2 |")
        print("| --- | --- | --- | --- |")
        print(f"| median of {args.repeats}, seconds | {one:.1f} | {two:.1f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
