"""Preparing a corpus larger than memory: wall time, tokens/s and peak resident memory, by workers and size.

    python -m bench.prepare_throughput [--sizes-mb 250 1000] [--workers 1 2] [--tokenizer gpt2|char|bpe]

Builds each corpus from Tiny Shakespeare (data/tinyshakespeare/input.txt, which `python -m
data.prepare` downloads) with its lines shuffled and repeated to the size asked, as one .txt file in a
temporary folder, then runs `python -m data.prepare data=text ...` on it in a fresh process per
measurement. Peak memory is the largest total resident memory of that process and its tokenizer
processes together, sampled every 50 ms from /proc.
"""

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data.config import DataConfig, DataError, data_root
from runtime.errors import exit_on_user_error


def build_corpus(source: Path, dest: Path, size: int, seed: int = 0) -> None:
    """Tiny Shakespeare's lines, shuffled, written until the file holds `size` bytes."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    written = 0
    with open(dest, "w", encoding="utf-8") as f:
        while written < size:
            rng.shuffle(lines)
            block = "".join(lines)[: size - written]
            f.write(block)
            written += len(block.encode("utf-8"))


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * 4096
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total


def measure(corpus: Path, root: Path, tokenizer: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "data.prepare", "data=text", f"data.path={corpus}", f"data.tokenizer={tokenizer}",
           f"data.name=bench_{workers}", f"data.root={root}", f"data.workers={workers}"]
    t0, peak = time.perf_counter(), 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode:
        raise DataError(f"preparation failed: {err.strip()[-500:]}")
    meta = json.loads((root / f"bench_{workers}" / "meta.json").read_text())
    trained = re.search(r"trained a \d+-token BPE on the train split in ([\d.]+) s", out)  # data.tokenizer=bpe
    return {"seconds": seconds, "tokens": meta["train_tokens"] + meta["val_tokens"], "peak_bytes": peak,
            "bpe_s": float(trained.group(1)) if trained else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "char", "bpe"],
                   help="bpe: a 1,024-token BPE trained on the corpus's first 100M train characters, then used")
    args = p.parse_args()
    source = data_root(DataConfig()) / "tinyshakespeare" / "input.txt"
    if not source.exists():
        raise DataError(f"{source} is missing; run `python -m data.prepare` first")
    print(f"{'corpus':>8} | {'workers':>7} | {'wall':>8} | {'tokens':>13} | {'tokens/s':>11} | {'peak memory':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes_mb:
            corpus = Path(tmp) / f"corpus_{mb}MB.txt"
            build_corpus(source, corpus, mb * 10**6)
            base = None
            for workers in args.workers:
                r = measure(corpus, Path(tmp) / "prepared", args.tokenizer, workers)
                base = base or r["seconds"]
                speedup = base / r["seconds"]
                print(f"{mb:>6}MB | {workers:>7} | {r['seconds']:>6.1f} s | {r['tokens']:>13,} | "
                      f"{r['tokens'] / r['seconds']:>11,.0f} | {r['peak_bytes'] / 2**20:>7,.0f} MiB | "
                      f"{speedup:.2f}x the first row of this size" +
                      (f"; the BPE trained in {r['bpe_s']:.1f} s" if r["bpe_s"] is not None else ""), flush=True)
            corpus.unlink()


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
