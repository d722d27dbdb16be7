"""Sweeps (`python train.py -m`), Hydra's flags anywhere on the line, and a stopped run's exit code.

Through the real command line, on the tiny model and Tiny Shakespeare's characters.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sample import main as sample_main
from tests.helpers import REPO, fingerprint, run_command
from train import main as train_main

TINY = ["model=tiny", "batch_size=2", "eval_interval=4", "eval_batches=1", "compile=false", "suggest_cpu_recipe=false",
        "log_interval=2"]


def sweep_state(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def test_a_2x2_sweep_runs_every_combination_in_its_folder_with_a_table_and_a_picture(tmp_path, data_root):
    folder = tmp_path / "my sweep"
    r = run_command("train.py", "-m", *TINY, f"data.root={data_root}", "max_steps=4,8", "optim.lr=1e-3,3e-3",
                    f"sweep_dir={folder}", "jobs=2", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = sweep_state(folder)["runs"]
    assert [run["overrides"][-2:] for run in runs] == [  # Hydra's order: the last key varies fastest
        ["max_steps=4", "optim.lr=0.001"], ["max_steps=4", "optim.lr=0.003"],
        ["max_steps=8", "optim.lr=0.001"], ["max_steps=8", "optim.lr=0.003"]]
    assert [run["status"] for run in runs] == ["done"] * 4
    for run in runs:  # each a normal run of train.py, with its own settings
        metrics = [json.loads(line) for line in (folder / run["dir"] / "metrics.jsonl").read_text().splitlines()]
        assert max(e["step"] for e in metrics) == int(run["overrides"][-2].split("=")[1])
        assert (folder / run["dir"] / "checkpoints" / "last.pt").is_file()
    table = (folder / "sweep.md").read_text()
    assert "| 3 | max_steps=8 optim.lr=0.003 | done | 8 |" in table and table in r.stdout.replace("\r", "")
    assert "every run: model=tiny" in table
    assert (folder / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,message", [
    (["optim.lr=1e-3,oops"], "optim.lr"),
    (["model=tiny,giant"], "there is no configs/model/giant.yaml"),
    (["optim.lr=1e-3,3e-3", "jobs=0"], "jobs=0 must be a whole number >= 1"),
    (["optim.lr=1e-3,3e-3", "out_dir=x"], "out_dir=x: a sweep gives each run its own folder"),
    (["optim.lr=1e-3"], "-m with no list of values"),
])
def test_a_sweep_with_a_bad_value_refuses_before_any_run_starts(tmp_path, monkeypatch, capsys, args, message):
    """train.py's main in this process (the command line's own path, without a new interpreter each time)."""
    monkeypatch.chdir(tmp_path)  # where outputs/sweeps/ would be created
    with pytest.raises(SystemExit) as stop:
        train_main([*args, "-m", f"sweep_dir={tmp_path / 'sweep'}", *TINY])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # nothing created: no sweep folder, no outputs/


def test_ctrl_c_stops_a_sweep_and_the_same_command_runs_only_what_is_left(tmp_path, data_root):
    folder = tmp_path / "sweep"
    args = [sys.executable, "train.py", "-m", *TINY, f"data.root={data_root}", "max_steps=4,60", "eval_interval=30",
            "optim.lr=1e-3,3e-3", f"sweep_dir={folder}"]
    sweep = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    metrics = folder / "2" / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and '"train"' in metrics.read_text()):  # run 2 trains
        time.sleep(0.1)
    sweep.send_signal(signal.SIGINT)  # Ctrl-C
    out = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 130, out
    assert [run["status"] for run in sweep_state(folder)["runs"]] == ["done", "done", "stopped", "pending"], out
    assert "unfinished: 2, 3. Continue with: python train.py -m" in out
    assert "stopped at step" in (folder / "2" / "train.log").read_text()

    finished = [fingerprint(folder / "0"), fingerprint(folder / "1")]
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)  # the same command
    assert again.returncode == 0, again.stdout + again.stderr
    assert [run["status"] for run in sweep_state(folder)["runs"]] == ["done"] * 4
    assert "2 finished before" in again.stdout and "max_steps=60 optim.lr=0.001: resumed" in again.stdout
    assert [fingerprint(folder / "0"), fingerprint(folder / "1")] == finished  # not run again
    steps = [json.loads(line)["step"] for line in (folder / "2" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 60


def test_hydra_flags_go_anywhere_on_the_line(capsys):
    train_main(["data=shakespeare", "--cfg"])
    at_end = capsys.readouterr().out
    train_main(["--cfg", "job", "data=shakespeare"])
    assert capsys.readouterr().out == at_end and "tokenizer: gpt2" in at_end
    sample_main(["prompt=hi", "--help"])
    assert "max_new_tokens" in capsys.readouterr().out
    for args, message in [(["--cfg", "hydra"], "ropegpt sets no Hydra options"),
                          (["-m", "prompt=a,b"], "sweeps are train.py's")]:
        with pytest.raises(SystemExit) as stop:
            sample_main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    r = run_command("train.py", "max_steps=3", "--cfg")  # and through a real command line
    assert r.returncode == 0 and "max_steps: 3" in r.stdout


def test_a_stopped_run_says_so_and_exits_130(tmp_path, data_root):
    run = subprocess.Popen([sys.executable, "train.py", *TINY, f"data.root={data_root}", "max_steps=100000",
                            f"out_dir={tmp_path / 'run'}"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and "val loss" not in (
            (tmp_path / "run" / "train.log").read_text() if (tmp_path / "run" / "train.log").exists() else ""):
        time.sleep(0.2)  # until the first evaluation
    run.send_signal(signal.SIGINT)
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 130, out
    last = out.strip().splitlines()[-1]
    best = min(json.loads(line)["val_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
               if '"eval"' in line)
    assert last.startswith("stopped at step ") and f"by SIGINT (best val loss {best:.4f}, " in last, last


def test_a_failed_run_stops_the_sweep_with_one_line_naming_its_log(tmp_path):
    folder = tmp_path / "sweep"
    r = run_command("train.py", "-m", *TINY, "data=text", "data.path=/nonexistent/a.txt,/nonexistent/b.txt",
                    f"sweep_dir={folder}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [f"error: run 0 of the sweep failed (exit code 2): see {folder / '0.log'}"]
    assert [run["status"] for run in sweep_state(folder)["runs"]] == ["failed", "pending"]
    assert "error: no such file or folder: /nonexistent/a.txt (data.path)" in (folder / "0.log").read_text()
