"""Compare runs in one picture: their train and val loss against steps and against time.

    python plot.py outputs/2026-12-03/10-00-00                       # one run (train.py draws its loss.png too)
    python plot.py outputs/2026-12-03/10-00-00 outputs/2026-12-03/11-30-00 --out compare.png
    python plot.py outputs/2026-12-03/*                              # every run of a day
    python plot.py outputs/*/*                                       # every run, a sweep's runs included
    python plot.py outputs/sweeps/2026-12-06/14-00-00                # the runs of one sweep

Each RUN is a run folder of train.py (it reads the folder's metrics.jsonl, written at every log line and
evaluation, so a run still training can be drawn), or a folder that holds run folders somewhere below it
(a sweep's outputs/sweeps/DATE/TIME/0, /1, ...): then every run in it, in order (run 2 before run 10).
Runs are labelled by the settings that differ between them (read from the config.yaml train.py saves in
each run folder), by their corpus when that differs, and by their date when they are from different
days; a setting left unset (null) is not named where the rest of a label tells the run apart, and runs
with the same settings are told apart by their folders. --labels names them instead. The title says
what they share. Runs of different tokenizers (a character run beside a BPE run) are drawn in bits per
byte, the measure that compares them (--bpb draws any runs so). plot.py redraws a picture it drew before; any other file at --out is left as it is.
"""

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from runtime.errors import UserError, exit_on_user_error, fail
from runtime.files import as_created
from runtime.plots import in_bits_per_byte, plot_losses, read_metrics

MARK = "ropegpt plot.py"  # the Software text of the PNGs plot.py writes: the only files it may replace
# Settings that do not change what the curves mean (where a run was written, how it was shown), and
# wandb.*: left out of the labels.
IGNORED = {"out_dir", "resume", "progress", "plot", "suggest_cpu_recipe", "threads", "peak_flops", "data.root",
           "data.workers"}
MOST_ITEMS = 5  # settings named in one label; more are counted (+N more)


class PlotError(UserError):
    """Bad input to plot.py. The message says what to do; plot.py exits with code 2."""


def run_folders(given: list[Path]) -> list[Path]:
    """The run folders that the folders given name: a run folder (it has a metrics.jsonl) itself; any
    other folder, every run folder below it (outputs/sweeps/DATE holds TIME/0, TIME/1, ...), in natural
    order (2 before 10). A folder with no run in or below it is refused; a run named twice is drawn once."""
    found = []
    for folder in given:
        if (folder / "metrics.jsonl").is_file():
            found.append(folder)
            continue
        below = sorted({p.parent for p in folder.rglob("metrics.jsonl") if p.is_file()}, key=natural_order) \
            if folder.is_dir() else []
        if not below:
            raise PlotError(f"{folder} is not a run folder of train.py and holds none (no metrics.jsonl there or "
                            "below it): give folders like outputs/DATE/TIME, or a folder that holds them")
        found += below
    unique = {}  # resolved path -> the folder as given, first time named
    for folder in found:
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def natural_order(path: Path) -> list:
    """path's text with each run of digits as a number: a sweep's run 2 sorts before run 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def runs_of(folders: list[Path]) -> list[tuple[int, Path, list[dict]]]:
    """(index, folder, metrics) of each run folder. A run that has not logged a step yet (just started)
    is left out with a note on stderr, so `plot.py outputs/*/*` works while a run starts."""
    runs = []
    for i, folder in enumerate(folders):
        entries = read_metrics(folder)
        if not entries:
            print(f"note: {folder} has not logged a step yet: left out", file=sys.stderr)
            continue
        runs.append((i, folder, entries))
    if not runs:
        raise PlotError("none of the runs has logged a step yet: nothing to draw")
    return runs


# ---------------------------------------------------------------------------------------------
# Labels and title: what differs between the runs, and what they share
# ---------------------------------------------------------------------------------------------


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.01}} as {"optim.lr": 0.01}: the keys as train.py's overrides write them."""
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def settings_of(folder: Path) -> Optional[dict[str, Any]]:
    """The settings a run folder's config says it ran with (the newest: config.resumed-at-step-N.yaml of
    its last resume, else config.yaml), as flat keys; None for a folder without one, or a damaged one."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    resumed = sorted(folder.glob("config.resumed-at-step-*.yaml"),
                     key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    config = resumed[-1] if resumed else folder / "config.yaml"
    try:
        tree = OmegaConf.to_container(OmegaConf.load(config))
    except (OSError, ValueError, OmegaConfBaseException):  # yaml's errors are ValueErrors
        return None
    return flat(tree) if isinstance(tree, dict) else None


def named_models() -> dict[str, tuple[set[str], dict[str, Any]]]:
    """configs/model/NAME.yaml, for each NAME: the keys its YAML sets, and every model setting that
    model=NAME gives (the others are GPTConfig's defaults), as flat keys."""
    from omegaconf import OmegaConf

    from model.gpt import GPTConfig
    from runtime.config import CONFIG_DIR

    defaults, models = dataclasses.asdict(GPTConfig()), {}
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        own = OmegaConf.to_container(OmegaConf.load(path))
        models[path.stem] = set(flat({"model": own})), flat({"model": {**defaults, **own}})
    return models


def model_name(settings: dict[str, Any], models: dict[str, tuple[set[str], dict[str, Any]]]) -> Optional[str]:
    """The configs/model/ name a run was started with: the one whose YAML's settings the run has (it
    may have changed others); None for a model of its own (one from init_from, say)."""
    for name, (own, model) in models.items():
        if all(settings.get(k) == model[k] for k in own):
            return name
    return None


def shown(value: Any) -> str:
    """A setting's value as an override writes it: 0.003, 3e-5, true, null; a long path by its end."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    text = re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}") if isinstance(value, float) else str(value)
    return text if len(text) <= 30 else "…" + text[-29:]


def differences(settings: list[dict[str, Any]], models: dict) -> list[list[str]]:
    """For each run, the items that set it apart from the others: its corpus (data.name) when the
    corpora differ, its model (model=NAME) when the models differ, then each other setting that
    differs, as KEY=VALUE. A setting that model=NAME explains is not repeated, nor the data.path of a
    shared corpus (one run read the text, another found it by data.name: the same tokens); a setting a
    run left unset is dropped where it is not needed (without_unset)."""
    keys = [k for k in dict.fromkeys(k for s in settings for k in s)
            if k not in IGNORED and not k.startswith("wandb.") and len({repr(s.get(k)) for s in settings}) > 1]
    names = [model_name(s, models) for s in settings]
    corpus_differs, names_differ = "data.name" in keys, len(set(names)) > 1
    out = []
    for s, name in zip(settings, names):
        items = [shown(s.get("data.name"))] if corpus_differs else []
        items += [f"model={name}"] if names_differ and name else []
        for k in keys:
            if k.startswith("data.") and corpus_differs:
                continue  # the corpus's own settings (its url, tokenizer...) come with its name
            if k == "data.path":
                continue  # the same data.name: the same prepared tokens, wherever a run read its text from
            if k.startswith("model.") and names_differ and name and s.get(k) == models[name][1].get(k):
                continue
            items.append(f"{k}={shown(s.get(k))}")
        out.append(items)
    return without_unset(out)


def without_unset(labels: list[list[str]]) -> list[list[str]]:
    """Each run's items without its KEY=null ones where the rest still tells it apart from every run of
    other settings: `optim.lr=0.01` beside `optim.lr=0.003 patience=3` says that the first run had no
    patience. A run that differs only by what it left unset keeps them (`patience=null`: the override)."""
    kept = [[item for item in items if not item.endswith("=null")] for items in labels]
    return [kept[i] if kept[i] and all(kept[i] != kept[j] for j in range(len(labels)) if labels[j] != items)
            else items for i, items in enumerate(labels)]


def start_date(folder: Path) -> str:
    """The day a run started: the first time stamp of its train.log, else metrics.jsonl's date."""
    try:
        with open(folder / "train.log", encoding="utf-8", errors="replace") as log:
            if found := re.match(r"\[(\d{4}-\d{2}-\d{2}) ", log.readline()):
                return found[1]
    except OSError:
        pass
    return datetime.fromtimestamp((folder / "metrics.jsonl").stat().st_mtime).strftime("%Y-%m-%d")


def describe(folders: list[Path]) -> tuple[list[str], str]:
    """A legend label for each run (what sets it apart) and a title (what the runs share): e.g. labels
    `model=tiny optim.lr=0.01` and `model=mini optim.lr=0.001`, title `2 runs on shakespeare_char, 2026-12-03`.
    Runs without a config, or with the same settings, are told apart by their folders (told_apart)."""
    settings, models = [settings_of(f) for f in folders], named_models()
    known = [s for s in settings if s is not None]
    found = differences(known, models)
    items, dates = iter(found), [start_date(f) for f in folders]
    labels = []
    for s, date in zip(settings, dates):
        parts = next(items) if s is not None else []
        parts = parts[:MOST_ITEMS] + ([f"+{len(parts) - MOST_ITEMS} more"] if len(parts) > MOST_ITEMS else [])
        labels.append((date if len(set(dates)) > 1 else "", " ".join(parts)))
    title = f"{len(folders)} run{'s' if len(folders) > 1 else ''}"
    if len(known) == len(folders):  # what every run shares: its corpus, its model
        corpora, names = {s.get("data.name") for s in known}, {model_name(s, models) for s in known}
        title += f" on {shown(corpora.pop())}" if len(corpora) == 1 else ""
        title += f", model={names.pop()}" if len(names) == 1 and None not in names else ""
    title += f", {dates[0]}" if len(set(dates)) == 1 else ""
    same = len(folders) > 1 and len(known) == len(folders) and not any(found)
    return told_apart(labels, folders), title + (": the same settings" if same else "")


def told_apart(labels: list[tuple[str, str]], folders: list[Path]) -> list[str]:
    """Each run's (date, settings) as one label. A run that names no setting (one with the same settings
    as the others, or without a config), and runs with the same label, are followed by the end of their
    folder's path, as short as tells them apart: `10-00-00` and `11-30-00` for runs of the same settings;
    `optim.lr=0.01 (10-00-00)` beside `optim.lr=0.01 (11-30-00)`; `14-00-00/0` for a sweep's run."""
    tails = {}
    for label in set(labels):
        group = [i for i, other in enumerate(labels) if other == label]
        if len(group) > 1 or not label[1]:
            paths = [folders[i].parts for i in group]
            depth = next((d for d in range(1, max(map(len, paths)) + 1) if len({p[-d:] for p in paths}) == len(paths)),
                         None)  # None: never, as run_folders draws a folder once
            tails.update({i: str(Path(*folders[i].parts[-depth:])) if depth else str(folders[i]) for i in group})
    out = []
    for i, (date, settings) in enumerate(labels):
        tail = tails.get(i)
        what = f"{settings} ({tail})" if settings and tail else settings or tail
        out.append(f"{date} {what}" if date else what)
    return out


# ---------------------------------------------------------------------------------------------
# The picture: never over a file plot.py did not write
# ---------------------------------------------------------------------------------------------


def drawn_by_plot_py(path: Path) -> bool:
    """Whether path is a PNG that plot.py wrote (its Software text is MARK): a picture plot.py may redraw."""
    from PIL import Image

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get("Software") == MARK
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # not a PNG, or a damaged one
        return False


def destination(wanted: Path) -> Path:
    """wanted, unless a file there is not a picture of plot.py's: then the first of wanted-1, wanted-2,
    ... that is free or plot.py's. A file plot.py did not write is never overwritten."""
    n, out = 1, wanted
    while (out.exists() or out.is_symlink()) and not drawn_by_plot_py(out):
        out, n = wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}"), n + 1
    return out


def tokenizer_of(folder: Path) -> Optional[str]:
    """The tokenizer a run trained with, as its config names it (bpe with its size: bpe1024); None if unknown."""
    s = settings_of(folder) or {}
    kind = s.get("data.tokenizer")
    return f"{kind}{s.get('data.vocab_size')}" if kind == "bpe" else kind


def in_bpb(runs: list[tuple[str, list[dict]]], folders: list[Path], asked: bool) -> Optional[list]:
    """The runs with their losses in bits per byte, where asked (--bpb) or where the runs' tokenizers differ
    (losses per token of different tokenizers do not compare); None to draw losses. A run without bits
    per byte (an older ropegpt's) keeps the picture in losses, with a note that says so."""
    tokenizers = {tokenizer_of(f) for f in folders}
    if not asked and len(tokenizers) < 2:
        return None
    converted = [(label, in_bits_per_byte(entries)) for label, entries in runs]
    missing = [str(f) for f, (_, entries) in zip(folders, converted) if entries is None]
    if missing:
        print(f"note: {', '.join(missing)} logged no bits per byte (trained before ropegpt measured them, or not "
              f"evaluated yet): drawn in losses per token, which do not compare across tokenizers "
              f"({', '.join(sorted(map(str, tokenizers)))})", file=sys.stderr)
        return None
    return converted


def draw(runs: list[tuple[str, list[dict]]], out: Path, title: str, bpb: bool = False) -> None:
    """The picture at out, marked as plot.py's; written beside it, then renamed: never half a PNG."""
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    try:
        plot_losses(runs, partial, title=title, metadata={"Software": MARK}, bpb=bpb)
        as_created(Path(partial))  # mkstemp's file is private (0o600)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every ropegpt command
        fail(f"{message} (python plot.py --help shows the usage)")


def main(argv: list[str] | None = None) -> Path:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run folders of train.py, or folders that hold them (a sweep's)")
    parser.add_argument("--out", type=Path, default=Path("runs.png"),
                        help="the PNG to write (default: runs.png; a picture plot.py drew there is redrawn)")
    parser.add_argument("--labels", nargs="+", help="a name for each run, in order (default: what differs)")
    parser.add_argument("--title", default="", help="the picture's title (default: what the runs share)")
    parser.add_argument("--bpb", action="store_true",
                        help="bits per byte on the y axis (the default when the runs' tokenizers differ)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.out.suffix.lower() != ".png":
            raise PlotError(f"--out {args.out}: give a .png path")
        if not args.out.expanduser().resolve().parent.is_dir():
            raise PlotError(f"--out {args.out}: the folder {args.out.parent} does not exist")
        folders = run_folders([f.expanduser() for f in args.runs])
        if args.labels is not None and len(args.labels) != len(folders):
            raise PlotError(f"--labels has {len(args.labels)} names for {len(folders)} runs: give one per run")
        runs = runs_of(folders)
        labels, title = describe([folder for _, folder, _ in runs])
        if args.labels:
            labels = [args.labels[i] for i, _, _ in runs]
        wanted = args.out.expanduser()
        out = destination(wanted)
        redrawn = out.exists()
        drawn = [(label, entries) for label, (_, _, entries) in zip(labels, runs)]
        converted = in_bpb(drawn, [folder for _, folder, _ in runs], args.bpb)
        draw(converted or drawn, out, args.title or title, bpb=converted is not None)
        count = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
        print(f"wrote {out} ({count})" + (f"; {wanted} was not drawn by plot.py and was left as it was"
                                          if out != wanted else "") +
              ("; it replaces the picture plot.py drew there before" if redrawn else ""))
    return out


if __name__ == "__main__":
    main()
