"""CPU threads that fit the cores other programs leave free (runtime/threads.py): measured from /proc/stat,
chosen at start-up by train.py, sample.py and data preparation, changed during training, never when given."""

import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch

from data.config import DataConfig
from data.prepare import prepare
from runtime import threads
from runtime.threads import Threads, Usage, share
from sample import main as sample_main
from tests.helpers import REPO
from train import main as train_main

linux = pytest.mark.skipif(Usage.now() is None, reason="needs /proc/stat (Linux)")
SPIN = [sys.executable, "-c", "while True: pass"]  # another program that keeps one core busy


def test_the_share_of_threads_follows_the_free_cores():
    assert [share(o, 2, 2) for o in (0.0, 0.3, 0.6, 1.0, 1.5, 2.0)] == [2, 2, 1, 1, 1, 1]  # at least 1
    assert share(0.0, 4, 8) == 4 and share(2.0, 4, 8) == 3 and share(8.0, 4, 8) == 1  # 8 logical, 4 physical


@linux
def test_a_busy_program_is_measured_as_one_core_and_this_process_is_not_counted():
    everywhere = os.sched_getaffinity(0)
    one = {min(everywhere)}
    os.sched_setaffinity(0, one)  # this thread, and what Usage counts: one core (whatever else the machine does)
    try:
        before, t = Usage.now(), time.monotonic()
        while time.monotonic() - t < 0.5:  # this process busy (in Python: torch's threads may sit on other cores)
            sum(range(1000))
        now = Usage.now()
        ours = (now.ours - before.ours) / (now.at - before.at)
        mine = now.others_since(before)
        spinner = subprocess.Popen(SPIN, preexec_fn=lambda: os.sched_setaffinity(0, one))
        try:
            time.sleep(0.3)
            before = Usage.now()
            time.sleep(0.5)
            spinning = Usage.now().others_since(before)
        finally:
            spinner.kill()
    finally:
        os.sched_setaffinity(0, everywhere)
    assert ours > 0.2 and mine < 1.1 - ours, (ours, mine)  # counted as busy, this process would make it ~1.0
    assert spinning > 0.85, spinning  # the spinner on the core, this process asleep


class FakeUsage:
    """Usage.now() giving other programs' cores as a test says, one measurement per call."""

    def __init__(self, monkeypatch, others: list[float]):
        self.others, self.usage = list(others), None
        monkeypatch.setattr(threads.Usage, "now", classmethod(lambda cls: self.next()))
        monkeypatch.setattr(threads.time, "sleep", lambda s: None)
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.usage.at + threads.CHECK_EVERY_S)

    def next(self) -> Usage:
        """The first reading; then each one CHECK_EVERY_S later, with the next share of the cores busy."""
        u = self.usage
        self.usage = Usage(0.0, 0.0, 0.0) if u is None else Usage(
            u.busy + threads.CHECK_EVERY_S * self.others.pop(0), u.ours, u.at + threads.CHECK_EVERY_S)
        return self.usage


def test_training_takes_fewer_threads_at_once_and_more_after_two_free_measurements(monkeypatch):
    said = []
    FakeUsage(monkeypatch, [0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    monkeypatch.setattr(threads, "cores", lambda: [0, 1])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        t = Threads(torch.device("cpu"), None, said.append)
        seen = [t.choose()]
        for _ in range(5):
            t.check()
            seen.append(torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    # free; busy: 1 at once; busy; free once: stays; free twice: 2; busy: 1
    assert seen == [2, 1, 1, 1, 2, 1], said
    assert said[0] == "CPU threads: 2 of 2 (2 cores free); threads=N sets them"
    assert said[1] == "CPU threads: 2 -> 1 (other programs keep 1.0 of 2 cores busy); threads=N fixes them"
    assert len(said) == 4  # one line per change


def test_threads_given_are_never_changed_and_put_back_after(monkeypatch):
    FakeUsage(monkeypatch, [2.0] * 3)
    before, said = torch.get_num_threads(), []
    t = Threads(torch.device("cpu"), 3, said.append)
    with t.chosen() as n:
        t.check()
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before and said == ["CPU threads: 3 (threads=3)"]


@contextmanager
def two_cores_one_busy():
    """This process (and what it starts) on 2 cores, torch's default of 2 threads, while another program
    keeps one of the cores busy."""
    everywhere, threads_before = os.sched_getaffinity(0), torch.get_num_threads()
    cpus = set(sorted(everywhere)[:2])
    spinner = subprocess.Popen(SPIN, preexec_fn=lambda: os.sched_setaffinity(0, {min(cpus)}))
    try:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(2)
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        os.sched_setaffinity(0, everywhere)
        torch.set_num_threads(threads_before)


BUSY = "CPU threads: 1 of 2 (other programs keep"


@linux
@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_train_sample_and_prepare_beside_a_busy_program_take_the_free_core(tmp_path, data_root, capsys, caplog):
    run = tmp_path / "run"
    args = ["model=tiny", f"data.root={data_root}", "max_steps=2", "batch_size=2", "eval_batches=1", "compile=false",
            "suggest_cpu_recipe=false", "progress=false"]
    with two_cores_one_busy():
        r = subprocess.run([sys.executable, "train.py", *args, f"out_dir={run}"], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert r.returncode == 0 and BUSY in r.stdout, r.stdout + r.stderr  # the command as a user runs it
        train_main([f"resume={run}", "max_steps=3"])  # a resumed run chooses too
        sample_main([f"ckpt={run}", "prompt=a", "max_new_tokens=2"])
        assert capsys.readouterr().err.count(BUSY) == 1  # sample.py says it on stderr; train.py on stdout
        corpus = tmp_path / "notes.jsonl"  # 200 documents: tokenized by worker processes
        corpus.write_text("".join(f'{{"text": "note {i}"}}\n' for i in range(200)))
        with caplog.at_level(logging.INFO):
            prepare(DataConfig(path=str(corpus), root=str(tmp_path / "data"), name="notes"))
        train_main([*args, "threads=2", f"out_dir={tmp_path / 'given'}"])
    assert "tokenizer processes: 1 (other programs keep" in caplog.text
    said = (run / "train.log").read_text()
    assert said.count(BUSY) == 2, said  # the first run's line and the resumed run's
    assert "CPU threads: 2 (threads=2)" in (tmp_path / "given" / "train.log").read_text()
