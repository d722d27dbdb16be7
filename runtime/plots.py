"""Pictures of attention: one heatmap per layer and head, tokens on both axes, one colour scale."""

from pathlib import Path
from typing import Optional

import torch

DPI = 100
INCHES_PER_TOKEN = 0.13  # about 13 pixels per token: room for a 6-point label on each row and column


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
