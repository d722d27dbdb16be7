"""resume= with no step left to take (a finished run; stop_step= or max_steps= at or before the checkpoint's
step): one line, exit 2, and the run folder unchanged to the byte. A larger max_steps trains on, and a sweep
continued after it lost track of a finished run skips that run instead of failing on it. CPU only."""

import json
import re
from pathlib import Path

import pytest

import train as train_module
from runtime.checkpoint import load_checkpoint, save_checkpoint
from runtime.config import compose
from tests.helpers import copy_run, fingerprint, run_command, train_once
from training import TrainError, resume
from train import TrainConfig

TINY = ["model=tiny", "batch_size=4", "eval_batches=2", "log_interval=1", "eval_interval=4", "progress=false",
        "compile=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tinyshakespeare) -> Path:
    """A tiny run that finished: 4 of max_steps=4, evaluated at step 4. Each test gets a copy."""
    return train_once(tmp_path_factory, tinyshakespeare, [*TINY, "max_steps=4"])


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return copy_run(trained, tmp_path)


def resumed(run: Path, *overrides: str) -> TrainConfig:
    """training.resume.resumed_config as train.py's setup calls it: this command line, the whole checkpoint."""
    line = [f"resume={run}", *overrides]
    return resume.resumed_config(compose("train", TrainConfig, line), line, load_checkpoint(run / "checkpoints"
                                                                                            / "last.pt"))


def test_a_finished_run_is_refused_with_its_step_best_val_loss_and_the_max_steps_to_give(run):
    best = load_checkpoint(run / "checkpoints" / "last.pt")["best_val_loss"]
    with pytest.raises(TrainError) as e:
        resumed(run)
    assert str(e.value) == (f"{run} already finished at step 4 of max_steps=4 (best val loss {best:.4f}): add "
                            f"max_steps=N (more than 4) to train further, e.g. python train.py resume={run} max_steps=8")


@pytest.mark.parametrize("overrides,says", [
    (["max_steps=3"], "already finished at step 4 of max_steps=4 (best val loss {best}): max_steps=3 trains nothing; "
                      "give max_steps=N (more than 4)"),
    (["max_steps=8", "stop_step=4"], "stop_step=4 trains nothing; give a stop_step more than 4, or leave it out to "
                                     "train on to max_steps=8"),
    (["max_steps=8", "stop_step=2"], "stop_step=2 trains nothing"),
])
def test_a_resume_whose_max_steps_or_stop_step_is_not_past_the_checkpoint_is_refused(run, overrides, says):
    best = f"{load_checkpoint(run / 'checkpoints' / 'last.pt')['best_val_loss']:.4f}"
    with pytest.raises(TrainError, match=f"^{re.escape(str(run))} already finished at step 4 ") as e:
        resumed(run, *overrides)
    assert says.format(best=best) in str(e.value)


def test_a_stopped_run_resumes_with_a_stop_step_past_its_step_and_refuses_one_at_or_before_it(run):
    last = run / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(last)
    checkpoint["config"]["max_steps"] = 8  # as if stopped at step 4 of 8 (Ctrl-C, or stop_step=4)
    save_checkpoint(checkpoint, last)
    cfg = resumed(run, "stop_step=5")
    assert (cfg.max_steps, cfg.stop_step) == (8, 5)
    with pytest.raises(TrainError) as e:
        resumed(run, "stop_step=4")
    assert str(e.value) == (f"{run} is at step 4 of max_steps=8 (best val loss {checkpoint['best_val_loss']:.4f}): "
                            "stop_step=4 trains nothing; give a stop_step more than 4, or leave it out to train on "
                            "to max_steps=8")


def test_resuming_a_finished_run_exits_2_with_one_line_and_changes_no_byte_of_its_folder(run, capsys, monkeypatch):
    monkeypatch.chdir(run.parent)
    before = fingerprint(run)
    with pytest.raises(SystemExit) as e:
        train_module.main([f"resume={run}"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and err.count("\n") == 1, err  # one line
    assert err.startswith(f"error: {run} already finished at step 4 of max_steps=4 (best val loss ")
    assert err.rstrip().endswith(f"e.g. python train.py resume={run} max_steps=8") and "Traceback" not in out + err
    assert fingerprint(run) == before  # no log line appended, no config.resumed-at-step-4.yaml, no checkpoint touched


def test_a_finished_run_resumed_with_a_larger_max_steps_trains_on(run):
    train_module.main([f"resume={run}", "max_steps=6"])
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    assert (run / "config.resumed-at-step-4.yaml").is_file()


def test_finished_tells_a_run_at_its_end_step_from_one_with_steps_left(run, tmp_path):
    """What a sweep skips: a run at the max_steps, or the stop_step, it was started with."""
    last = run / "checkpoints" / "last.pt"
    assert resume.finished(run)  # 4 of max_steps=4
    checkpoint = load_checkpoint(last)
    checkpoint["config"]["max_steps"] = 8
    save_checkpoint(checkpoint, last)
    assert not resume.finished(run)  # 4 of 8: what a Ctrl-C at step 4 leaves
    checkpoint["config"]["stop_step"] = 4
    save_checkpoint(checkpoint, last)
    assert resume.finished(run)  # started with stop_step=4: it stopped where it was asked to
    assert not resume.finished(tmp_path / "nothing")  # no checkpoint, nothing finished


@pytest.mark.slow
def test_a_sweep_continued_after_losing_track_of_a_finished_run_skips_it(trained, tmp_path):
    """sweep.json says stopped (Ctrl-C in a run's last step, exit 130; or the sweep killed before it saw
    the exit), but the run's checkpoint is at its max_steps: the continuation must not fail on it."""
    root = load_checkpoint(trained / "checkpoints" / "last.pt")["config"]["data"]["root"]
    folder = tmp_path / "sweep"
    args = ["train.py", "-m", *TINY, f"data.root={root}", "max_steps=2", "optim.lr=1e-3,3e-3", f"sweep_dir={folder}"]
    assert run_command(*args, timeout=600).returncode == 0
    state = json.loads((folder / "sweep.json").read_text())
    state["runs"][0]["status"] = "stopped"
    (folder / "sweep.json").write_text(json.dumps(state))
    checkpoints = fingerprint(folder / "0" / "checkpoints")

    again = run_command(*args, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r["status"] for r in json.loads((folder / "sweep.json").read_text())["runs"]] == ["done", "done"]
    assert fingerprint(folder / "0" / "checkpoints") == checkpoints
