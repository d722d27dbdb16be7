"""Training throughput (tokens/s) and MFU on this machine, in fp32 and bf16 autocast.

    python -m bench.train_throughput                      # model=small, batch 64, context 256
    python -m bench.train_throughput model=mini batch_size=32 --steps 20

Times full optimizer steps (forward, backward, AdamW) on random tokens after warm-up steps, with the
model built from the same configs as train.py. MFU is measured against this machine's matmul peak,
which the script also measures (a large square matmul in each dtype), or against --peak-tflops.
"""

import argparse
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch

from model.gpt import GPT, GPTConfig
from runtime.config import compose
from runtime.errors import exit_on_user_error
from train import TrainConfig, build_optimizer, forward_backward


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def tokens_per_second(cfg, dtype: torch.dtype, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**asdict(cfg.model), "vocab_size": 65}))
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    B, T = cfg.batch_size, cfg.model.block_size
    micro = cfg.micro_batch_size or B
    batches = [(torch.randint(0, 65, (micro, T)), torch.randint(0, 65, (micro, T))) for _ in range(B // micro)]

    def autocast():
        return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step():
        forward_backward(model, batches, autocast)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * B * T / (time.perf_counter() - t0), model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="train.py config overrides, e.g. model=mini batch_size=32")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, nargs=2, metavar=("FP32", "BF16"))
    args = p.parse_args()
    cfg = compose("train", TrainConfig, args.overrides or ["model=small", "batch_size=64"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {asdict(cfg.model)}; "
          f"batch {cfg.batch_size} x context {cfg.model.block_size}")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = (args.peak_tflops[name == "bf16"] * 1e12) if args.peak_tflops else matmul_peak(dtype)
        tok_s, model = tokens_per_second(cfg, dtype, args.steps, args.warmup)
        mfu = model.flops_per_token(cfg.model.block_size) * tok_s / peak
        print(f"{name}: {tok_s:,.0f} tokens/s, MFU {100 * mfu:.1f}% of a measured {peak / 1e9:,.0f} GFLOP/s peak")


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
