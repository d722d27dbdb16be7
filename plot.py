"""Compare runs in one picture: their train and val loss against steps and against time.

    python plot.py outputs/2026-12-03/10-00-00                       # one run (train.py draws its loss.png too)
    python plot.py outputs/2026-12-03/10-00-00 outputs/2026-12-03/11-30-00 --out compare.png
    python plot.py outputs/2026-12-03/*                              # every run of a day

Each RUN is a run folder of train.py (it reads the folder's metrics.jsonl, written at every log line and
evaluation, so a run still training can be drawn). Runs are labelled by their folder names, or by --labels.
"""

import argparse
import sys
from pathlib import Path

from runtime.errors import UserError, exit_on_user_error, fail
from runtime.plots import plot_losses, read_metrics


class PlotError(UserError):
    """Bad input to plot.py. The message says what to do; plot.py exits with code 2."""


def runs_of(folders: list[Path], labels: list[str] | None) -> list[tuple[str, list[dict]]]:
    """(label, metrics) of each run folder. A run that has not logged a step yet (just started) is left
    out with a note on stderr, so `plot.py outputs/*/*` works while a run starts."""
    if labels is not None and len(labels) != len(folders):
        raise PlotError(f"--labels has {len(labels)} names for {len(folders)} runs: give one per run")
    unique_names = len({f.name for f in folders}) == len(folders)
    runs = []
    for i, folder in enumerate(folders):
        if not (folder / "metrics.jsonl").is_file():
            raise PlotError(f"{folder} is not a run folder of train.py (no metrics.jsonl there): give folders "
                            "like outputs/DATE/TIME")
        entries = read_metrics(folder)
        if not entries:
            print(f"note: {folder} has not logged a step yet: left out", file=sys.stderr)
            continue
        runs.append((labels[i] if labels else folder.name if unique_names else str(folder), entries))
    if not runs:
        raise PlotError("none of the runs has logged a step yet: nothing to draw")
    return runs


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every ropegpt command
        fail(f"{message} (python plot.py --help shows the usage)")


def main(argv: list[str] | None = None) -> Path:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders of train.py")
    parser.add_argument("--out", type=Path, default=Path("runs.png"), help="the PNG to write (default: runs.png)")
    parser.add_argument("--labels", nargs="+", help="a name for each run, in order (default: the folder names)")
    parser.add_argument("--title", default="", help="the picture's title")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.out.suffix.lower() != ".png":
            raise PlotError(f"--out {args.out}: give a .png path")
        if not args.out.expanduser().resolve().parent.is_dir():
            raise PlotError(f"--out {args.out}: the folder {args.out.parent} does not exist")
        runs = runs_of([f.expanduser() for f in args.runs], args.labels)
        wanted = args.out.expanduser()
        out = free_name(wanted)
        plot_losses(runs, out, title=args.title or f"{len(runs)} run(s)")
        print(f"wrote {out} ({len(runs)} run(s))" + (f"; {wanted} exists and was left as it was" if out != wanted
                                                      else ""))
    return out


def free_name(path: Path) -> Path:
    """path, or path-1, path-2, ... where path exists: a picture already there is never overwritten."""
    n, out = 1, path
    while out.exists():
        out, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return out


if __name__ == "__main__":
    main()
