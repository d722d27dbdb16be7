"""Generation: how a trained GPT writes text, one token at a time through the KV cache.

Read `generate` first; it is the whole idea. Prefill: one forward pass over the prompt fills every
layer's KV cache and gives the prediction for the token after it. Decode: each new token then goes
through the model alone, reading the cached keys and values of everything before it: O(S) work per
token instead of recomputing the whole O(S^2) window. It is exact because of the causal mask
(model/attention.py): a new token never changes what earlier positions computed.

`prefill` and `decode_one_token` are its two steps as functions of their own (as in gpt-fast), so that
the decode step can be compiled alone. The rest is what sample.py builds on: sampling controls
(temperature, top-k, top-p), several samples of one prompt from a single prefill (the caller says how
many), and a window that slides once the text outgrows the model's context. Shape letters as in
model/attention.py; V is the vocabulary size.
"""

from typing import Iterator, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.attention import KVCache
from model.gpt import GPT


@torch.inference_mode()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy continuation of prompt (B, T0) by max_new_tokens tokens: returns (B, T0 + max_new_tokens).

    The reference version: the text must fit in the model's context (T0 + max_new_tokens <= block_size).
    """
    B, T0 = prompt.shape
    caches = model.new_kv_caches(B, T0 + max_new_tokens)  # one empty KV cache per layer
    logits = prefill(model, prompt, caches)  # (B, V); the caches now hold T0 positions
    tokens = [prompt]
    for i in range(max_new_tokens):
        next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1): the most likely next token
        tokens.append(next_token)
        if i + 1 < max_new_tokens:
            logits = decode_one_token(model, next_token, caches)  # (B, V); one more position cached
    return torch.cat(tokens, dim=1)  # (B, T0 + max_new_tokens)


# ----------------------------------------------------------------------------------------------
# Its two steps apart: prefill, and a one-token decode step to compile alone
# ----------------------------------------------------------------------------------------------

# The attention kernels a one-token decode step may use: any but cuDNN's, which builds an execution plan
# for each new key length, and the key length grows by one every token (on an H100, ropegpt decoded 21
# tokens/s with it and 258 without). Prefill may use any kernel. The choice only matters on CUDA.
DECODE_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def prefill(model: GPT, idx: torch.Tensor, caches: Optional[list[KVCache]]) -> torch.Tensor:
    """One forward pass over idx (B, T), written into the caches after what they hold: the logits of its
    last position, (B, V). caches=None: no cache, the pass alone (how generation runs without one)."""
    logits, _ = model(idx, kv_caches=caches)  # (B, T, V)
    return logits[:, -1]  # (B, V)


def decode_one_token(model: GPT, token: torch.Tensor, caches: list[KVCache],
                     pos: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One token per row, token (B, 1), through the caches (which grow by one position): its logits (B, V).
    pos (1,): its position, written in place into static caches (`KVCache.write`): the shapes then never
    change, which is what a compiled step wants."""
    with sdpa_kernel(DECODE_KERNELS):
        logits, _ = model(token, kv_caches=caches, pos=pos)  # (B, 1, V)
    return logits[:, -1]  # (B, V)


class CompiledDecode:
    """decode_one_token compiled alone, for static caches: by inductor, and on CUDA with CUDA graphs
    (mode="reduce-overhead": a small model's ~60 kernel launches per token become one graph replay).

    `prepare(caches)` compiles it for those caches (their tensors marked static: written in place, never
    reallocated) with two calls that write at the last slot, which every real step overwrites before the
    mask lets a query see it: the first compiles, the second records the CUDA graph (CUDA graph trees
    record on a function's second call), so neither is in the decode that is timed. It records the error
    that stopped it, if any: then the step runs eagerly, with the same static caches. The position is one
    device tensor written in place at each token (`fill_`: no host-to-device copy, nothing to wait for).
    """

    def __init__(self, model: GPT):
        self.model, self.step = model, decode_one_token
        self.error: Optional[str] = None
        self.pos: Optional[torch.Tensor] = None  # (1,) the position being decoded, on the device

    def prepare(self, caches: list[KVCache]) -> None:
        device = caches[0].k.device
        self.pos = torch.full((1,), caches[0].max_len - 1, dtype=torch.long, device=device)
        for tensor in [self.pos] + [t for cache in caches for t in (cache.k, cache.v)]:
            torch._dynamo.mark_static_address(tensor)
        step = torch.compile(decode_one_token, mode="reduce-overhead" if device.type == "cuda" else None,
                             fullgraph=True)
        token = torch.zeros(caches[0].k.size(0), 1, dtype=torch.long, device=device)  # (B, 1)
        # On CUDA, inductor's coordinate-descent tuning lets it fuse int8 weights' dequantisation into the
        # batch-1 matmul (gpt-fast's setting); what it gives there is bench.gpu_check's to measure
        from torch._inductor import config as inductor

        tuning = {"coordinate_descent_tuning": True} if device.type == "cuda" else {}
        try:
            with inductor.patch(tuning):
                for _ in range(2):  # compile, then (CUDA) record the graph
                    step(self.model, token, caches, self.pos)
            self.step = step
        except Exception as e:  # no C++ compiler, an unsupported GPU, an op inductor cannot lower, a failed recording
            torch._dynamo.reset()
            self.error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"

    def __call__(self, token: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """decode_one_token at the caches' length, which then grows by one."""
        length = caches[0].length
        if self.pos is None:  # not prepared: an eager step still needs its position on the device
            self.pos = torch.zeros(1, dtype=torch.long, device=token.device)
        self.pos.fill_(length)
        logits = self.step(self.model, token, caches, self.pos)
        for cache in caches:
            cache.length = length + 1
        return logits.clone()  # CUDA graphs reuse their output's memory at the next replay


# ----------------------------------------------------------------------------------------------
# Choosing the next token
# ----------------------------------------------------------------------------------------------


def check_sampling_args(temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None to keep every token)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (or None to keep every token)")


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                      top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V); returns (B, 1).

    temperature 0 is greedy (argmax). Otherwise: divide by the temperature, keep the top_k most likely
    tokens, then the smallest set whose probability reaches top_p (nucleus sampling), renormalise, sample.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float()
    # subtract the max first: with a tiny temperature the largest logit stays 0 instead of overflowing
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        top = torch.topk(logits, top_k, dim=-1)  # by index, so ties never let more than k through
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
        # drop a token when the tokens more likely than it already reach top_p; the first always stays
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)  # back to vocabulary order
    return torch.multinomial(probs, num_samples=1, generator=generator)


# ----------------------------------------------------------------------------------------------
# The product: samples, controls, any length
# ----------------------------------------------------------------------------------------------


def slide_window(start: int, length: int, block_size: int) -> int:
    """Where the window the model reads starts, for a sequence of `length` tokens.

    It stays put while the window idx[start:length] fits in block_size tokens; once it would not, it
    jumps so that the last 3/4 block_size tokens remain: the next block_size / 4 tokens then decode
    through the KV cache before the next jump.
    """
    if length - start <= block_size:
        return start
    return length - (block_size - block_size // 4)


@torch.inference_mode()
def generate_tokens(model: GPT, prompt: torch.Tensor, max_new_tokens: int, num_samples: int = 1,
                    temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                    generator: Optional[torch.Generator] = None, use_cache: bool = True,
                    compiled: Optional[CompiledDecode] = None) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens tokens, (N, 1) each with N = B * num_samples rows, continuing prompt (B, T0).

    Row r continues prompt row r // num_samples: each prompt is prefilled once, then its KV caches are
    copied for its num_samples continuations, which decode together as one batch. The model reads a
    window of at most block_size tokens (`slide_window` says where it starts): when the text would
    outgrow it, the caches are emptied and the last 3/4 block_size tokens are prefilled again.
    use_cache=False recomputes the window from scratch for every token (kept to compare against: the
    tokens are the same). generator: a torch.Generator on the model's device (torch.multinomial
    requires it there). compiled: a CompiledDecode of model, prepared here for the caches once they hold
    the prompt, then used for every decode step (the same tokens as eager). Call model.eval() first.
    """
    check_sampling_args(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    if prompt.size(1) < 1:
        raise ValueError("the prompt is empty: give at least one token (e.g. an end-of-text or newline token)")
    block_size = model.config.block_size
    B, T0 = prompt.shape
    start = slide_window(0, T0, block_size)
    idx = prompt.repeat_interleave(num_samples, dim=0)  # (B * num_samples, T0)
    caches = None
    if use_cache:
        caches = model.new_kv_caches(B, min(block_size, T0 + max_new_tokens))
        logits = prefill(model, prompt[:, start:], caches)  # once per prompt: (B, V)
        if num_samples > 1:
            caches = [cache.repeat_batch(num_samples) for cache in caches]
            logits = logits.repeat_interleave(num_samples, dim=0)  # (B * num_samples, V)
        if compiled is not None and max_new_tokens > 1:
            compiled.prepare(caches)
    else:
        logits = prefill(model, idx[:, start:], None)  # (B * num_samples, V)
    for i in range(max_new_tokens):
        next_token = sample_next_token(logits, temperature, top_k, top_p, generator)  # (N, 1)
        yield next_token
        if i + 1 == max_new_tokens:
            break
        idx = torch.cat([idx, next_token], dim=1)  # (N, L): L tokens so far
        new_start = slide_window(start, idx.size(1), block_size)
        if caches is not None and new_start == start:
            if compiled is not None:
                logits = compiled(next_token, caches)  # (N, V)
            else:
                logits = decode_one_token(model, next_token, caches)  # (N, V)
        else:  # without a cache, the whole window from scratch; with one, the slid window prefilled again
            for cache in caches or []:
                cache.reset()
            logits = prefill(model, idx[:, new_start:], caches)  # (N, V)
        start = new_start


def complete(model: GPT, prompt: torch.Tensor, max_new_tokens: int, num_samples: int = 1,
             **controls) -> torch.Tensor:
    """generate_tokens, collected: (B * num_samples, T0 + max_new_tokens), each row its prompt then its tokens.

    controls: temperature, top_k, top_p, generator, use_cache, as for `generate_tokens`.
    """
    new = list(generate_tokens(model, prompt, max_new_tokens, num_samples, **controls))  # each (B * num_samples, 1)
    return torch.cat([prompt.repeat_interleave(num_samples, dim=0), *new], dim=1)
