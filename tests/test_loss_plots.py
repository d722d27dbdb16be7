"""A picture of every run: loss.png in the run folder, and plot.py overlaying runs (runtime/plots.py)."""

import json
from pathlib import Path

import matplotlib.image
import pytest

import plot as plot_command
from training import validator
from runtime.config import compose
from runtime.plots import plot_losses, read_metrics
from tests.conftest import copy_tinyshakespeare
from tests.helpers import REPO, fingerprint, metrics, run_command
from train import TrainConfig, train

TINY = ["model=tiny", "batch_size=4", "eval_batches=1", "log_interval=1", "eval_interval=3", "progress=false",
        "compile=false", "suggest_cpu_recipe=false"]


def tiny_run(data_root, out, *overrides):
    return train(compose("train", TrainConfig, [*TINY, f"data.root={data_root}", f"out_dir={out}", *overrides]))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished tiny runs (different learning rates), on Tiny Shakespeare."""
    base = tmp_path_factory.mktemp("runs")
    root = copy_tinyshakespeare(base / "data")
    runs = [base / "slow", base / "fast"]
    for run, lr in zip(runs, ("1e-4", "1e-2")):
        tiny_run(root, run, "max_steps=6", f"optim.lr={lr}", f"optim.min_lr={lr}")
    return runs


def test_each_run_folder_has_a_loss_picture_of_what_metrics_jsonl_holds(two_runs, monkeypatch):
    run = two_runs[0]
    image = matplotlib.image.imread(run / "loss.png")
    assert image.shape[0] > 300 and image.shape[1] > 800 and image.std() > 0.01  # a drawn picture, not blank
    assert not (run / ".loss.png.partial").exists()
    drawn = plot_losses([("r", read_metrics(run))], run.parent / "again.png")[0]
    assert [s for s, _ in drawn["val"]] == [3, 6] == [e["step"] for e in metrics(run, "eval")]
    assert [s for s, _ in drawn["train"]] == [1, 2, 3, 4, 5, 6]


def test_the_picture_is_redrawn_at_each_evaluation_and_never_stops_a_run(data_root, tmp_path, monkeypatch):
    calls = []
    real = validator.plot_losses
    monkeypatch.setattr(validator, "plot_losses", lambda runs, path, title: (calls.append(len(runs[0][1])),
                                                                                 real(runs, path, title)))
    tiny_run(data_root, tmp_path / "a", "max_steps=6")
    assert len(calls) == 2 and calls[0] < calls[1]  # at steps 3 and 6, each time with the entries so far

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(validator, "plot_losses", broken)
    summary = tiny_run(data_root, tmp_path / "b", "max_steps=3")
    assert summary["step"] == 3 and not (tmp_path / "b/loss.png").exists()
    assert "warning: could not draw loss.png (disk full)" in (tmp_path / "b/train.log").read_text()
    tiny_run(data_root, tmp_path / "c", "max_steps=3", "plot=false")
    assert not (tmp_path / "c/loss.png").exists()


def test_plot_py_overlays_runs_and_never_overwrites_a_picture(two_runs, tmp_path):
    out = tmp_path / "compare.png"
    r = run_command(str(REPO / "plot.py"), *map(str, two_runs), "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out} (2 run(s))"
    assert matplotlib.image.imread(out).std() > 0.01
    before = fingerprint(tmp_path)
    r = run_command(str(REPO / "plot.py"), *map(str, two_runs), "--out", str(out), "--labels", "a", "b", timeout=120)
    assert r.returncode == 0 and f"wrote {tmp_path / 'compare-1.png'}" in r.stdout
    assert {k: v for k, v in fingerprint(tmp_path).items() if k in before} == before  # compare.png untouched


def test_a_run_that_has_not_logged_yet_is_left_out_with_a_note(two_runs, tmp_path, capsys, monkeypatch):
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / "metrics.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert plot_command.main([str(two_runs[0]), str(starting)]) == Path("runs.png")
    assert (tmp_path / "runs.png").is_file()
    assert f"note: {starting} has not logged a step yet: left out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        plot_command.main([str(starting)])
    assert e.value.code == 2 and "none of the runs has logged a step yet" in capsys.readouterr().err


def test_more_runs_than_colours_get_other_line_styles(two_runs, tmp_path):
    import matplotlib.pyplot as plt

    entries = read_metrics(two_runs[0])
    seen = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.extend((line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines())
        return real_savefig(fig, *args, **kwargs)
    plt.Figure.savefig = spy
    try:
        plot_losses([(str(i), entries) for i in range(12)], tmp_path / "many.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert len(set(seen)) == 12  # each run's two curves share a (colour, style); no two runs do


@pytest.mark.parametrize("args,message", [(["nowhere"], "nowhere is not a run folder of train.py"),
                                          ([], "the following arguments are required: RUN"),
                                          (["RUN", "--bogus"], "unrecognized arguments: --bogus"),
                                          (["RUN", "--labels", "a", "b"], "--labels has 2 names for 1 runs"),
                                          (["RUN", "--out", "x.jpg"], "--out x.jpg: give a .png path"),
                                          (["RUN", "--out", "no/such/dir/x.png"], "the folder no/such/dir does not")])
def test_plot_py_bad_input_is_one_line_and_exit_2(two_runs, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        plot_command.main([str(two_runs[0]) if a == "RUN" else a for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_damaged_lines_are_skipped_and_a_step_logged_twice_keeps_its_later_entry(tmp_path):
    entry = lambda step, loss: {"kind": "train", "step": step, "loss": loss, "elapsed_s": 1.0}  # noqa: E731
    lines = [json.dumps(entry(1, 4.0)), json.dumps(entry(2, 3.9)), '{"kind": "eval", "st', "[1, 2]",
             json.dumps({"kind": "train", "step": 3}), json.dumps(entry(2, 3.5))]  # resumed from step 1
    (tmp_path / "metrics.jsonl").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe not utf-8\n")
    assert read_metrics(tmp_path) == [entry(1, 4.0), entry(2, 3.5)]
