"""Decode speed at batch 1 against the memory's bandwidth, and ropegpt against transformers' Llama.

    python -m bench.sample_speed                              # the table: dtypes, int8, both shapes
    python -m bench.sample_speed --torchao                    # and torchao's int8 (pip install torchao)
    python -m bench.sample_speed --contexts 1 256 1024        # fp32, by context: with and without the cache

The table: the baby GPT's shape (model=small, vocabulary 65) and SmolLM2-135M's (bench/hf_parity.py's
SHAPES), random weights, greedy, on this machine's CPU. Each ropegpt row is how `sample.py` runs:
weights in fp32 or bf16 (`dtype=`), optionally int8 (`quantize=int8`, model/quantize.py). At batch 1
each token reads every weight once (and the KV cache), so bytes per token x tokens/s is the memory
traffic; the table gives it as a share of the bandwidth a large tensor copy reaches (read + write),
beside the tokens/s of the model's matmuls alone (`weight_streaming_floor`): what the kernels allow.

Decode speed counts the tokens after the first: the prompt's prefill is timed apart. transformers
(`pip install transformers`) is a benchmark-only extra: without it, its rows are skipped. Its model is
LlamaForCausalLM of the same shape (RoPE, RMSNorm, SwiGLU, no biases), run through
`generate(..., use_cache=True)`, greedy.
"""

import argparse
import statistics
import time
from typing import Optional

import torch

from bench import model_config
from bench.hf_parity import SHAPES
from model.generate import CompiledDecode, generate_tokens
from model.gpt import GPT, GPTConfig
from model.llama import gpt_config
from model.quantize import Int8Linear, quantize_int8
from runtime.errors import exit_on_user_error


def ropegpt_decode(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool,
                   compiled: Optional[CompiledDecode] = None) -> float:
    """Tokens/s of the decode phase: from the first sampled token to the last (compiled: after compiling,
    which happens before the first token)."""
    stream = generate_tokens(model, prompt, new_tokens, temperature=0, use_cache=use_cache, compiled=compiled)
    next(stream)  # prefill and the first token
    t0 = time.perf_counter()
    n = sum(1 for _ in stream)
    return n / (time.perf_counter() - t0)


def weight_streaming_floor(model: GPT, repeats: int = 50) -> float:
    """Tokens/s if decoding did nothing but its matmuls: one (1, in) x (in, out) product per linear layer
    (nn.Linear or Int8Linear), in the model's dtype, each matrix a different one as in a real token.

    At batch 1 every weight is read once per token, so this is the ceiling the matmul kernels set for
    this model on this machine, cache or no cache, before attention, norms and the rest are counted.
    """
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    dtype = model.tok_emb.weight.dtype
    inputs = {m.in_features: torch.randn(1, m.in_features, dtype=dtype) for m in layers}
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


def bandwidths(gib: float = 1.0, repeats: int = 5) -> tuple[float, float]:
    """Bytes/s of copying a large fp32 tensor (each byte read once and written once) and of summing it
    (read only), the best of repeats each."""
    src = torch.ones(int(gib * 2**30) // 4)
    dst = torch.zeros_like(src)  # written once already: no page faults in the timed copies

    def best(op) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
        return min(times)

    return 2 * src.numel() * 4 / best(lambda: dst.copy_(src)), src.numel() * 4 / best(src.sum)


def bytes_per_token(model: GPT, context: int) -> float:
    """What one decode step at batch 1 reads: every matrix of the blocks and the LM head (a tied head is
    the embedding table), the norms, and the KV cache of `context` positions."""
    c = model.config
    weights = sum(b.numel() * b.element_size() for m in model.modules() if isinstance(m, Int8Linear)
                  for b in (m.weight, m.scale))
    weights += sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n != "tok_emb.weight")
    if isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight is model.tok_emb.weight:  # tied
        weights += model.tok_emb.weight.numel() * model.tok_emb.weight.element_size()
    cache = 2 * c.n_layer * c.kv_heads * c.head_dim * context * model.tok_emb.weight.element_size()
    return weights + cache


def torchao_int8(config: GPTConfig, base: GPT) -> GPT:
    """base's weights in bf16, every linear layer quantized by torchao's Int8WeightOnlyConfig (a tied
    head untied first: torchao quantizes the head's own copy, as quantize_int8 does)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = GPT(config).eval()
    model.load_state_dict(base.state_dict())
    model = model.to(torch.bfloat16)
    if model.lm_head.weight is model.tok_emb.weight:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    quantize_(model, Int8WeightOnlyConfig())
    return model


def smollm2_config(block_size: int) -> GPTConfig:
    """SmolLM2-135M's shape (its published config.json values), read as model/llama.py reads a folder's."""
    return gpt_config({"model_type": "llama", **SHAPES["smollm2_135m"]}, block_size=block_size)


def table(args) -> None:
    """Every shape x (ropegpt fp32, bf16, int8 with each, eager and compiled; transformers fp32, bf16),
    alternated repeats times."""
    torch._dynamo.config.cache_size_limit = 64  # one compiled decode step per model: 4 per shape
    bandwidth, read = bandwidths()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, greedy, a {args.prompt}-token "
          f"prompt, {args.new_tokens} new tokens; median of {args.repeats} alternated runs; a 1 GiB copy: "
          f"{bandwidth / 1e9:.1f} GB/s (read + write), its sum: {read / 1e9:.1f} GB/s (read)")
    print("| shape | implementation | weights | tokens/s | matmuls alone, tokens/s | MB per token | GB/s "
          "| share of the copy's GB/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    length = args.prompt + args.new_tokens
    for shape, config in (("model=small", model_config("small", block_size=length)),
                          ("SmolLM2-135M", smollm2_config(length))):
        torch.manual_seed(0)
        base = GPT(config).eval()
        rows = {}  # (implementation, weights) -> how to decode once, returning tokens/s
        fallbacks = {}  # the compiled rows' CompiledDecode: its error, if compiling failed
        prompt = torch.randint(0, config.vocab_size, (1, args.prompt))
        for dtype in (torch.float32, torch.bfloat16):
            for int8 in (False, True):
                model = GPT(config).eval()
                model.load_state_dict(base.state_dict())
                model = quantize_int8(model.to(dtype)) if int8 else model.to(dtype)
                weights = ("int8, " if int8 else "") + str(dtype).removeprefix("torch.")
                compiled = CompiledDecode(model)
                rows[("ropegpt", weights)] = (model, lambda m=model: ropegpt_decode(m, prompt, args.new_tokens, True))
                rows[("ropegpt, compiled", weights)] = (model, lambda m=model, c=compiled: ropegpt_decode(
                    m, prompt, args.new_tokens, True, c))
                fallbacks[("ropegpt, compiled", weights)] = compiled
        if args.torchao:  # torchao's int8 weight-only instead of model/quantize.py, compiled the same way
            model = torchao_int8(config, base)
            compiled = CompiledDecode(model)
            rows[("ropegpt + torchao, compiled", "int8, bfloat16")] = (model, lambda m=model, c=compiled: (
                ropegpt_decode(m, prompt, args.new_tokens, True, c)))
            fallbacks[("ropegpt + torchao, compiled", "int8, bfloat16")] = compiled
        try:
            for dtype in (torch.float32, torch.bfloat16):
                llama = build_llama(config).to(dtype)
                rows[("transformers", str(dtype).removeprefix("torch."))] = (
                    None, lambda m=llama: llama_decode(m, prompt, args.new_tokens))
        except ImportError:
            pass
        for _, decode in rows.values():
            decode()  # warm-up, and compiling for the compiled rows
        speeds = {key: [] for key in rows}
        for _ in range(args.repeats):  # alternate: A B C ... A B C, so a slow minute hits every row alike
            for key, (_, decode) in rows.items():
                speeds[key].append(decode())
        for (impl, weights), (model, _) in rows.items():
            speed = statistics.median(speeds[(impl, weights)])
            if model is None:
                print(f"| {shape} | {impl} | {weights} | {speed:,.1f} | | | | |")
                continue
            context = length - args.new_tokens // 2  # the middle of the decode
            if "torchao" in impl:  # its tensors hide their int8 bytes: the same bytes as our int8 row's
                floor, traffic = float("nan"), bytes_per_token(rows[("ropegpt", weights)][0], context)
            else:
                floor = statistics.median(weight_streaming_floor(model, 10) for _ in range(args.repeats))
                traffic = bytes_per_token(model, context)
            failed = fallbacks.get((impl, weights))
            if failed is not None and failed.error:
                impl = f"ropegpt, compile failed, eager ({failed.error[:60]})"
            print(f"| {shape} | {impl} | {weights} | {speed:,.1f} | {floor:,.1f} | {traffic / 1e6:,.1f} | "
                  f"{traffic * speed / 1e9:.1f} | {traffic * speed / bandwidth:.0%} |")
        torch._dynamo.reset()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", help="the sweep: fp32 decode at these context lengths")
    p.add_argument("--prompt", type=int, default=16, help="the table's prompt length")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--no-cache-tokens", type=int, default=16, help="fewer: recomputing is slow")
    p.add_argument("--repeats", type=int, default=3, help="each speed is the median of this many runs")
    p.add_argument("--torchao", action="store_true", help="a row with torchao's int8 weight-only (pip install "
                   "torchao) in place of model/quantize.py's, bf16, compiled")
    args = p.parse_args()
    torch.manual_seed(0)
    if not args.contexts:
        table(args)
        return
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
