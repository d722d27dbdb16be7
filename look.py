"""Look at attention in your own model: one HTML page that walks a prompt through scores, mask, softmax and values.

    python look.py ckpt=outputs/2026-12-07/10-00-00 prompt="ROMEO: But soft" out=attention.html
    python look.py ckpt=CAUSAL_RUN compare=PEEK_RUN prompt="ROMEO: But soft" out=peek.html   # two runs, side by side

Open the page from disk in any browser (no server, no network). It shows the prompt's tokens as chips;
pick a layer and a head, click a token (the query), and it shows, as model/attention.py numbers the
steps: (5) each key's score q.k/sqrt(D), then the mask M (a causal model's future keys at -inf, shown
apart from a weight that is merely small), (6) the softmax weights (they sum to 1), (7) the values they
mix most; then the head's whole T x T pattern (hover for numbers) and every head of the layer side by
side. `cache=true` computes the numbers as generation does, a token at a time through the KV cache: under
the causal mask they are the same. `compare=` puts a second run beside the first: the `experiment=peek` run of docs/causal_mask.md,
whose heads read the very token they must predict. The numbers come from the model's own
`attention_scores` (runtime/attention_page.py says how the page stores them).
"""

import html
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from model import attention as attention_code
from data import prompts
from runtime.attention_page import run_spec, write_page, written_by_look
from runtime.config import FREE_TEXT, run_command
from runtime.errors import UserError
from runtime.files import as_created
from sample import load_model


@dataclass
class LookConfig:
    ckpt: Optional[str] = None  # a run folder (its best.pt), a .pt file, a Hugging Face folder; None: the newest run
    compare: Optional[str] = None  # a second run, shown beside the first (e.g. an experiment=peek run)
    prompt: str = field(default="ROMEO: But soft, what light", metadata=FREE_TEXT)  # the page's tokens; FILE:path
    out: str = "attention.html"  # the page to write (a page look.py wrote there is replaced; any other file never)
    runs_dir: str = "outputs"  # where train.py's run folders are, to find the newest one
    cache: bool = False  # the numbers as cached decoding makes them: a token at a time, each query against the cache


class LookError(UserError):
    """Bad input to look.py. The message says what to do; look.py exits with code 2."""


def look(cfg: LookConfig) -> Path:
    """Write the page for cfg's run(s) and prompt; returns its path."""
    out = Path(cfg.out).expanduser()
    if out.suffix.lower() not in (".html", ".htm"):
        raise LookError(f"out={cfg.out}: give an .html path (nothing was written)")
    if not out.resolve().parent.is_dir():
        raise LookError(f"out={cfg.out}: the folder {out.parent} does not exist (nothing was written)")
    if (out.exists() or out.is_symlink()) and not written_by_look(out):
        raise LookError(f"out={cfg.out} exists and is not a page look.py wrote: choose another name (nothing was "
                        "written)")
    text = prompts.read_prompt(cfg.prompt)
    wheres = [cfg.ckpt] + ([cfg.compare] if cfg.compare else [])
    runs = [one_run(where, text, cfg.runs_dir, cfg.cache) for where in wheres]
    fd, partial = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    try:
        size = write_page(runs, legend(), Path(partial))
        as_created(Path(partial))
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"wrote {out} ({size:,} bytes, {len(runs)} run{'s' if len(runs) > 1 else ''}, "
          f"{runs[0]['T']} tokens): open it in a browser")
    return out


def one_run(where: Optional[str], text: str, runs_dir: str, cache: bool = False) -> dict:
    """The page's numbers for one run: every layer's and head's scores (5) and value lengths, for text."""
    model, tokenizer, loaded = load_model(where, runs_dir, torch.device("cpu"))
    ids = prompts.prompt_tokens(tokenizer, text)
    block = model.config.block_size
    if len(ids) > block:
        raise LookError(f"the prompt is {len(ids)} tokens, longer than the context of {block} tokens of {loaded}: "
                        f"shorten it (nothing was written)")
    causal = model.config.causal
    if cache and not causal:
        raise LookError(f"cache=true: {loaded} attends both ways (causal=false), so a KV cache would go stale "
                        "(each output depends on later tokens); leave out cache=true (nothing was written)")
    with torch.no_grad():
        scores, norms = (cached_steps if cache else whole_steps)(model.float(), ids)
    kind = "causal: each token reads only its past" if causal else \
        "causal=false: every token reads every other, the one it must predict included"
    kind += "; computed through the KV cache, one token at a time" if cache else ""
    return run_spec(html.escape(where or "the newest run"), html.escape(f"{loaded}; {kind}; {model.num_params():,} "
                    "parameters"), [tokenizer.decode([i]) for i in ids], scores, norms, causal)


def whole_steps(model, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scores (L, H, T, T) and value lengths (L, H, T) of one forward pass over the whole prompt."""
    layers = model.attention_steps(torch.tensor([ids]))
    return (np.stack([layer["scores"][0].double().numpy() for layer in layers]),
            np.stack([layer["values"][0].norm(dim=-1).float().numpy() for layer in layers]))


def cached_steps(model, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The same numbers as generation makes them: the prompt fed one token at a time through the KV
    cache, each new query scored against the keys the cache holds (0..t). Under the causal mask they are
    those of one pass over the whole prompt (tests/test_attention_page.py: to 1e-5 of the largest score)."""
    L, H, T = model.config.n_layer, model.config.n_head, len(ids)
    scores = np.zeros((L, H, T, T))
    caches = model.new_kv_caches(1, T)

    def scored(layer: int):
        def hook(attn, args, output):  # after the layer's forward: its cache holds keys 0..t
            x, cos, sin, cache = args[:4]
            q = attn.project(x, cos, sin)[0]  # (1, H, 1, D): the new token's query
            t = cache.length - 1
            keys = attention_code.repeat_kv(cache.k[:, :, : t + 1], H)  # (1, H, t + 1, D)
            scores[layer, :, t, : t + 1] = attention_code.attention_scores(q, keys)[0, :, 0].double().numpy()
        return hook

    hooks = [block.attn.register_forward_hook(scored(i)) for i, block in enumerate(model.blocks)]
    try:
        for token in ids:
            model(torch.tensor([[token]]), kv_caches=caches)
    finally:
        for h in hooks:
            h.remove()
    norms = np.stack([attention_code.repeat_kv(c.v[:, :, :T], H)[0].norm(dim=-1).float().numpy() for c in caches])
    return scores, norms


def legend() -> str:
    """The page's legend: each panel and the line of model/attention.py that computes it."""
    source = Path(attention_code.__file__).read_text(encoding="utf-8").splitlines()

    def line(pattern: str) -> int:
        return next(n for n, text in enumerate(source, 1) if re.search(pattern, text))

    at = {"project": line(r"q = self\.wq\(x\)"), "rope": line(r"return apply_rope\(q, cos, sin\)"),
          "repeat": line(r"def repeat_kv"), "scores": line(r"return q @ k\.transpose"),
          "mask": line(r"masked_fill\(~causal_mask"), "softmax": line(r"return torch\.softmax\(scores"),
          "mix": line(r"return weights @ v"), "concat": line(r"y = y\.transpose\(1, 2\)\.reshape")}
    return ("Each panel is a step of <code>model/attention.py</code>. The chips are the prompt's tokens: each "
            f"token's x is projected to a query, a key and a value per head (steps (1)-(2), lines {at['project']}-"
            f"{at['rope']}: q = xW<sub>Q</sub>, k = xW<sub>K</sub>, v = xW<sub>V</sub>, RoPE on q and k; a grouped "
            f"K/V head serves several query heads, line {at['repeat']}). For the query you click, the table shows "
            f"(5) its score against every key, q&middot;k/&radic;D (line {at['scores']}), then the mask M: keys "
            f"after the query get &minus;&infin; (line {at['mask']}), drawn hatched in the heatmaps, unlike a weight "
            f"that is merely small (white); (6) the softmax turns the row into weights that sum to 1 (line "
            f"{at['softmax']}); (7) the output is the weights' mix of the values, and |w&middot;v<sub>j</sub>| says "
            f"how much each key's value brings (line {at['mix']}); (8) the heads' outputs are concatenated and "
            f"projected (line {at['concat']}). The heatmap is one head's every row at once: row = query, column = "
            "key. The page computes steps (5)+M and (6) from the scores the model's own <code>attention_scores"
            "</code> gave, as <code>attention_weights</code> does.")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python look.py key=value ...` (argv: those items; None reads sys.argv)."""
    run_command("look", LookConfig, lambda cfg, args: look(cfg), argv)


if __name__ == "__main__":
    main()
