"""The loader on a multi-GB split: batches per second and resident memory over time.

    python -m bench.loader_throughput [--gb 4] [--shards 2] [--batch-size 64] [--block-size 1024] [--seconds 60]

Writes a split of random uint16 tokens of that size (in `--shards` shards, through data.shards'
ShardWriter) to a temporary folder, then draws batches with BatchSampler for `--seconds`, printing
batches/s and this process's resident memory every few seconds. Random windows over several GB read
pages the page cache may not hold: the first seconds measure the disk, the later ones the cache.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from data.loader import BatchSampler
from data.shards import ShardWriter, write_meta
from runtime.errors import exit_on_user_error


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=4.0)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    n = int(args.gb * 1e9) // 2  # uint16 tokens
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        out = Path(tmp)
        writer, rng, chunk = ShardWriter(out, "train", np.uint16, -(-n // args.shards)), np.random.default_rng(0), 2**26
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            writer.write(rng.integers(0, 50257, min(chunk, n - start), dtype=np.uint16))
        shards = writer.close()
        write_meta(out, {"format_version": 2, "tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16",
                         "shards": {"train": shards, "val": shards}, "train_tokens": n, "val_tokens": n})
        print(f"wrote {n:,} tokens ({2 * n / 1e9:.1f} GB) in {len(shards)} shards in {time.perf_counter() - t0:.0f} s; "
              f"drawing batches of {args.batch_size} x {args.block_size}")
        sampler = BatchSampler(out, "train", args.block_size, args.batch_size, seed=0)
        start = last = time.perf_counter()
        count = last_count = 0
        print(f"{'seconds':>8} | {'batches/s':>9} | {'tokens/s':>12} | {'resident MiB':>12}")
        while time.perf_counter() - start < args.seconds:
            sampler.next_batch()
            count += 1
            now = time.perf_counter()
            if now - last >= args.seconds / 10:
                rate = (count - last_count) / (now - last)
                print(f"{now - start:>8.0f} | {rate:>9,.0f} | {rate * args.batch_size * args.block_size:>12,.0f} | "
                      f"{resident_mib():>12,.0f}", flush=True)
                last, last_count = now, count


if __name__ == "__main__":
    with exit_on_user_error():
        main()
