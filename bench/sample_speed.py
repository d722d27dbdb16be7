"""Decode speed at batch 1: ropegpt with and without the KV cache, and transformers' Llama.

    python -m bench.sample_speed [--contexts 1 256 1024] [--new-tokens 64]

The baby GPT's shape (6 layers, 6 heads, width 384, SwiGLU hidden 1024, vocabulary 65) with random
weights, fp32, on this machine's CPU. Decode speed counts the tokens after the first: the prompt's
prefill is timed apart. transformers (`pip install transformers`) is a benchmark-only extra: without
it, its row is skipped. Its model is LlamaForCausalLM of the same shape (RoPE, RMSNorm, SwiGLU, no
biases), run through `generate(..., use_cache=True)`, greedy.
"""

import argparse
import statistics
import time

import torch

from bench import model_config
from model.generate import generate_tokens
from model.gpt import GPT, GPTConfig
from runtime.errors import exit_on_user_error


def ropegpt_decode(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> float:
    """Tokens/s of the decode phase: from the first sampled token to the last."""
    stream = generate_tokens(model, prompt, new_tokens, temperature=0, use_cache=use_cache)
    next(stream)  # prefill and the first token
    t0 = time.perf_counter()
    n = sum(1 for _ in stream)
    return n / (time.perf_counter() - t0)


def weight_streaming_floor(model: GPT, repeats: int = 50) -> float:
    """Tokens/s if decoding did nothing but its matmuls: one (1, in) x (in, out) product per Linear.

    At batch 1 every weight is read once per token, so this is the memory-bandwidth ceiling for any
    fp32 implementation of this model on this machine, cache or no cache, ropegpt or transformers.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {m.in_features: torch.randn(1, m.in_features) for m in layers}
    with torch.inference_mode():
        for _ in range(5):
            for m in layers:
                m(inputs[m.in_features])
        t0 = time.perf_counter()
        for _ in range(repeats):
            for m in layers:
                m(inputs[m.in_features])
    return repeats / (time.perf_counter() - t0)


def llama_decode(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """transformers' generate: time(new_tokens) - time(1 token) covers new_tokens - 1 decode steps."""
    def timed(n: int) -> float:
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                       pad_token_id=0)
        return time.perf_counter() - t0

    timed(2)  # warm-up
    return (new_tokens - 1) / (timed(new_tokens) - timed(1))


def build_llama(c: GPTConfig):
    """transformers' Llama of the same shape (random weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.hidden,
                      num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                      num_key_value_heads=c.kv_heads, max_position_embeddings=c.block_size,
                      rope_theta=c.rope_base, tie_word_embeddings=c.tie_weights, attention_bias=False, mlp_bias=False)
    return LlamaForCausalLM(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[1, 256, 1024])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--no-cache-tokens", type=int, default=16, help="fewer: recomputing is slow")
    p.add_argument("--repeats", type=int, default=3, help="each speed is the median of this many runs")
    args = p.parse_args()
    torch.manual_seed(0)
    max_len = max(args.contexts) + args.new_tokens
    model = GPT(model_config("small", block_size=max_len)).eval()  # a context long enough never to slide
    try:
        import transformers

        llama = build_llama(model.config)
        version = f"transformers {transformers.__version__}"
    except ImportError:
        llama, version = None, "transformers not installed"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {version}; "
          f"{model.num_params():,} parameters; decode tokens/s at batch 1, fp32, median of {args.repeats}")
    floor = statistics.median(weight_streaming_floor(model) for _ in range(args.repeats))
    print(f"ceiling: the matmuls alone (every weight read once per token) run at {floor:,.0f} tokens/s")
    print(f"{'context':>8} | {'ropegpt, cache':>15} | {'ropegpt, no cache':>18} | {'Llama (transformers)':>20} | "
          f"{'cache / Llama':>13} | {'cache / no cache':>16}")
    for context in args.contexts:
        prompt = torch.randint(0, model.config.vocab_size, (1, context))
        ropegpt_decode(model, prompt, 8, True)  # warm-up

        def median(measure) -> float:
            return statistics.median(measure() for _ in range(args.repeats))

        cached = median(lambda: ropegpt_decode(model, prompt, args.new_tokens, True))
        uncached = median(lambda: ropegpt_decode(model, prompt, args.no_cache_tokens, False))
        hf = median(lambda: llama_decode(llama, prompt, args.new_tokens)) if llama is not None else float("nan")
        print(f"{context:>8} | {cached:>15,.0f} | {uncached:>18,.1f} | {hf:>20,.0f} | {cached / hf:>12.1f}x | "
              f"{cached / uncached:>15.1f}x")


if __name__ == "__main__":
    with exit_on_user_error():  # a bad path or setting: one line and exit code 2
        main()
