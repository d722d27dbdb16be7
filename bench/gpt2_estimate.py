"""What `experiment=gpt2_124m` costs on GPUs, estimated from its FLOPs and sizes (nothing is run on a GPU).

    python -m bench.gpt2_estimate [--gpus 8] [--peak-tflops 989] [--mfu 0.4]

From the composed config (model built on the meta device): parameters, training FLOPs per token
(`GPT.flops_per_token`: 6N + 12 L H D T) and per optimizer step, the time per step at an assumed MFU of
a dense bf16 peak (H100 SXM: 989 TFLOP/s), and memory per GPU:
  * weights, gradients and AdamW's two moments in fp32: 16 bytes per parameter, whole on each GPU under
    DDP, divided by the number of GPUs under FSDP (fsdp=true);
  * activations of one micro-batch in bf16 without recomputation: about 34 x T x B x C bytes per layer
    (Korthikanti et al. 2022, with flash attention's O(T) memory), plus the logits (B x T x V in bf16,
    their fp32 copy for the loss, and its gradient: 10 bytes per logit).
These are estimates; README.md and docs/results.md say so wherever they quote them.
"""

import argparse
from dataclasses import replace

import torch

from model.gpt import GPT
from runtime.config import compose
from runtime.errors import exit_on_user_error
from train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", default=["experiment=gpt2_124m"], help="train.py settings")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.40, help="model FLOPs utilisation assumed")
    args = p.parse_args()
    cfg = compose("train", TrainConfig, args.overrides)
    c = replace(cfg.model, vocab_size=50257)  # GPT-2 BPE
    with torch.device("meta"):
        model = GPT(c)
    n, T = model.num_params(), c.block_size
    tokens_per_step = cfg.batch_size * T
    flops_step = model.flops_per_token(T) * tokens_per_step
    seconds = flops_step / (args.gpus * args.peak_tflops * 1e12 * args.mfu)
    micro = cfg.micro_batch_size or cfg.batch_size // args.gpus
    state = 16 * n
    activations = c.n_layer * 34 * T * micro * c.n_embd + 10 * micro * T * c.vocab_size
    gib = 2**30
    print(f"model: {n / 1e6:.1f}M parameters ({c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
          f"context {T}, tied head: {c.tie_weights})")
    print(f"training FLOPs: {model.flops_per_token(T) / 1e6:.0f}M per token, {flops_step / 1e15:.2f} PFLOP per step "
          f"of {tokens_per_step:,} tokens ({cfg.batch_size} x {T})")
    print(f"time per step on {args.gpus} GPUs at {args.mfu:.0%} MFU of {args.peak_tflops:.0f} TFLOP/s: "
          f"{seconds:.3f} s; {cfg.max_steps:,} steps ({cfg.max_steps * tokens_per_step / 1e9:.1f}B tokens): "
          f"{cfg.max_steps * seconds / 3600:.1f} h  [estimate]")
    print(f"memory per GPU, micro-batch {micro} x {T}: weights+gradients+AdamW {state / gib:.1f} GiB under DDP "
          f"({state / args.gpus / gib:.2f} GiB under FSDP), activations {activations / gib:.1f} GiB: about "
          f"{(state + activations) / gib:.0f} GiB (DDP), {(state / args.gpus + activations) / gib:.0f} GiB (FSDP) "
          "[estimate]")


if __name__ == "__main__":
    with exit_on_user_error():  # a bad setting: one line and exit code 2
        main()
