"""The O(T^2) cost of attention: time and peak memory of one causal attention pass versus length T.

    python -m bench.attention_scaling [--lengths 256 512 1024 2048 4096 8192] [--heads 4] [--head-dim 64]

For each T, the spelled-out path (`impl="explicit"`: it stores the T x T weights) and SDPA's fused
kernel (`impl="sdpa"`) run one forward, and one forward + backward, on q, k, v of shape (1, H, T, D) in
fp32 on the CPU. Both do O(T^2) work; only the explicit path stores O(T^2) numbers. Each measurement
runs in a fresh process so that its peak resident memory (ru_maxrss) is its own. Then the KV cache's
size per token for multi-head, grouped-query and multi-query attention.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace

import torch

from bench import model_config
from model.attention import attention
from model.gpt import GPT, GPTConfig
from runtime.errors import exit_on_user_error


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(impl: str, T: int, H: int, D: int, backward: bool) -> dict:
    """One pass in this process: seconds and peak memory above what q, k, v already took."""
    torch.manual_seed(0)
    small = [torch.randn(1, H, 8, D, requires_grad=backward) for _ in range(3)]
    y = attention(*small, impl=impl)  # load the kernels (and start autograd's engine) before measuring
    if backward:
        y.sum().backward()
    q, k, v = (torch.randn(1, H, T, D, requires_grad=backward) for _ in range(3))
    base = peak_rss_bytes()
    t0 = time.perf_counter()
    y = attention(q, k, v, causal=True, impl=impl)
    if backward:
        y.backward(torch.ones_like(y))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "extra_bytes": max(0, peak_rss_bytes() - base)}


def kv_cache_table() -> list[tuple[str, int, int, str]]:
    """Bytes per token of the KV cache: 2 (K and V) x layers x Hkv x D x bytes per number."""
    rows = []
    baby = model_config("small", vocab_size=256, block_size=1024)
    llama2_7b = GPTConfig(vocab_size=256, block_size=1024, n_layer=32, n_head=32, n_embd=4096)  # Llama-2-7B's shape
    shapes = [(f"baby GPT ({baby.n_layer} layers, {baby.n_head} heads, D {baby.head_dim}), fp32", baby, torch.float32,
               (baby.n_head, 2, 1)),
              ("Llama-2-7B shape (32 layers, 32 heads, D 128), bf16", llama2_7b, torch.bfloat16, (32, 8, 1))]
    for name, shape, dtype, kv_heads in shapes:
        for kv in kv_heads:
            with torch.device("meta"):  # shapes only
                model = GPT(replace(shape, n_kv_head=kv))
                caches = model.new_kv_caches(1, max_len=1024, dtype=dtype)
            per_token = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in caches) // 1024
            label = "multi-head" if kv == shape.n_head else "multi-query" if kv == 1 else "grouped-query"
            rows.append((name, kv, per_token, label))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--one", nargs=3, metavar=("IMPL", "T", "BACKWARD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # the child process: one measurement, printed as JSON
        impl, T, backward = args.one[0], int(args.one[1]), args.one[2] == "1"
        print(json.dumps(measure(impl, T, args.heads, args.head_dim, backward)))
        return

    H, D = args.heads, args.head_dim
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; causal attention on (1, {H}, T, {D}) "
          f"fp32; extra memory = peak resident memory above the inputs")
    print(f"{'T':>6} | {'T x T weights':>13} | {'explicit fwd':>12} | {'sdpa fwd':>9} | {'explicit fwd+bwd':>16} | "
          f"{'sdpa fwd+bwd':>12} | {'explicit mem':>12} | {'sdpa mem':>9}")
    for T in args.lengths:
        r = {}
        for impl in ("explicit", "sdpa"):
            for backward in (False, True):
                out = subprocess.run([sys.executable, "-m", "bench.attention_scaling", "--heads", str(H),
                                      "--head-dim", str(D), "--one", impl, str(T), str(int(backward))],
                                     capture_output=True, text=True, check=True)
                r[impl, backward] = json.loads(out.stdout.strip().splitlines()[-1])
        mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
        print(f"{T:>6} | {mib(4 * H * T * T):>13} | {r['explicit', False]['seconds']:>10.3f} s | "
              f"{r['sdpa', False]['seconds']:>7.3f} s | {r['explicit', True]['seconds']:>14.3f} s | "
              f"{r['sdpa', True]['seconds']:>10.3f} s | {mib(r['explicit', True]['extra_bytes']):>12} | "
              f"{mib(r['sdpa', True]['extra_bytes']):>9}")
    print("\nKV cache per token (2 x layers x Hkv x D numbers):")
    for name, kv, per_token, label in kv_cache_table():
        print(f"  {name}: n_kv_head={kv:>2} ({label}): {per_token / 1024:,.1f} KiB per token")


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
