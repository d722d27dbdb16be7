"""The CPU recipe's speed alone and beside another program, with each thread setting.

    python -m bench.threads_under_load                 # every case, 40 s each, twice (about 20 minutes)
    python -m bench.threads_under_load --seconds 30 --rounds 1 --threads auto 1

Each case runs `python train.py experiment=shakespeare_char_cpu` (max_steps=100000, logging every 5 steps,
so the recipe's schedule is not what is measured) for --seconds, as a whole command, and reports the median
tokens/s of its log lines after the first; the ratio is against the same setting alone. The loads:
  alone     nothing else running;
  yes       `yes > /dev/null`: one core kept busy by a single-threaded program;
  recipe    a second CPU recipe started at the same moment, with the same thread setting (two users
            training at once, or a sweep of jobs=2 before it gave each its share).
Thread settings: auto (no threads=: ropegpt chooses from the free cores, runtime/threads.py) and explicit
counts. Cases alternate (auto, 2, 1, auto, 2, 1, ...) within each load, so the machine's drift spreads
over all of them. Run it alone: its numbers are the machine's.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.threads import cores

REPO = Path(__file__).resolve().parent.parent
TOKENS_PER_S = re.compile(r"\| ([\d,]+) tok/s")
THREADS_LINE = re.compile(r"CPU threads: .*")


def recipe(out_dir: Path, threads: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "experiment=shakespeare_char_cpu", "max_steps=100000",
            "log_interval=5", "eval_interval=100000", "progress=false", "plot=false", f"out_dir={out_dir}",
            *([] if threads == "auto" else [f"threads={threads}"])]


def run_for(seconds: float, commands: list[list[str]]) -> list[str]:
    """Start the commands together, stop them after `seconds` of the first one's training; their outputs."""
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    outputs = [[] for _ in procs]
    started = None
    for line in procs[0].stdout:  # the first command's lines set the clock
        outputs[0].append(line)
        if started is None and TOKENS_PER_S.search(line):
            started = time.monotonic()
        if started is not None and time.monotonic() - started > seconds:
            break
    for p in procs:
        p.terminate()
    for i, p in enumerate(procs):
        outputs[i] += p.communicate(timeout=60)[0].splitlines(keepends=True)
    return ["".join(o) for o in outputs]


def speed(output: str) -> tuple[float, str]:
    """Median tokens/s of the log lines after the first (which includes the start), and the threads line(s)."""
    rates = [float(m.group(1).replace(",", "")) for m in TOKENS_PER_S.finditer(output)][1:]
    if not rates:
        raise SystemExit(f"no log line came:\n{output[-2000:]}")
    return statistics.median(rates), "; ".join(m.group(0) for m in THREADS_LINE.finditer(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="training time measured per case")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", nargs="+", default=["auto", "2", "1"], help="auto, or counts")
    parser.add_argument("--loads", nargs="+", default=["alone", "yes", "recipe"], choices=["alone", "yes", "recipe"])
    args = parser.parse_args()
    print(f"{len(cores())} cores; the CPU recipe for {args.seconds:.0f} s per case, {args.rounds} round(s)", flush=True)
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads:
            for r in range(args.rounds):
                for threads in args.threads:
                    out = Path(tmp) / f"{load}-{threads}-{r}"
                    commands = [recipe(out, threads)] + ([recipe(Path(f"{out}-b"), threads)] if load == "recipe" else [])
                    busy = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if load == "yes" else None
                    try:
                        outputs = run_for(args.seconds, commands)
                    finally:
                        if busy is not None:
                            busy.kill()
                    rate, said = speed(outputs[0])
                    results.setdefault((load, threads), []).append(rate)
                    other = f", the second recipe {speed(outputs[1])[0]:,.0f}" if load == "recipe" else ""
                    print(f"{load:7s} threads={threads:4s} round {r + 1}: {rate:,.0f} tokens/s{other} ({said})",
                          flush=True)
    print("\n| load | threads | tokens/s (median of rounds) | of alone, same setting | of alone, auto |")
    print("| --- | --- | --- | --- | --- |")
    alone_auto = statistics.median(results.get(("alone", "auto"), [float("nan")]))
    for (load, threads), rates in results.items():
        rate = statistics.median(rates)
        alone = statistics.median(results.get(("alone", threads), [float("nan")]))
        print(f"| {load} | {threads} | {rate:,.0f} ({', '.join(f'{x:,.0f}' for x in rates)}) | "
              f"{100 * rate / alone:.0f}% | {100 * rate / alone_auto:.0f}% |")


if __name__ == "__main__":
    main()
