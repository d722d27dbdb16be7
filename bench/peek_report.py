"""The peek experiment, side by side: a causal model and the same model trained without the mask.

    python train.py experiment=shakespeare_char_cpu     # the causal model
    python train.py experiment=peek                     # the same, with model.causal=false
    python -m bench.peek_report CAUSAL_RUN_DIR PEEK_RUN_DIR

For each run: its last training and validation losses (metrics.jsonl); a sample from the same prompt
and seed; how much its outputs at the first T-1 positions of a validation text change when token T
is appended (T: 64, or the model's context if shorter) (the causal model: not at all, so cached keys and values stay right; the other:
everywhere, so a cache would be stale); and, for the causal model, how far decoding that text token by
token through the KV cache is from one full pass.
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch

from data.config import DataConfig, dataset_dir
from data.loader import BatchSampler
from runtime.checkpoint import find_checkpoint, load_checkpoint
from runtime.errors import exit_on_user_error
from sample import SampleConfig, load_model, sample


def last_losses(run_dir: Path) -> tuple[float, float, float]:
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in entries if e["kind"] == "train"][-1]
    evals = [e for e in entries if e["kind"] == "eval"][-1]
    return train["loss"], evals["train_loss"], evals["val_loss"]


@torch.no_grad()
def prefix_change(model, tokens: torch.Tensor) -> float:
    """Max |change| of the logits at positions 0..T-2 when token T-1 is appended."""
    return (model(tokens[:, :-1])[0] - model(tokens)[0][:, :-1]).abs().max().item()


@torch.no_grad()
def cached_vs_full(model, tokens: torch.Tensor) -> float:
    caches = model.new_kv_caches(1, tokens.size(1))
    steps = torch.cat([model(tokens[:, t : t + 1], kv_caches=caches)[0] for t in range(tokens.size(1))], 1)
    return (steps - model(tokens)[0]).abs().max().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("causal_run", type=Path)
    p.add_argument("peek_run", type=Path)
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--tokens", type=int, default=200)
    args = p.parse_args()
    state = load_checkpoint(find_checkpoint(args.causal_run))
    data_dir = dataset_dir(DataConfig(**state["config"]["data"]))
    val = BatchSampler(data_dir, "val", 64, 1, seed=0).windows(np.array([0]))[0]  # (65,): the first val tokens

    for name, run in (("causal (experiment=shakespeare_char_cpu)", args.causal_run),
                      ("peek (experiment=peek, causal=false)", args.peek_run)):
        ckpt = find_checkpoint(run)
        model, _, _ = load_model(str(ckpt), "outputs", torch.device("cpu"))
        T = min(64, model.config.block_size)
        text = torch.from_numpy(val[:T].astype(np.int64))[None]  # (1, T): the start of the validation text
        last_train, eval_train, eval_val = last_losses(run)
        out, err = io.StringIO(), io.StringIO()
        text_out = sample(SampleConfig(ckpt=str(ckpt), prompt=args.prompt, seed=1337,
                                       max_new_tokens=args.tokens, stream=False), out, err)[0]
        print(f"== {name}: {run}")
        print(f"   losses: last training step {last_train:.4f}; evaluation: train {eval_train:.4f}, val {eval_val:.4f}")
        print(f"   appending a token changes earlier outputs by at most {prefix_change(model, text):.2e}")
        if model.config.causal:
            print(f"   cached decode vs one full pass: max |difference| {cached_vs_full(model, text):.2e}")
        print("   sample (temperature 0.8, top_k 200, seed 1337):\n" + "\n".join(
            "   | " + line for line in text_out.splitlines()))


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
