"""A picture of every run: loss.png in the run folder, and plot.py overlaying runs (runtime/plots.py)."""

import json
from pathlib import Path

import matplotlib.image
import pytest

import plot as plot_command
from training import validator
from runtime.config import compose
from runtime.plots import plot_losses, read_metrics, without_spikes
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
    assert r.stdout.strip() == f"wrote {out} (2 runs)"
    assert matplotlib.image.imread(out).std() > 0.01
    assert plot_command.drawn_by_plot_py(out) and not plot_command.drawn_by_plot_py(two_runs[0] / "loss.png")
    mine = tmp_path / "mine.png"  # the user's own picture (train.py's loss.png: a PNG, not plot.py's)
    mine.write_bytes((two_runs[0] / "loss.png").read_bytes())
    before = fingerprint(tmp_path)
    r = run_command(str(REPO / "plot.py"), *map(str, two_runs), "--out", str(mine), "--labels", "a", "b", timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == (f"wrote {tmp_path / 'mine-1.png'} (2 runs); {mine} was not "
                                                      "drawn by plot.py and was left as it was")
    assert {k: v for k, v in fingerprint(tmp_path).items() if k in before} == before  # mine.png untouched


def test_plot_py_redraws_its_own_picture_and_leaves_other_files_alone(two_runs, tmp_path, capsys, monkeypatch):
    """A second `plot.py RUNS` replaces the runs.png it wrote (the README's name stays the newest
    picture); a file there that plot.py did not write (not a PNG, or a PNG of another program) is kept."""
    monkeypatch.chdir(tmp_path)
    assert plot_command.main([str(two_runs[0])]) == Path("runs.png")
    first = (tmp_path / "runs.png").read_bytes()
    assert capsys.readouterr().out == "wrote runs.png (1 run)\n"
    assert plot_command.main(list(map(str, two_runs))) == Path("runs.png")  # two runs now: a new picture
    assert capsys.readouterr().out == "wrote runs.png (2 runs); it replaces the picture plot.py drew there before\n"
    assert (tmp_path / "runs.png").read_bytes() != first and plot_command.drawn_by_plot_py(tmp_path / "runs.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.png"]  # no -1, no temporary file left
    for theirs in (b"my notes", (two_runs[0] / "loss.png").read_bytes()):
        (tmp_path / "compare.png").write_bytes(theirs)
        for _ in range(2):  # the second time, compare-1.png is plot.py's own: redrawn
            assert plot_command.main([str(two_runs[0]), "--out", "compare.png"]) == Path("compare-1.png")
        assert (tmp_path / "compare.png").read_bytes() == theirs
        assert "compare.png was not drawn by plot.py and was left as it was" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare-1.png", "compare.png", "runs.png"]


def fake_run(folder: Path, template: Path, date: str, **changes) -> Path:
    """A run folder with template's config.yaml (a real one) where changes (flat keys: "optim.lr") are
    set, its metrics.jsonl, and a train.log started on date."""
    from omegaconf import OmegaConf

    folder.mkdir(parents=True)
    config = OmegaConf.load(template / "config.yaml")
    for key, value in changes.items():
        OmegaConf.update(config, key, value)
    OmegaConf.save(config, folder / "config.yaml")
    (folder / "metrics.jsonl").write_bytes((template / "metrics.jsonl").read_bytes())
    (folder / "train.log").write_text(f"[{date} 10:00:00] run folder: {folder}\n")
    return folder


MINI = {"model.block_size": 64, "model.n_layer": 4, "model.n_head": 4, "model.n_kv_head": None, "model.n_embd": 128}


def test_runs_are_labelled_by_what_differs_and_titled_by_what_they_share(two_runs, tmp_path):
    labels, title = plot_command.describe(two_runs)  # trained with optim.lr and optim.min_lr 1e-4 and 1e-2
    day = plot_command.start_date(two_runs[0])
    assert labels == ["optim.lr=0.0001 optim.min_lr=0.0001", "optim.lr=0.01 optim.min_lr=0.01"]
    assert title == f"2 runs on shakespeare_char, model=tiny, {day}"
    t = two_runs[0]
    runs = [fake_run(tmp_path / "a", t, "2026-12-03", **{"optim.lr": 1e-3}),
            fake_run(tmp_path / "b", t, "2026-12-03", **MINI, **{"optim.lr": 3e-3}),
            fake_run(tmp_path / "c", t, "2026-12-04", **{"optim.lr": 1e-3, "data.name": "War_and_Peace_char",
                                                           "data.path": "/home/me/War and Peace.txt"})]
    assert plot_command.describe(runs) == (["2026-12-03 shakespeare_char model=tiny optim.lr=0.001",
                                            "2026-12-03 shakespeare_char model=mini optim.lr=0.003",
                                            "2026-12-04 War_and_Peace_char model=tiny optim.lr=0.001"], "3 runs")
    assert plot_command.describe(runs[:2]) == (["model=tiny optim.lr=0.001", "model=mini optim.lr=0.003"],
                                               "2 runs on shakespeare_char, 2026-12-03")
    same = [fake_run(tmp_path / d / "10-00-00", t, d) for d in ("2026-12-05", "2026-12-06")]
    again = fake_run(tmp_path / "11-30-00", t, "2026-12-06", **{"model.dropout": 0.1})
    assert plot_command.describe(same) == (["2026-12-05 10-00-00", "2026-12-06 10-00-00"],
                                           "2 runs on shakespeare_char, model=tiny: the same settings")
    assert plot_command.describe([same[1], again])[0] == ["model.dropout=0", "model.dropout=0.1"]
    (again / "config.yaml").unlink()  # a run folder without its config: named by its folder
    assert plot_command.describe([same[1], again]) == (["10-00-00", "11-30-00"], "2 runs, 2026-12-06")


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


def write_metrics(folder: Path, losses: dict[int, float], evals: dict[int, float] = {}) -> Path:  # noqa: B006
    """A run folder whose metrics.jsonl logged these training losses and val losses (by step)."""
    folder.mkdir()
    lines = [{"kind": "train", "step": s, "loss": loss, "elapsed_s": s / 10} for s, loss in losses.items()]
    lines += [{"kind": "eval", "step": s, "val_loss": loss, "elapsed_s": s / 10} for s, loss in evals.items()]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def drawn_limits(runs, path, monkeypatch) -> tuple[tuple[float, float], list[str]]:
    """plot_losses's y limits and the notes written on the picture, as the saved figure has them."""
    import matplotlib.pyplot as plt

    seen = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        notes = [t.get_text() for t in fig.texts if t.get_gid() == "note"]
        seen.append((fig.axes[0].get_ylim(), fig.axes[1].get_ylim(), notes))
        return real_savefig(fig, *args, **kwargs)
    monkeypatch.setattr(plt.Figure, "savefig", spy)
    plot_losses([(f.name, read_metrics(f)) for f in runs], path)
    (left, right, notes), = seen
    assert left == right  # one y axis for both panels
    return left, notes


def test_the_y_axis_shows_the_curves_not_the_first_losses(tmp_path, monkeypatch):
    """A fresh model's first loss (10.8) and a run stopped after one log line would flatten the curves
    that end near 1.5: the y axis is set by the losses after the first 5% of steps, spikes aside."""
    import math

    curve = {s: 1.5 + 9.3 * math.exp(-s / 30) for s in range(5, 1001, 5)}  # from 10.8 down to 1.5
    curve[600] = 20.0  # one training spike
    long = write_metrics(tmp_path / "long", curve, {s: 1.55 + 9.3 * math.exp(-s / 30)
                                                            for s in range(100, 1001, 100)})
    stopped = write_metrics(tmp_path / "stopped", {10: 10.8})
    (bottom, top), notes = drawn_limits([long, stopped], tmp_path / "a.png", monkeypatch)
    settled = [loss for s, loss in curve.items() if s > 50 and s != 600]  # after 5% of 1000 steps
    assert bottom <= min(settled) and top >= max(settled) and top < 4.0  # every loss after step 50 shows
    assert top < curve[10] and top < 20.0  # the first losses and the spike are above the axis
    assert len(notes) == 2 and notes[0].startswith(f"y axis cut at {top:.3g}: higher losses")
    assert notes[1].startswith("1 of the 2 runs (\"only\" in the legend) logged fewer than 5")  # the stopped one
    assert matplotlib.image.imread(tmp_path / "a.png").std() > 0.01


def test_the_y_axis_shows_every_loss_of_runs_without_a_first_fall(two_runs, tmp_path, monkeypatch):
    """Real short runs (6 steps), or one log line alone: nothing is cut, and no note says so."""
    losses = [e.get("loss", e.get("val_loss")) for run in two_runs for e in read_metrics(run)]
    (bottom, top), notes = drawn_limits(two_runs, tmp_path / "a.png", monkeypatch)
    assert bottom < min(losses) and max(losses) < top and notes == []
    one = write_metrics(tmp_path / "one", {10: 10.8})
    (bottom, top), notes = drawn_limits([one], tmp_path / "b.png", monkeypatch)
    assert bottom < 10.8 < top and not any(note.startswith("y axis cut") for note in notes)


def test_a_folder_that_holds_runs_gives_every_run_below_it_in_order(two_runs, tmp_path, capsys, monkeypatch):
    """`plot.py outputs/*/*` once a sweep exists: outputs/sweeps/DATE is no run folder, but holds TIME/0,
    TIME/1, ...: those runs are drawn, in natural order (run 2 before run 10), a run named twice once. A
    folder with no run anywhere below it is refused: one line, exit 2, nothing written."""
    t = two_runs[0]
    fake_run(tmp_path / "outputs/2026-12-03/10-00-00", t, "2026-12-03")
    sweep = Path("outputs/sweeps/2026-12-06/14-00-00")
    for i, lr in zip((0, 1, 2, 10), (1e-3, 3e-3, 1e-2, 3e-2)):
        fake_run(tmp_path / sweep / str(i), t, "2026-12-06", **{"optim.lr": lr})
    (tmp_path / sweep / "sweep.json").write_text("{}\n")
    (tmp_path / sweep / "0.log").write_text("")
    monkeypatch.chdir(tmp_path)
    given = sorted(Path("outputs").glob("*/*"))  # what the shell makes of outputs/*/*
    assert given == [Path("outputs/2026-12-03/10-00-00"), Path("outputs/sweeps/2026-12-06")]
    runs = [given[0]] + [sweep / str(i) for i in (0, 1, 2, 10)]
    assert plot_command.run_folders(given + [tmp_path / sweep / "2"]) == runs  # the absolute one: the same run
    assert plot_command.main(list(map(str, given))) == Path("runs.png")
    assert capsys.readouterr().out == "wrote runs.png (5 runs)\n"
    labels, _ = plot_command.describe(runs)
    assert labels[1:] == [f"2026-12-06 optim.lr={lr}" for lr in ("0.001", "0.003", "0.01", "0.03")]

    (tmp_path / "outputs/sweeps/2026-12-07/09-00-00").mkdir(parents=True)  # a sweep that never started a run
    (tmp_path / "outputs/sweeps/2026-12-07/09-00-00/sweep.json").write_text("{}\n")
    before = fingerprint(tmp_path)
    with pytest.raises(SystemExit) as e:
        plot_command.main(["outputs/2026-12-03/10-00-00", "outputs/sweeps/2026-12-07", "--out", "new.png"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: outputs/sweeps/2026-12-07 is not a run folder of train.py and holds none")
    assert fingerprint(tmp_path) == before


def picture_boxes(runs: list[tuple[str, list[dict]]], path: Path, monkeypatch) -> dict:
    """Where plot_losses put each thing in the picture it saved, as pixel boxes: the figure, each panel with
    its tick and axis labels, the legend, the figure's texts (title, notes) and the notes alone."""
    import matplotlib.pyplot as plt

    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        real_savefig(fig, *args, **kwargs)
        r = fig.canvas.get_renderer()
        seen.update(figure=fig.bbox, panels=[ax.get_tightbbox(r) for ax in fig.axes],
                    legends=[legend.get_window_extent(r) for legend in fig.legends + [
                        ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]],
                    texts=[t.get_window_extent(r) for t in fig.texts],
                    notes=[t.get_window_extent(r) for t in fig.texts if t.get_gid() == "note"])
    monkeypatch.setattr(plt.Figure, "savefig", spy)
    plot_losses(runs, path)
    return seen


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_the_legend_and_notes_cover_no_panel_and_nothing_is_cut_at_the_edges(tmp_path, monkeypatch, n):
    """The legend sat on the left panel, over its y axis label and the curves, and the right panel's x label
    could end past the picture's edge. Now the legend and the notes are below the panels and their labels,
    and every panel with its labels, the title, the legend and the notes lie inside the saved picture."""
    import math

    curve = write_metrics(tmp_path / "curve", {s: 1.5 + 9.3 * math.exp(-s / 30) for s in range(5, 1001, 5)},
                          {s: 1.6 + 9.3 * math.exp(-s / 30) for s in range(100, 1001, 100)})
    one = write_metrics(tmp_path / "one", {100: 3.0}, {100: 3.1})  # a short sweep's run: one log line
    runs = [(f"War_and_Peace_char optim.lr=0.00{i} eval_interval=500 patience=3 model.n_layer={i}",
             read_metrics(one if i == 1 else curve)) for i in range(n)]
    boxes = picture_boxes(runs, tmp_path / "a.png", monkeypatch)
    figure, panels, (legend,), notes = boxes["figure"], boxes["panels"], boxes["legends"], boxes["notes"]
    for box in panels + [legend] + boxes["texts"]:
        assert figure.x0 - 0.5 <= box.x0 and box.x1 <= figure.x1 + 0.5, (box, figure)
        assert figure.y0 - 0.5 <= box.y0 and box.y1 <= figure.y1 + 0.5, (box, figure)
    for panel in panels:
        assert not overlap(legend, panel) and not any(overlap(note, panel) for note in notes)
    assert not overlap(*panels) and not any(overlap(note, legend) for note in notes)
    assert not any(overlap(a, b) for i, a in enumerate(notes) for b in notes[i + 1:])
    height, width = matplotlib.image.imread(tmp_path / "a.png").shape[:2]
    assert (width, height) == (round(figure.width), round(figure.height))  # the picture saved is all of it
    assert len(notes) == (1 if n == 1 else 2)  # the y axis cut; and, with the one-line run, its few points


def test_labels_name_what_a_user_set_not_what_a_run_left_unset(two_runs, tmp_path):
    """`patience=null` and `data.path=null` in labels: a setting left unset is not named where the rest of
    the label tells the run apart; data.path is not named between runs of one corpus (one read the text,
    the other found it by data.name: the same tokens); runs of the same settings are told apart by their
    folders, the title saying that their settings are the same."""
    t = two_runs[0]
    plain = fake_run(tmp_path / "2026-12-03/10-00-00", t, "2026-12-03", **{"optim.lr": 1e-3})
    patient = fake_run(tmp_path / "2026-12-03/11-30-00", t, "2026-12-03", **{"optim.lr": 3e-3, "patience": 3})
    assert plot_command.describe([plain, patient])[0] == ["optim.lr=0.001", "optim.lr=0.003 patience=3"]
    book = {"data.name": "War_and_Peace_char", "data.path": "/home/me/War and Peace.txt"}
    read = fake_run(tmp_path / "2026-12-04/09-00-00", t, "2026-12-04", **book)
    found = fake_run(tmp_path / "2026-12-04/10-00-00", t, "2026-12-04", **{**book, "data.path": None, "patience": 3})
    assert plot_command.describe([read, found]) == (["patience=null", "patience=3"],  # patience alone: the override
                                                    "2 runs on War_and_Peace_char, model=tiny, 2026-12-04")
    again = fake_run(tmp_path / "2026-12-03/12-00-00", t, "2026-12-03", **{"optim.lr": 1e-3})
    assert plot_command.describe([plain, again, patient])[0] == [
        "optim.lr=0.001 (10-00-00)", "optim.lr=0.001 (12-00-00)", "optim.lr=0.003 patience=3"]
    assert plot_command.describe([plain, again]) == (
        ["10-00-00", "12-00-00"], "2 runs on shakespeare_char, model=tiny, 2026-12-03: the same settings")
    sweeps = [fake_run(tmp_path / f"sweeps/2026-12-03/{time}/0", t, "2026-12-03", **{"optim.lr": 1e-3})
              for time in ("13-00-00", "14-00-00")]  # the first run of two sweeps: the same folder name
    assert plot_command.describe(sweeps)[0] == ["13-00-00/0", "14-00-00/0"]


def test_a_run_of_few_log_lines_is_drawn_as_points_with_a_note_that_says_so(tmp_path, monkeypatch):
    """A short sweep of the CPU recipe (log_interval=100, max_steps=100) logs one training loss a run: the
    picture was lone dots. Each logged point has a marker, the x axes start at 0, the legend says `only 1
    training loss`, and a note says what gives a curve; a run of enough log lines gets no such note."""
    import matplotlib.pyplot as plt

    short = [write_metrics(tmp_path / f"lr{i}", {100: 2.3 - i / 10}, {100: 2.35 - i / 10}) for i in range(2)]
    seen = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.append({"notes": [t.get_text() for t in fig.texts if t.get_gid() == "note"],
                     "legend": [t.get_text() for t in fig.legends[0].get_texts()],
                     "markers": {line.get_marker() for ax in fig.axes for line in ax.get_lines()},
                     "left": {ax.get_xlim()[0] for ax in fig.axes}})
        return real_savefig(fig, *args, **kwargs)
    monkeypatch.setattr(plt.Figure, "savefig", spy)
    plot_losses([(f.name, read_metrics(f)) for f in short], tmp_path / "sweep.png")
    assert seen[-1]["notes"] == ["every run logged fewer than 5 training losses (one every log_interval steps): "
                                 "a few points, not a curve; log_interval=5 logs 20 in 100 steps"]
    assert seen[-1]["legend"] == ["lr0: last val 2.3500 (only 1 training loss)",
                                  "lr1: last val 2.2500 (only 1 training loss)"]
    assert "None" not in seen[-1]["markers"] and seen[-1]["left"] == {0.0}  # every point drawn, from step 0
    enough = write_metrics(tmp_path / "enough", {s: 3.0 - s / 1000 for s in range(100, 1001, 100)}, {1000: 2.0})
    plot_losses([(f.name, read_metrics(f)) for f in (enough, short[0])], tmp_path / "mixed.png")
    assert seen[-1]["notes"][-1].startswith("1 of the 2 runs (\"only\" in the legend) logged fewer than 5 training")
    assert seen[-1]["legend"][0] == "enough: last val 2.0000"
    plot_losses([("enough", read_metrics(enough))], tmp_path / "enough.png")
    assert not any("logged fewer" in note for note in seen[-1]["notes"]) and seen[-1]["legend"] == [
        "enough: last val 2.0000"]


def test_the_spike_filter_drops_a_lone_spike_and_keeps_both_ends_of_a_falling_curve():
    falling = [3.0 - 0.1 * i for i in range(12)]
    assert without_spikes(falling) == pytest.approx(falling, abs=1e-12)  # the first point is not lowered
    spiky = falling[:5] + [9.0] + falling[6:]
    filtered = without_spikes(spiky)
    assert filtered[5] == pytest.approx(falling[5], abs=0.11) and max(filtered) == pytest.approx(3.0)
