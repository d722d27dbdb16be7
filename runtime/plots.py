"""Pictures: a run's loss curves (training/validator.py draws a run's loss.png; plot.py overlays runs), and attention
heatmaps (one per layer and head, tokens on both axes, one colour scale)."""

import json
import math
import statistics
from pathlib import Path
from typing import Optional

import torch

DPI = 100
INCHES_PER_TOKEN = 0.13  # about 13 pixels per token: room for a 6-point label on each row and column


NEEDED = {"train": ("step", "loss", "elapsed_s"), "eval": ("step", "val_loss", "elapsed_s")}
START = 0.05  # the first 5% of steps, where the loss falls fastest from its first value, sets no y limit


def read_metrics(run_dir: Path) -> list[dict]:
    """The entries of a run folder's metrics.jsonl that a picture can use, in order: one per log line
    ("train") and evaluation ("eval"). A line cut short by a kill, or damaged, is skipped; after a
    resume from an earlier checkpoint a step logged twice keeps its later entry, as in training."""
    text = (Path(run_dir) / "metrics.jsonl").read_bytes().decode("utf-8", errors="replace")
    latest = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in NEEDED.get(
                entry.get("kind"), ("-",))):
            latest.pop((entry["kind"], entry["step"]), None)  # re-inserted: the order of the later entry
            latest[(entry["kind"], entry["step"])] = entry
    return sorted(latest.values(), key=lambda e: (e["kind"], e["step"]))


def in_bits_per_byte(entries: list[dict]) -> Optional[list[dict]]:
    """A run's metrics with every loss in bits per byte, so runs of different tokenizers compare: an
    evaluation's val_bpb and train_bpb as they were logged, and each training loss by the bits per
    nat of the train split's evaluations (its tokens per byte / ln 2, the same at every evaluation). None
    for a run without bits per byte (one trained by an older ropegpt, or not evaluated yet)."""
    rated = [e for e in entries if e.get("kind") == "eval" and e.get("train_bpb") and e.get("val_bpb")
             and e.get("train_loss")]
    if not rated:
        return None
    per_nat = rated[0]["train_bpb"] / rated[0]["train_loss"]
    return [{**e, "loss": e["loss"] * per_nat} if e.get("kind") == "train" else
            {**e, "train_loss": e.get("train_bpb"), "val_loss": e.get("val_bpb")} if e.get("kind") == "eval" else e
            for e in entries if e.get("kind") != "eval" or e.get("val_bpb") is not None]


def without_spikes(losses: list[float]) -> list[float]:
    """A run's training losses, each as the median of it and its two neighbours on each side: a spike of
    one or two log lines sinks to its neighbours' level, while a curve's steady fall stays as it is.
    Near the ends the window shrinks to stay centred (the first and last losses are kept: a one-sided
    window would lower the first point of a falling curve). A run of under 10 log lines is kept as it is
    (too few neighbours to tell a spike)."""
    if len(losses) < 10:
        return losses
    n = len(losses)
    return [statistics.median(losses[i - w:i + w + 1]) for i in range(n) for w in [min(2, i, n - 1 - i)]]


def loss_limits(runs: list[tuple[str, list[dict]]]) -> Optional[tuple[float, float, bool]]:
    """The y range that shows every run's curves: (bottom, top, cut), cut when some loss is above top.

    A first loss of 10.8 (a fresh model's) would squeeze curves that end near 1.5 into a flat line at
    the bottom, and so would a run stopped after one log line. So only the losses logged after the
    first 5% of the longest run's steps set the top (all of them when there are none: a short run),
    training losses without their spikes (without_spikes); the bottom is the lowest loss drawn.
    None when no loss is finite (nothing to scale to)."""
    drawn, kept = [], []  # (step, loss) of every point drawn; those that may set the top
    for _, entries in runs:
        train = [(e["step"], e["loss"]) for e in entries if e.get("kind") == "train" and math.isfinite(e["loss"])]
        evals = [(e["step"], e["val_loss"]) for e in entries
                 if e.get("kind") == "eval" and math.isfinite(e["val_loss"])]  # averages: no spikes
        drawn += train + evals
        kept += list(zip([s for s, _ in train], without_spikes([loss for _, loss in train]))) + evals
    if not drawn:
        return None
    horizon = START * max(step for step, _ in drawn)
    top = max(loss for _, loss in [p for p in kept if p[0] > horizon] or kept)
    bottom = min(loss for _, loss in drawn)
    margin = 0.05 * (top - bottom) or 0.05 * abs(top) or 0.1  # room above and below the curves
    bottom, top = bottom - margin, top + margin
    return bottom, top, any(loss > top for _, loss in drawn)


PANELS = (12.0, 4.5)  # inches: the two panels with their axis labels and the title; legend and notes go below
MARKED = 30  # a curve of at most this many points has a marker on each: the steps a run logged show
FEW = 5  # a run of fewer training losses gets bigger markers and a note: a few points, not a curve


def plot_losses(runs: list[tuple[str, list[dict]]], path: str | Path, title: str = "",
                metadata: Optional[dict] = None, bpb: bool = False) -> list[dict]:
    """Save loss curves of one or more runs as a PNG: loss against steps (left) and against time
    (right); the training loss as a thin line, the validation loss as dots joined, one colour per run
    (ten colours, then the same ten with dashed and dotted lines). The y axis shows what loss_limits
    chooses. Below the panels, where it covers no curve and no label: the legend, one entry per run,
    and notes (where the first losses are cut off; which runs logged too few points for a curve).
    runs: (label, metrics.jsonl entries) pairs; metadata: the PNG's text entries (matplotlib's savefig);
    bpb: the entries' losses are bits per byte (in_bits_per_byte), and the axis says so.
    Returns, per run, the (step, loss) points drawn of each curve, so they can be checked."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=PANELS, dpi=DPI, sharey=True)
    colours, drawn, handles, names = matplotlib.colormaps["tab10"], [], [], []
    for i, (label, entries) in enumerate(runs):
        train = [e for e in entries if e.get("kind") == "train"]
        evals = [e for e in entries if e.get("kind") == "eval"]
        drawn.append({"train": [(e["step"], e["loss"]) for e in train],
                      "val": [(e["step"], e["val_loss"]) for e in evals]})
        colour, line, sparse = colours(i % 10), ("-", "--", ":")[i // 10 % 3], len(train) < FEW
        for ax, x in zip(axes, ("step", "elapsed_s")):
            scale = 60.0 if x == "elapsed_s" else 1.0
            ax.plot([e[x] / scale for e in train], [e["loss"] for e in train], lw=0.8, alpha=0.6, ls=line,
                    color=colour, marker="." if len(train) <= MARKED else None, ms=9 if sparse else 5)
            val, = ax.plot([e[x] / scale for e in evals], [e["val_loss"] for e in evals], marker="o", lw=1.5,
                           ms=5 if sparse else 3, ls=line, color=colour)
        handles.append(val)  # the run's legend entry: its colour and line style
        last = evals[-1] if evals else {}
        in_bpb = f" ({last['val_bpb']:.3f} bits per byte)" if not bpb and last.get("val_bpb") is not None else ""
        names.append(label + (f": last val {last['val_loss']:.4f}{in_bpb}" if evals else "") + (
            f" (only {len(train)} training loss{'es' if len(train) != 1 else ''})" if sparse else ""))
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("minutes since the run started (resumed runs: their commands added up)")
    axes[0].set_ylabel("bits per byte (lower: better, whatever the tokenizer)" if bpb else
                       "loss (cross-entropy, nats per token)")
    for ax in axes:
        ax.grid(alpha=0.3)
        right = max((x for curve in ax.get_lines() for x in curve.get_xdata()), default=0.0)
        ax.set_xlim(0, 1.04 * right or 1.0)  # from the start: a run that logged once, at its end, shows so
    heading = fig.suptitle(title or "loss curves", fontsize=10)
    limits, notes = loss_limits(runs), []
    if limits is not None:
        axes[0].set_ylim(limits[0], limits[1])  # both panels: they share the y axis
        if limits[2]:
            notes.append(f"y axis cut at {limits[1]:.3g}: higher losses (those of the first {START:.0%} of steps, "
                         "and training spikes) go off the top")
    few = [entries for _, entries in runs if sum(e.get("kind") == "train" for e in entries) < FEW]
    if few:
        who = ("the run" if len(runs) == 1 else "every run") if len(few) == len(runs) else \
            f"{len(few)} of the {len(runs)} runs (\"only\" in the legend)"
        steps = max(e["step"] for entries in few for e in entries)
        every = max(1, steps // 20)  # about 20 points: a curve
        notes.append(f"{who} logged fewer than {FEW} training losses (one every log_interval steps): a few points, "
                     f"not a curve; log_interval={every} logs {steps // every} in {steps} steps")
    below_panels(fig, heading, handles, names, notes)
    fig.savefig(path, dpi=DPI, format="png", metadata=metadata)
    plt.close(fig)
    return drawn


def below_panels(fig, heading, handles: list, names: list[str], notes: list[str]) -> None:
    """Make the figure taller by what the legend and the notes need, and put them there, under the panels
    and their axis labels, so they cover nothing: the legend in as many columns (up to 3) as the panels'
    width holds, then the notes, one a line. A title, legend or note wider than the panels widens the
    figure: nothing is cut at its edges."""
    pad, renderer = 0.1, fig.canvas.get_renderer()  # pad: inches between the blocks and at the edges
    for columns in range(min(3, len(names)), 0, -1):
        legend = fig.legend(handles, names, loc="upper center", ncols=columns, fontsize=8, title_fontsize=8,
                            frameon=False, borderaxespad=0,
                            title="thin line: training loss; thick line, round dots: validation loss")
        if columns == 1 or legend.get_window_extent(renderer).width / fig.dpi <= PANELS[0] - 2 * pad:
            break
        legend.remove()
    texts = [fig.text(0.5, 0.0, note, ha="center", va="bottom", fontsize=8, color="dimgray", gid="note")
             for note in notes]
    sizes = [(box.width / fig.dpi, box.height / fig.dpi) for box in (a.get_window_extent(renderer)
                                                                     for a in [legend, *texts])]
    below = sum(h + pad for _, h in sizes) + pad  # inches under the panels
    widest = max(w for w, _ in sizes + [(heading.get_window_extent(renderer).width / fig.dpi, 0)])
    width, height = (math.ceil(inches * fig.dpi) / fig.dpi for inches in (max(PANELS[0], widest + 2 * pad),
                                                                          PANELS[1] + below))  # whole pixels
    fig.set_size_inches(width, height)
    fig.tight_layout(rect=(0, below / height, 1, 1))  # the panels, their labels and the title above it all
    legend.set_bbox_to_anchor((0.5, (below - pad) / height), transform=fig.transFigure)  # its top edge
    top = below - pad - sizes[0][1] - pad
    for note, (_, h) in zip(texts, sizes[1:]):
        note.set_position((0.5, (top - h) / height))  # its bottom edge
        top -= h + pad


def token_label(text: str) -> str:
    """A token as an axis label: visible whitespace, at most 8 characters."""
    text = text.replace("\n", "⏎").replace(" ", "␣").replace("\t", "⇥")
    return text if len(text) <= 8 else text[:7] + "…"


def figure_inches(n_rows: int, n_cols: int, n_tokens: int) -> tuple[float, float]:
    """Width and height of the figure: the panels, plus room for labels and the colour bar."""
    panel = max(2.0, INCHES_PER_TOKEN * n_tokens)
    return panel * n_cols + 2.0, panel * n_rows + 1.6


def plot_attention(maps: torch.Tensor, tokens: list[str], path: str | Path, layer: Optional[int] = None,
                   title: str = "") -> list[torch.Tensor]:
    """Save maps (n_layer, H, T, T) of one sequence as a PNG grid: a row per layer, a column per head.

    layer: only that layer's row. Returns the (T, T) matrices drawn, in order, so they can be checked.
    Weights that are exactly zero (what the causal mask leaves: no query reads a later token) are
    left white, so the mask shows as the empty upper triangle.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    layers = list(range(maps.size(0))) if layer is None else [layer]
    n_heads, T = maps.size(1), maps.size(-1)
    fig, axes = plt.subplots(len(layers), n_heads, figsize=figure_inches(len(layers), n_heads, T), dpi=DPI,
                             squeeze=False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    vmax = float(maps[layers].max())  # one colour scale for every panel
    labels = [token_label(t) for t in tokens]
    fontsize = 6 if T > 16 else 8
    drawn, image = [], None
    for r, l in enumerate(layers):
        for h in range(n_heads):
            A = maps[l, h].float().cpu()
            A = A.masked_fill(A == 0, float("nan"))  # masked: white
            ax = axes[r][h]
            image = ax.imshow(A.numpy(), cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
            drawn.append(A)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.set_xticklabels(labels if r == len(layers) - 1 else [], rotation=90, fontsize=fontsize)
            ax.set_yticklabels(labels if h == 0 else [], fontsize=fontsize)
            ax.tick_params(length=0)
            if r == 0:
                ax.set_title(f"head {h}", fontsize=9)
            if h == 0:
                ax.set_ylabel(f"layer {l}\nquery (row)", fontsize=9)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="attention weight")
    fig.suptitle(title or "attention weights: row = query, column = key it reads", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return drawn
