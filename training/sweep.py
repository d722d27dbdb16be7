"""Sweeps: `python train.py -m KEY=a,b KEY2=x,y ...` trains every combination, each a normal run.

    python train.py -m experiment=shakespeare_char_cpu optim.lr=3e-3,1e-2 model.n_layer=2,4
    python train.py -m optim.lr=1e-3,3e-3 model=mini,small jobs=2        # two runs at a time
    python train.py -m 'optim.lr=choice(1e-3,3e-3)' 'model.n_layer=range(2,5)' sweep_dir=outputs/my_sweep

Hydra's override parser reads the line (lists a,b; `range(start,stop[,step])`; `choice(...)`; `glob(...)`
for config groups) and the combinations are its basic sweeper's: the product of the lists, the last key
varying fastest. Every combination is composed and checked before the first run starts: a bad value is
one line, and nothing is created. Each run is `python train.py` with its overrides, in its own folder
SWEEP/0, SWEEP/1, ... of one sweep folder (default outputs/sweeps/DATE/TIME, or sweep_dir=); SWEEP/
sweep.json lists each run's overrides and whether it finished. At the end the sweep prints a table
(overrides, steps, best val loss and its bits per byte, time), writes it to SWEEP/sweep.md and draws
SWEEP/sweep.png with plot.py.

jobs=N runs N at a time on this machine, each with its share of the CPU cores (threads=, unless given)
and, where there are several GPUs, its own GPU (CUDA_VISIBLE_DEVICES). A failed run, Ctrl-C or SIGTERM
lets the runs in flight save and stop, and the sweep says which finished and how to continue: the same
command again continues the newest unfinished sweep of that line (finished runs are skipped, a stopped
one resumes). On a cluster, run each combination as one job of a job array instead (docs/training.md).
"""

import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from runtime.config import ConfigError, compose, parse_overrides
from runtime.plots import read_metrics
from runtime.processes import STOP_EXIT_CODES
from runtime.runlog import duration
from training import TrainError, resume

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
SWEEP_KEYS = ("jobs", "sweep_dir")  # the sweep's own settings, not passed to the runs
SWEEPS = Path("outputs") / "sweeps"


def run_sweep(name: str, schema: type, args: list[str]) -> dict:
    """Every combination of args' sweeps, run as train.py runs; returns {"runs": [...], "interrupted": ...}."""
    own, args = sweep_settings(args)
    combos = combinations(args)
    for combo in combos:  # refuse a bad value before the first run starts
        compose(name, schema, combo)
    folder = sweep_folder(args, own.get("sweep_dir"))
    state = load_state(folder, args, combos)
    for run in state["runs"]:  # finished, though the sweep missed its exit (Ctrl-C in its last step, a kill)
        if run["status"] != "done" and resume.finished(folder / run["dir"]):
            run["status"] = "done"  # not resumed: resume= refuses a run with no step left
            save_state(folder, state)
    jobs = int(own.get("jobs", 1))
    todo = [run for run in state["runs"] if run["status"] != "done"]
    print(f"sweep of {len(combos)} run(s) in {folder}" + (f", {len(state['runs']) - len(todo)} finished before"
                                                       if len(todo) < len(combos) else "") + f", {jobs} at a time;"
          f" every run: {' '.join(shared(state)) or '(nothing shared)'}")
    stopped_by = Runner(folder, state, jobs, threads_given=any(a.startswith("threads=") for a in args)).run(todo)
    report(folder, state)
    if stopped_by or any(run["status"] != "done" for run in state["runs"]):
        left = [run["dir"] for run in state["runs"] if run["status"] != "done"]
        print(f"the sweep stopped ({stopped_by or 'a run failed'}); unfinished: {', '.join(left)}. Continue with: "
              f"python train.py -m {shlex.join([*args, f'sweep_dir={folder}'])}")
    failed = [run for run in state["runs"] if run["status"] == "failed"]
    if failed and not stopped_by:  # a script can tell: exit 2, the run's own folder and log named
        raise TrainError(f"run {failed[0]['dir']} of the sweep failed (exit code {failed[0]['returncode']}): see "
                         f"{folder / (failed[0]['dir'] + '.log')}")
    return {"runs": state["runs"], "interrupted": stopped_by}


def sweep_settings(args: list[str]) -> tuple[dict, list[str]]:
    """jobs=N and sweep_dir=DIR taken out of args; out_dir= and resume= refused (the sweep names the folders)."""
    own, rest = {}, []
    for item in args:
        key, _, value = item.partition("=")
        if key in SWEEP_KEYS:
            own[key] = value
        elif key in ("out_dir", "resume"):
            raise ConfigError(f"{item}: a sweep gives each run its own folder under sweep_dir=; continue a sweep "
                              "with the same command")
        else:
            rest.append(item)
    if "jobs" in own and not (own["jobs"].isdigit() and int(own["jobs"]) >= 1):
        raise ConfigError(f"jobs={own['jobs']} must be a whole number >= 1: how many runs at a time")
    return own, rest


def combinations(args: list[str]) -> list[list[str]]:
    """Each run's overrides: the product of the sweeps' values (Hydra's grammar), the last varying fastest."""
    choices = []
    for override in parse_overrides(args):
        if override.is_sweep_override():
            if override.is_interval_sweep():
                raise ConfigError(f"{override.input_line}: an interval has no list of values to run; give "
                                  "a,b,c, range(...) or choice(...)")
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    combos = [list(c) for c in itertools.product(*choices)]
    if len(combos) < 2:
        raise ConfigError("-m with no list of values: write KEY=a,b (or drop -m to train once)")
    return combos


def sweep_folder(args: list[str], given: Optional[str]) -> Path:
    """sweep_dir= as given; else the newest unfinished sweep of this very line; else a new outputs/sweeps/DATE/TIME."""
    if given:
        return Path(given).expanduser()
    for state in sorted(SWEEPS.glob("*/*/sweep.json"), reverse=True):
        try:
            saved = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if saved.get("args") == args and any(run["status"] != "done" for run in saved["runs"]):
            return state.parent
    stamp = datetime.now()
    folder, n = SWEEPS / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S"), 1
    while folder.exists():
        folder, n = folder.with_name(f"{stamp.strftime('%H-%M-%S')}-{n}"), n + 1
    return folder


def load_state(folder: Path, args: list[str], combos: list[list[str]]) -> dict:
    """SWEEP/sweep.json: the line and each run's overrides, folder and status; written new, or continued."""
    path = folder / "sweep.json"
    if path.exists():
        state = json.loads(path.read_text())
        if state["args"] != args:
            raise ConfigError(f"{folder} holds a sweep of another command line ({' '.join(state['args'])}): give "
                              "another sweep_dir=")
        return state
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"sweep_dir={folder} exists and holds no sweep: choose a new folder")
    state = {"args": args, "runs": [{"dir": str(i), "overrides": combo, "status": "pending"}
                                    for i, combo in enumerate(combos)]}
    save_state(folder, state)
    return state


def save_state(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".sweep.json.tmp"
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, folder / "sweep.json")


class Runner:
    """Runs a sweep's runs as train.py processes, `jobs` at a time, and hands a stop signal on to them.

    The runs are started in sessions of their own, so that Ctrl-C in the terminal reaches the sweep
    alone: it passes exactly one SIGINT to each run in flight (each then saves and stops) and starts
    no new one. A second Ctrl-C is passed on too: the runs stop at once."""

    def __init__(self, folder: Path, state: dict, jobs: int, threads_given: bool):
        self.folder, self.state, self.jobs = folder, state, jobs
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = None if threads_given or jobs == 1 else max(1, cores // jobs)
        self.gpus = gpu_count() if jobs > 1 else 0
        self.running: dict[int, tuple[dict, subprocess.Popen, float]] = {}  # slot -> (run, process, start)
        self.stopped_by: Optional[str] = None
        self.failed = False

    def run(self, todo: list[dict]) -> Optional[str]:
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            queue = list(todo)
            while queue or self.running:
                while queue and len(self.running) < self.jobs and not (self.stopped_by or self.failed):
                    self.start(queue.pop(0))
                if not self.running:
                    break
                self.reap()
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stopped_by

    def on_signal(self, signum, frame) -> None:
        self.stopped_by = self.stopped_by or signal.Signals(signum).name
        for _, process, _ in self.running.values():
            process.send_signal(signum)

    def start(self, run: dict) -> None:
        slot = next(i for i in range(self.jobs) if i not in self.running)
        out = self.folder / run["dir"]
        resuming = (out / "checkpoints").is_dir()  # stopped or failed before: continue it
        if out.exists() and not resuming:
            shutil.rmtree(out)  # stopped before its first checkpoint: this sweep's own folder, nothing to keep
        command = [sys.executable, str(TRAIN)] + ([f"resume={out}"] if resuming else [*run["overrides"],
                                                                                     f"out_dir={out}"])
        command += [f"threads={self.threads}"] if self.threads else []
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": str(slot % self.gpus)} if self.gpus > 1 else {})}
        log = open(self.folder / f"{run['dir']}.log", "a")  # the run's console; train.log is in its folder
        print(f"[{int(run['dir']) + 1}/{len(self.state['runs'])}] {varying(self.state, run)}: "
              f"{'resumed' if resuming else 'started'} (console: {self.folder / (run['dir'] + '.log')})", flush=True)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.running[slot] = (run, process, time.perf_counter())

    def reap(self) -> None:
        for slot, (run, process, started) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[slot]
            run["returncode"] = code
            run["status"] = "done" if code == 0 else "stopped" if code in STOP_EXIT_CODES.values() else "failed"
            self.failed |= run["status"] == "failed"
            save_state(self.folder, self.state)
            print(f"[{int(run['dir']) + 1}/{len(self.state['runs'])}] {varying(self.state, run)}: {run['status']}"
                  f" after {duration(time.perf_counter() - started)}" + (
                      f" (exit code {code}; see {self.folder / (run['dir'] + '.log')})" if run["status"] == "failed"
                      else ""), flush=True)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def report(folder: Path, state: dict) -> None:
    """The table of the runs (printed, and SWEEP/sweep.md) and SWEEP/sweep.png, by plot.py."""
    rows = ["| run | overrides | status | steps | best val loss | best val bpb | time |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    drawn = []
    for run in state["runs"]:
        entries = read_metrics(folder / run["dir"]) if (folder / run["dir"] / "metrics.jsonl").is_file() else []
        evals = [e for e in entries if e["kind"] == "eval"]
        steps = max((e["step"] for e in entries), default=0)
        seconds = max((e.get("elapsed_s") or 0 for e in entries), default=0)
        best = min(evals, key=lambda e: e["val_loss"], default=None)  # its bpb: the same evaluation's
        loss = f"{best['val_loss']:.4f}" if best else "n/a"
        bpb = f"{best['val_bpb']:.3f}" if best and best.get("val_bpb") is not None else "n/a"
        rows.append(f"| {run['dir']} | {varying(state, run)} | {run['status']} | {steps} | {loss} | {bpb} | "
                    f"{duration(seconds)} |")
        if entries:
            drawn.append(run)
    table = "\n".join(rows + ["", f"every run: {' '.join(shared(state)) or '(nothing shared)'}"])
    print(table)
    (folder / "sweep.md").write_text(table + "\n")
    if drawn:
        plot = [sys.executable, str(TRAIN.with_name("plot.py")), *(str(folder / r["dir"]) for r in drawn),
                "--out", str(folder / "sweep.png"), "--labels", *(varying(state, r) for r in drawn),
                "--title", f"sweep {folder}" + (f": {' '.join(shared(state))}" if shared(state) else "")]
        result = subprocess.run(plot, capture_output=True, text=True)
        print(result.stdout.strip() or result.stderr.strip())


def shared(state: dict) -> list[str]:
    """The overrides every run of the sweep has."""
    columns = list(zip(*(r["overrides"] for r in state["runs"])))
    return [column[0] for column in columns if len(set(column)) == 1]


def varying(state: dict, run: dict) -> str:
    """The run's overrides that differ between the runs of the sweep: its label in the picture."""
    columns = list(zip(*(r["overrides"] for r in state["runs"])))
    return " ".join(value for value, column in zip(run["overrides"], columns) if len(set(column)) > 1)
