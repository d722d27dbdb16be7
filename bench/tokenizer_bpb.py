"""Val bits per byte of one training recipe on one text, by tokenizer: characters, BPEs trained on the text
(data.tokenizer=bpe) of several sizes, GPT-2's BPE.

    python -m bench.tokenizer_bpb                                   # the CPU recipe on Tiny Shakespeare
    python -m bench.tokenizer_bpb --tokenizers char bpe1024 --seeds 1 2 --base experiment=shakespeare_bpe_cpu

Each run is `python train.py BASE... data=text data.path=TEXT data.tokenizer=... seed=S` in its own
process, timed from start to exit (preparing the corpus and training the BPE included: the first run of
each tokenizer prepares it). The runs go tokenizer by tokenizer within each seed, so this machine's drift
spreads over all of them. The table: bytes per val token, the last val loss (nats per token, which does not
compare across tokenizers) and its bits per byte (which does), each seed's and their mean, and the wall time.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.errors import UserError, exit_on_user_error

REPO = Path(__file__).resolve().parent.parent
TINYSHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt"


def settings(tokenizer: str) -> list[str]:
    """char, gpt2, bpeN: the data settings of that tokenizer."""
    if tokenizer.startswith("bpe"):
        return ["data.tokenizer=bpe", f"data.vocab_size={int(tokenizer[3:])}"]
    if tokenizer in ("char", "gpt2"):
        return [f"data.tokenizer={tokenizer}"]
    raise UserError(f"--tokenizers {tokenizer}: give char, gpt2 or bpeN (bpe1024)")


def run_once(base: list[str], tokenizer: str, seed: int, text: Path, root: Path, out: Path) -> dict:
    args = [*base, "data=text", f"data.path={text}", f"data.root={root}", *settings(tokenizer), f"seed={seed}",
            f"out_dir={out}", "progress=false"]
    started = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if r.returncode != 0:
        raise UserError(f"train.py {' '.join(args)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    evals = [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if e["kind"] == "eval"]
    last = evals[-1]
    return {"seconds": seconds, "val_loss": last["val_loss"], "val_bpb": last["val_bpb"],
            "bytes_per_token": last["val_bpb"] and last["val_loss"] / last["val_bpb"] / math.log(2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="*", default=["experiment=shakespeare_char_cpu"],
                        help="the recipe's overrides (default: the CPU recipe)")
    parser.add_argument("--tokenizers", nargs="+", default=["char", "bpe257", "bpe512", "bpe1024", "bpe2048",
                                                            "bpe4096", "gpt2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337, 1338])
    parser.add_argument("--text", type=Path, default=TINYSHAKESPEARE, help="the text (default: Tiny Shakespeare)")
    args = parser.parse_args()
    with exit_on_user_error(), tempfile.TemporaryDirectory() as tmp:
        for tokenizer in args.tokenizers:
            settings(tokenizer)  # a typo stops it before any run
        if not args.text.is_file():
            raise UserError(f"--text {args.text}: no such file (python -m data.prepare downloads Tiny Shakespeare)")
        results = {t: [] for t in args.tokenizers}
        for seed in args.seeds:
            for tokenizer in args.tokenizers:
                r = run_once(args.base, tokenizer, seed, args.text, Path(tmp) / "data",
                             Path(tmp) / f"{tokenizer}-{seed}")
                results[tokenizer].append(r)
                print(f"{tokenizer} seed {seed}: val loss {r['val_loss']:.4f}, {r['val_bpb']:.4f} bpb, "
                      f"{r['seconds']:.1f} s", flush=True)
        print(f"\n{' '.join(args.base)} on {args.text.name}, seeds {', '.join(map(str, args.seeds))}\n")
        print("| tokenizer | bytes/token | val loss (nats/token) | val bpb, each seed | **mean val bpb** | time |")
        print("| --- | --- | --- | --- | --- | --- |")
        for tokenizer, runs in results.items():
            mean = sum(r["val_bpb"] for r in runs) / len(runs)
            each = lambda key, form: ", ".join(form.format(r[key]) for r in runs)  # noqa: E731
            print(f"| {tokenizer} | {runs[0]['bytes_per_token']:.3f} | {each('val_loss', '{:.4f}')} | "
                  f"{each('val_bpb', '{:.4f}')} | **{mean:.4f}** | {each('seconds', '{:.0f} s')} |")


if __name__ == "__main__":
    main()
