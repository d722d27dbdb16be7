"""A CPU proxy of the GPU recipe's overfitting: which dropout placement and schedule length end best.

    python -m bench.overfit_proxy --nanogpt ~/src/nanoGPT      # docs/results.md's table (The GPU recipe), seed 1337
    python -m bench.overfit_proxy --seed 7 --only before all all_3q all_half all_2in5   # its second seed

On one H100 the GPU recipe as it was (experiment=shakespeare_char, 5000 steps, dropout on the residual
branches only) saw Tiny Shakespeare about 80 times; its best val loss came at step 1250 and its last
was 0.8 worse. This bench makes the same thing happen in about two minutes per run on a 2-core CPU:
the same blocks (RoPE, SwiGLU, RMSNorm; model=mini's shape), a shorter context, and the first --chars
characters of Tiny Shakespeare as the whole corpus (the first 90% train, the last 10% validate), so
that --steps steps of --batch sequences pass over the training text about 110 times. Each variant is
one `python train.py` run with an evaluation every 1/20 of its steps; the table gives its best val
loss and when, its last, and last - best (the goal: at most 0.01). Variants differ only in where
dropout acts and in how long the learning-rate schedule is (a fraction of --steps: the cosine ends
there, and the run too). Losses, not timings, are the result, so other jobs on the machine only slow it.
With --nanogpt PATH (a clone of github.com/karpathy/nanoGPT, not part of ropegpt) the table gains
nanoGPT's baby GPT at the same shape, data, steps, batch, schedule and dropout 0.2: the anchor on the
same proxy (its evaluations average 20 random batches rather than fixed ones; its seed is always 1337).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import model_config
from bench.vs_nanogpt import NANOGPT_EVAL, timed_evals
from data.config import DataConfig, data_root
from data.download import download
from runtime.errors import UserError, exit_on_user_error
from runtime.plots import read_metrics

REPO = Path(__file__).resolve().parent.parent

# name: (what it is, overrides, fraction of --steps). "before" is the GPU recipe as it ran on the H100.
RESIDUAL_ONLY = ["model.attn_dropout=0", "model.emb_dropout=0"]
VARIANTS = {
    "before": ("dropout on the residual branches only (the H100 run)", RESIDUAL_ONLY, 1.0),
    "all": ("dropout everywhere, as nanoGPT (model.dropout now)", [], 1.0),
    "all_3q": ("dropout everywhere, schedule 3/4 as long", [], 0.75),
    "all_half": ("dropout everywhere, schedule 1/2 as long (the GPU recipe: 2500 steps)", [], 0.5),
    "all_2in5": ("dropout everywhere, schedule 2/5 as long", [], 0.4),
    "all_quarter": ("dropout everywhere, schedule 1/4 as long", [], 0.25),
    "before_half": ("residual dropout only, schedule 1/2 as long", RESIDUAL_ONLY, 0.5),
    "before_quarter": ("residual dropout only, schedule 1/4 as long", RESIDUAL_ONLY, 0.25),
    "no_attn": ("dropout on embeddings and residuals, not attention", ["model.attn_dropout=0"], 1.0),
    "all_0.3": ("dropout 0.3 everywhere", ["model.dropout=0.3"], 1.0),
    "all_0.3_half": ("dropout 0.3 everywhere, schedule 1/2 as long", ["model.dropout=0.3"], 0.5),
}


def corpus_slice(chars: int, folder: Path) -> Path:
    """The first `chars` characters of Tiny Shakespeare (downloaded as `python -m data.prepare` does)."""
    cfg = DataConfig()
    full = download(cfg.url, data_root(cfg) / cfg.download_name, cfg.sha256)
    path = folder / f"tinyshakespeare_first_{chars}.txt"
    path.write_text(full.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return path


def run_variant(name: str, args, corpus: Path, folder: Path) -> dict:
    what, overrides, fraction = VARIANTS[name]
    steps = max(20, round(args.steps * fraction))
    out = folder / name
    cmd = [sys.executable, str(REPO / "train.py"), *args.base, "data=text", f"data.path={corpus}",
           f"data.name=proxy_{args.chars}", f"data.root={folder / 'data'}", f"max_steps={steps}",
           f"eval_interval={max(1, steps // 20)}", f"batch_size={args.batch}", f"optim.warmup_steps={steps // 50}",
           f"seed={args.seed}", *overrides, f"out_dir={out}", "progress=false", "suggest_cpu_recipe=false"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"variant {name} failed: {r.stderr.strip().splitlines()[-1:]}")
    evals = [e for e in read_metrics(out) if e["kind"] == "eval"]
    best = min(evals, key=lambda e: e["val_loss"])
    last = evals[-1]
    return {"name": name, "what": what, "steps": steps, "best": best["val_loss"], "best_step": best["step"],
            "last": last["val_loss"],
            "curve": [(e["step"], round(e["val_loss"], 4)) for e in evals]}


def run_nanogpt(nanogpt: Path, args, corpus: Path, folder: Path) -> dict:
    """nanoGPT's train.py on the same slice (prepared by its own data/shakespeare_char/prepare.py)."""
    name = f"ropegpt_proxy_{args.chars}"
    data = nanogpt / "data" / name
    data.mkdir(exist_ok=True)
    shutil.copy(corpus, data / "input.txt")
    shutil.copy(nanogpt / "data" / "shakespeare_char" / "prepare.py", data / "prepare.py")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    m, steps = model_config("mini"), args.steps  # the proxy's shape

    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--dataset={name}", "--device=cpu",
           "--compile=False", f"--n_layer={m.n_layer}", f"--n_head={m.n_head}", f"--n_embd={m.n_embd}",
           f"--block_size={m.block_size}",
           f"--batch_size={args.batch}", f"--max_iters={steps}", f"--lr_decay_iters={steps}",
           f"--warmup_iters={steps // 50}", f"--eval_interval={max(1, steps // 20)}", "--eval_iters=20",
           "--log_interval=100000", "--dropout=0.2", f"--out_dir={folder / 'nanogpt'}"]
    _, evals = timed_evals(cmd, nanogpt, NANOGPT_EVAL)
    evals = [(step, val) for _, step, val in evals if step > 0]
    best = min(evals, key=lambda e: e[1])
    return {"name": "nanogpt", "what": "nanoGPT's baby GPT, dropout 0.2 everywhere", "steps": steps, "best": best[1],
            "best_step": best[0], "last": evals[-1][1], "curve": evals}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chars", type=int, default=10_000, help="the corpus: Tiny Shakespeare's first this many chars")
    p.add_argument("--steps", type=int, default=1000, help="the full schedule's steps (the GPU recipe's 5000)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--seed", type=int, default=1337, help="train.py's seed (initial weights, batches, dropout)")
    p.add_argument("--base", nargs="*", default=["model=mini", "model.dropout=0.2", "dtype=fp32", "compile=false",
                                                  "eval_batches=20", "log_interval=100000", "optim.lr=1e-3",
                                                  "optim.min_lr=1e-4"],
                   help="train.py settings every variant shares (the GPU recipe's optimizer; model=mini's shape)")
    p.add_argument("--only", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--json", type=Path, help="also write the results (with each val curve) here")
    p.add_argument("--nanogpt", type=Path, help="a clone of github.com/karpathy/nanoGPT: add its row")
    args = p.parse_args()
    with exit_on_user_error(), tempfile.TemporaryDirectory() as tmp:
        corpus = corpus_slice(args.chars, Path(tmp))
        rows = []
        print(f"corpus: Tiny Shakespeare's first {args.chars:,} characters; {args.steps} steps x {args.batch} "
              f"sequences; seed {args.seed}; {' '.join(args.base)}\n", flush=True)
        print("| variant | what | steps | best val (step) | last val | last - best |")
        print("| --- | --- | --- | --- | --- | --- |", flush=True)
        for name in args.only + (["nanogpt"] if args.nanogpt else []):
            r = (run_nanogpt(args.nanogpt.expanduser(), args, corpus, Path(tmp)) if name == "nanogpt" else
                 run_variant(name, args, corpus, Path(tmp)))
            rows.append(r)
            print(f"| {name} | {r['what']} | {r['steps']} | {r['best']:.4f} ({r['best_step']}) | {r['last']:.4f} | "
                  f"{r['last'] - r['best']:+.4f} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
