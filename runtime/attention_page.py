"""One self-contained HTML page that shows attention step by step, for look.py.

The page (attention_page.html beside this file) holds its numbers as JSON in the file itself: no server,
no network, no library, so it opens from disk in any browser and can be attached to an issue. For each
run, layer and head it stores the scores of step (5) before the mask, q_i . k_j / sqrt(D), as model/
attention.py's `attention_scores` computed them, and the length of each value vector v_j. The page
applies the mask M (keys j > i of a causal model get -inf) and the softmax of step (6) itself, exactly as
`attention_weights` does, and shows the weights, their sum, and which values they mix.

How the scores are stored, so that 6 layers x 6 heads x 200 tokens fit in about 1.5 MB: each row i of a
head as its largest score and, for every key, how far below it the score lies in steps of STEP (1/1024,
or more for a row wider than 64): a uint16, so a score is off by at most STEP / 2, a weight by at most
STEP / 2 of itself. A causal model's row i stores keys 0..i only: the mask removes the others. The
uint16s and float32s (row maxima, value lengths; little-endian) are zlib-compressed and base64-encoded;
the browser's DecompressionStream unpacks them. At most 2 bytes a stored score, before base64's 4/3.
"""

import base64
import json
import zlib
from pathlib import Path

import numpy as np

TEMPLATE = Path(__file__).with_name("attention_page.html")
STEP = 1 / 1024  # the scores' resolution: an error of at most 1/2048 in a score
CODES = 65535  # a uint16's range: rows up to 64 wide (64 / STEP) keep STEP


def packed(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 9)).decode("ascii")


def run_spec(name: str, facts: str, tokens: list[str], scores: np.ndarray, value_norms: np.ndarray,
             causal: bool) -> dict:
    """One run's part of the page. scores (layers, heads, T, T): step (5) before the mask, float64;
    value_norms (layers, heads, T): |v_j| of each query head's values."""
    L, H, T, _ = scores.shape
    keep = np.tril(np.ones((T, T), dtype=bool)) if causal else np.ones((T, T), dtype=bool)  # what a row stores
    masked = np.where(keep, scores, -np.inf)
    row_max = masked.max(axis=-1)  # (L, H, T)
    below = np.where(keep, row_max[..., None] - scores, 0.0)  # >= 0 where stored
    step = max(STEP, float(below.max()) / CODES)
    codes = np.rint(below / step).astype("<u2")  # (L, H, T, T)
    flat = codes.reshape(L * H, T, T)[:, keep]  # each head's rows, row i of length i + 1 (causal) or T
    return {"name": name, "facts": facts, "tokens": tokens, "T": T, "n_layer": L, "n_head": H, "causal": causal,
            "step": step, "row_max": packed(row_max.astype("<f4")), "scores": packed(flat),
            "values": packed(value_norms.astype("<f4"))}


def write_page(runs: list[dict], legend: str, path: Path) -> int:
    """The page with these runs (run_spec) and legend (HTML) at path; returns its size in bytes."""
    data = json.dumps({"runs": runs, "legend": legend}).replace("</", "<\\/")  # never ends the script early
    text = TEMPLATE.read_text(encoding="utf-8").replace("/*DATA*/", data)
    path.write_text(text, encoding="utf-8")
    return path.stat().st_size


def written_by_look(path: Path) -> bool:
    """Whether path is a page look.py wrote (its generator tag): one look.py may replace."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return '<meta name="generator" content="ropegpt look.py">' in f.read(2000)
    except OSError:
        return False
