"""Weight-only int8 against the unrounded weights: val loss and greedy tokens, for a run of train.py.

    python -m bench.int8_quality RUN_DIR [RUN_DIR ...] [--batches 50] [--prompts 20] [--new-tokens 100]

For each run, its checkpoint (best.pt, else last.pt) with fp32 weights and with int8 ones
(model/quantize.py, as `sample.py quantize=int8` loads it): the mean loss on the same fixed batches of
the run's own val split (and the perplexity's change), then greedy continuations of prompts cut from
the val split: how many new tokens equal fp32's before the first that differs, and in all.
"""

import argparse
import statistics
from pathlib import Path

import torch

from data.config import DataConfig, dataset_dir
from data.loader import fixed_batches
from model.generate import complete
from model.gpt import GPT
from model.quantize import quantize_int8
from runtime.checkpoint import find_checkpoint, load_checkpoint
from runtime.errors import exit_on_user_error


@torch.no_grad()
def val_loss(model: GPT, batches: list) -> float:
    return statistics.fmean(model(x, y)[1].item() for x, y in batches)


def agreement(fp32: GPT, int8: GPT, prompts: list[torch.Tensor], new_tokens: int) -> tuple[float, float]:
    """(mean tokens equal before the first difference, share of all new tokens equal) over the prompts."""
    before, equal = [], []
    for prompt in prompts:
        a, b = (complete(m, prompt, new_tokens, temperature=0)[0, prompt.size(1):] for m in (fp32, int8))
        same = (a == b).tolist()
        before.append(same.index(False) if False in same else len(same))
        equal.append(sum(same) / len(same))
    return statistics.fmean(before), statistics.fmean(equal)


def report(run: Path, n_batches: int, n_prompts: int, new_tokens: int) -> dict:
    state = load_checkpoint(find_checkpoint(run, prefer="best.pt"))
    fp32 = GPT.from_state(state["model_config"], state["model"]).eval()
    int8 = quantize_int8(GPT.from_state(state["model_config"], state["model"]))
    block = fp32.config.block_size
    data_dir = dataset_dir(DataConfig(**state["config"]["data"]))
    batches = fixed_batches(data_dir, "val", block, 16, n_batches)
    prompt_len = min(32, block // 2)
    windows = fixed_batches(data_dir, "val", prompt_len, 1, n_prompts, seed=7)
    before, equal = agreement(fp32, int8, [x for x, _ in windows], min(new_tokens, block - prompt_len))
    losses = {"fp32": val_loss(fp32, batches), "int8": val_loss(int8, batches)}
    return {"run": str(run), "tokenizer": state["data_meta"]["tokenizer"], "params": fp32.num_params(),
            **losses, "ppl_change": torch.tensor(losses["int8"] - losses["fp32"]).exp().item() - 1,
            "equal_before_first_difference": before, "equal_share": equal,
            "new_tokens": min(new_tokens, block - prompt_len)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=50, help="fixed val batches of 16 sequences")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    with exit_on_user_error():
        print("| run | tokenizer | parameters | val loss fp32 | val loss int8 | perplexity | greedy tokens equal "
              "before the first difference | greedy tokens equal |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for run in args.runs:
            r = report(run, args.batches, args.prompts, args.new_tokens)
            print(f"| {r['run']} | {r['tokenizer']} | {r['params']:,} | {r['fp32']:.4f} | {r['int8']:.4f} | "
                  f"{100 * r['ppl_change']:+.2f}% | {r['equal_before_first_difference']:.1f} of {r['new_tokens']} | "
                  f"{100 * r['equal_share']:.1f}% |")


if __name__ == "__main__":
    main()
