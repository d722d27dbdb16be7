"""How fast the data pipeline is, next to how fast training consumes it.

    python -m bench.data_throughput [--batch-size 64] [--block-size 256] [--train-steps 3]

Prints: preparation time of Tiny Shakespeare for both tokenizers (download excluded: the file must be
at data/tinyshakespeare/input.txt, which `python -m data.prepare` puts there), batches per second of
BatchSampler, and batches per second that one training step of the baby GPT (6 layers, 6 heads,
width 384, fp32) consumes on this machine.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench import model_config
from data.config import DataConfig, DataError, data_root
from data.loader import BatchSampler
from data.prepare import prepare
from model.gpt import GPT
from runtime.errors import exit_on_user_error


def time_preparation(source: Path) -> dict[str, float]:
    seconds = {}
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "tinyshakespeare").mkdir()
        shutil.copy(source, Path(root) / "tinyshakespeare" / "input.txt")
        for tokenizer in ("char", "gpt2"):
            t0 = time.perf_counter()
            prepare(DataConfig(name=f"bench_{tokenizer}", tokenizer=tokenizer, root=root))
            seconds[tokenizer] = time.perf_counter() - t0
    return seconds


def sampler_batches_per_second(data_dir: Path, batch_size: int, block_size: int, seconds: float = 2.0) -> float:
    sampler = BatchSampler(data_dir, "train", block_size, batch_size, seed=0)
    sampler.next_batch()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sampler.next_batch()
        n += 1
    return n / (time.perf_counter() - t0)


def training_batches_per_second(batch_size: int, block_size: int, steps: int) -> float:
    model = GPT(model_config("small", block_size=block_size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 65, (batch_size, block_size))

    def step():
        _, loss = model(x, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--train-steps", type=int, default=3)
    args = p.parse_args()

    source = data_root(DataConfig()) / "tinyshakespeare" / "input.txt"
    if not source.exists():
        raise DataError(f"{source} is missing; run `python -m data.prepare` first")
    prep = time_preparation(source)
    data_dir = prepare(DataConfig())  # the real data/shakespeare_char, prepared once
    supply = sampler_batches_per_second(data_dir, args.batch_size, args.block_size)
    demand = training_batches_per_second(args.batch_size, args.block_size, args.train_steps)
    B, T = args.batch_size, args.block_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"prepare Tiny Shakespeare, char: {prep['char']:.2f} s; gpt2 BPE: {prep['gpt2']:.2f} s")
    print(f"BatchSampler, batch {B} x context {T}: {supply:,.0f} batches/s ({supply * B * T / 1e6:,.1f}M tokens/s)")
    print(f"training the baby GPT (fp32) consumes {demand:.3f} batches/s ({demand * B * T:,.0f} tokens/s)")
    print(f"supply / demand: {supply / demand:,.0f}x")


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
