"""Causal multi-head self-attention with RoPE, grouped-query attention and a KV cache.

This file is meant to be read top to bottom. It imports only torch and math.

Notation (the letters used in every shape comment)
    B    batch size
    T    new tokens in this call: the queries
    P    tokens already in the KV cache: the first new token sits at absolute position P
    S    keys attended to, S = P + T
    C    model width (n_embd)
    H    query heads (n_head)
    Hkv  key/value heads (n_kv_head), a divisor of H
    D    head width, D = C // H
    G    query heads that share one K/V head, G = H // Hkv
    M    the causal mask, (T, S); max_len: how many positions a KV cache has room for

The computation, for an input x of shape (B, T, C) whose first token is at absolute position P:

    (1) q = x W_Q,  k = x W_K,  v = x W_V     per head: q (B, H, T, D); k, v (B, Hkv, T, D)
    (2) q <- R(m) q,  k <- R(m) k              RoPE, at each token's position m in P..P+T-1
    (3) K = [K_cache; k],  V = [V_cache; v]    the KV cache appends the new keys/values: (B, Hkv, S, D)
    (4) K, V repeated G times along heads      grouped-query attention: (B, H, S, D)
    (5) scores = q K^T / sqrt(D) + M           M[i, j] = 0 if j <= P + i else -inf: (B, H, T, S)
    (6) A = softmax(scores)                    over the keys; every row sums to 1, zero where masked
    (7) y = A V                                (B, H, T, D)
    (8) out = concat_heads(y) W_O              (B, T, C)

Why divide by sqrt(D) in (5). If the D components of a query and a key are independent with mean 0
and variance 1, their dot product is a sum of D such products: mean 0, variance D. Without the
scaling, scores grow like sqrt(D), the softmax saturates to almost one-hot weights and its gradients
vanish; dividing by sqrt(D) keeps the scores at unit variance whatever the head width.

The mask in (5) is additive: 0 keeps a score, -inf removes it, since e^-inf = 0 after the softmax.
`causal_mask` returns the same information as booleans (True where M is 0, False where it is -inf);
`attention_weights` turns False into -inf with masked_fill, and SDPA accepts the boolean form as is.

Steps (4)-(7) are written out by hand in `attention(..., impl="explicit")` and done by one fused
kernel in `attention(..., impl="sdpa")`: torch's scaled_dot_product_attention, which picks its kernel
by device, dtype and mask. Both exist; an argument chooses; tests/test_attention.py proves they agree.

Why the causal mask matters. Row i of M lets query P+i see keys 0..P+i and nothing later. So:
  * one forward pass over a sequence trains every position's next-token prediction at once: the output
    at position t is a function of tokens 0..t only, so it cannot peek at the token it must predict;
  * appending tokens never changes the outputs (or the keys and values) at earlier positions, so keys
    and values computed once can be cached and reused: decoding with a KV cache is exact, not an
    approximation. With `causal=False` both properties are lost (tests/test_attention.py shows it).

Cost. Steps (5)-(7) do O(T * S * D) work per head: O(T^2) for a full sequence. The explicit path also
stores the (T, S) matrix A, so its memory grows as T^2. SDPA's fused kernels (FlashAttention on a GPU in
bf16/fp16, the memory-efficient kernel for other GPU cases, a flash-style kernel on a CPU) stream over
blocks of keys and never store A: O(T) extra memory (an explicit (T, S) boolean mask, used after a cache, is the
exception, and small when T is a short chunk). The KV cache holds 2 * Hkv * D numbers per token per
layer: grouped-query attention (Hkv < H) shrinks it by a factor G.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# RoPE: rotary position embedding (Su et al. 2021), rotate-half convention (GPT-NeoX; Llama in
# Hugging Face transformers).
#
# Split a head vector x of width D into halves x1 = x[:D/2], x2 = x[D/2:] and read channel pair
# (x1[i], x2[i]) as the complex number z_i = x1[i] + i * x2[i]. RoPE at position m multiplies it by
# e^{i m theta_i}, a rotation by the angle m * theta_i, with theta_i = base^(-2i/D): fast rotations
# in the first pairs, slow ones in the last. In real arithmetic, with rotate_half(x) = [-x2, x1]:
#
#     R(m) x = x * cos(m theta) + rotate_half(x) * sin(m theta)
#
# since (x1 + i x2)(cos + i sin) = (x1 cos - x2 sin) + i (x2 cos + x1 sin).
#
# Why scores then depend only on relative position: for q at position m and k at position n,
#     <R(m) q, R(n) k> = Re sum_i  q_i e^{i m theta_i} * conj(k_i e^{i n theta_i})
#                      = Re sum_i  q_i conj(k_i) e^{i (m - n) theta_i},
# a function of m - n alone. Rotations also preserve norms, and position 0 is the identity.
# ----------------------------------------------------------------------------------------------


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 10000.0,
                scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m * theta_i for the T given positions m, each (T, D), always in fp32.

    Computed for the positions at hand rather than stored as a buffer: it costs T * D / 2 sines and
    cosines, and no cast of the model (model.bfloat16(), building on the meta device) can round or
    lose the table. scaling: see `rope_frequencies` (None for plain RoPE).
    """
    theta = rope_frequencies(head_dim, base, scaling, positions.device)  # (D/2,)
    angles = torch.outer(positions.float(), theta)  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()  # (T, D/2) each
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)  # (T, D): pair i is channels i, i + D/2


def rope_frequencies(head_dim: int, base: float = 10000.0, scaling: dict | None = None,
                     device: torch.device | None = None) -> torch.Tensor:
    """theta_i = base^(-2i/D) for the D/2 channel pairs, (D/2,) fp32; slowed down by `scaling`, if given.

    Scaling is how Llama 3.1 and later read contexts longer than the one they were pretrained on. Pair i
    turns once every 2 pi / theta_i positions (its wavelength). A pair whose wavelength exceeds the
    original context never turned fully in pretraining, so angles past it are new to the model. Dividing
    theta_i by a factor stretches that pair's wavelength by the factor: positions up to factor x the
    original context then give angles it has seen. {"rope_type": "linear", "factor": f} slows every pair
    (position m is read as m / f). {"rope_type": "llama3", ...} slows only the slow pairs (wavelength
    above original_max_position_embeddings / low_freq_factor), keeps the fast ones (wavelength below
    original / high_freq_factor), which carry the fine local order, and blends the two in between.
    Scores still depend on m - n alone: only the angles per position change.
    """
    assert head_dim % 2 == 0, "RoPE rotates channel pairs, so the head width must be even"
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)  # (D/2,)
    if scaling is None:
        return theta
    slow = theta / scaling["factor"]
    if scaling["rope_type"] == "linear":
        return slow
    original, low, high = (scaling[k] for k in ("original_max_position_embeddings", "low_freq_factor",
                                                "high_freq_factor"))
    turns = original * theta / (2 * math.pi)  # how often each pair turns within the original context
    keep = ((turns - low) / (high - low)).clamp(0.0, 1.0)  # 0: slow pair, scaled; 1: fast pair, kept
    return keep * theta + (1 - keep) * slow


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1]: multiplication by i of every channel pair."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., D)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) or (B, Hkv, T, D) by the tables of its T positions, cos and sin (T, D), fp32.

    The rotation is computed in fp32 and the result cast back to x's dtype (bf16 under autocast).
    """
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).type_as(x)


# ----------------------------------------------------------------------------------------------
# The causal mask, from absolute positions
# ----------------------------------------------------------------------------------------------


def causal_mask(T: int, S: int, device: torch.device | None = None,
                q_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (T, S): True where query i (at absolute position S - T + i) may see key j.

    The queries are the *last* T of the S positions (bottom-right aligned): with P = S - T tokens in
    the cache, query P + i sees keys 0..P + i. When T == S this is the usual lower triangle.
    q_pos (T,): the queries' positions when they are not the last T, as with a static cache, whose S is
    its max_len: the slots not written yet lie after every query, so the same rule hides them.
    """
    q_pos = torch.arange(S - T, S, device=device) if q_pos is None else q_pos  # (T,) the queries' positions
    k_pos = torch.arange(S, device=device)  # (S,) absolute positions of the keys
    return k_pos[None, :] <= q_pos[:, None]  # (T, S)


# ----------------------------------------------------------------------------------------------
# Attention, steps (5)-(7): spelled out, and through the fused kernel
# ----------------------------------------------------------------------------------------------


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Step (5) before the mask: q k^T / sqrt(D), (B, H, T, S): how well each query matches each key."""
    return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (5) (B, H, T, S)


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True,
                      q_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Steps (5)-(6): A = softmax(q k^T / sqrt(D) + M), (B, H, T, S). q (B, H, T, D), k (B, H, S, D);
    q_pos as for `causal_mask`."""
    T, S = q.size(-2), k.size(-2)
    scores = attention_scores(q, k)  # (5) (B, H, T, S)
    if causal:
        scores = scores.masked_fill(~causal_mask(T, S, q.device, q_pos), float("-inf"))  # (5) + M
    return torch.softmax(scores.float(), dim=-1).type_as(q)  # (6) (B, H, T, S), softmax in fp32


def repeat_kv(k: torch.Tensor, n_head: int) -> torch.Tensor:
    """Step (4): (B, Hkv, S, D) -> (B, H, S, D); query head h reads K/V head h // G."""
    B, Hkv, S, D = k.shape
    G = n_head // Hkv
    return k[:, :, None].expand(B, Hkv, G, S, D).reshape(B, n_head, S, D)  # (B, Hkv, G, S, D) -> (B, H, S, D)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, impl: str = "sdpa",
    dropout_p: float = 0.0, q_pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Steps (4)-(7) for q (B, H, T, D) and k, v (B, Hkv, S, D) with S >= T; returns y (B, H, T, D).
    q_pos: the queries' positions, with a static cache (see `causal_mask`).

    impl="explicit" repeats K/V to H heads and materialises the (T, S) weights; impl="sdpa" calls the
    fused kernel, which reads each K/V head for its G query heads without copying (enable_gqa).
    dropout_p: in training, each weight of A is zeroed with this probability (and the rest scaled by
    1 / (1 - p)), a regulariser; 0 at evaluation and generation.
    """
    if impl == "explicit":
        k, v = repeat_kv(k, q.size(1)), repeat_kv(v, q.size(1))  # (4) (B, H, S, D)
        weights = attention_weights(q, k, causal, q_pos)  # (5)-(6) (B, H, T, S)
        if dropout_p:
            weights = F.dropout(weights, dropout_p)
        return weights @ v  # (7) (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    if impl == "sdpa":
        T, S = q.size(-2), k.size(-2)
        kw = dict(dropout_p=dropout_p, enable_gqa=k.size(1) != q.size(1))
        if not causal:
            return F.scaled_dot_product_attention(q, k, v, **kw)  # (4)-(7), no mask
        if q_pos is not None:  # a static cache: the mask comes from the positions
            mask = causal_mask(T, S, q.device, q_pos)  # (T, S)
            if kw["enable_gqa"]:  # fold each group's G query heads into the query length: (B, Hkv, G*T, D)
                B, H, _, D = q.shape  # is plain multi-head attention on the K/V heads, no K/V copied, and
                G = H // k.size(1)  # the memory-efficient kernel (which refuses enable_gqa) takes it
                y = F.scaled_dot_product_attention(q.reshape(B, k.size(1), G * T, D), k, v,
                                                   attn_mask=mask.repeat(G, 1), dropout_p=dropout_p)
                return y.reshape(B, H, T, D)  # (4)-(7)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)  # (4)-(7)
        if T == S:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)  # (4)-(7)
        if T == 1:  # one new token, the last position: it may see every key, so the mask is all True
            return F.scaled_dot_product_attention(q, k, v, **kw)  # (4)-(7)
        # Footgun: is_causal=True builds a *top-left* aligned triangle (query i sees keys 0..i), which
        # is wrong once a cache holds P > 0 earlier keys. Pass the bottom-right aligned mask instead.
        mask = causal_mask(T, S, q.device)  # (T, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)  # (4)-(7)
    raise ValueError(f"unknown attention impl {impl!r}: use 'explicit' or 'sdpa'")


# ----------------------------------------------------------------------------------------------
# The KV cache
# ----------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of one layer for the tokens seen so far, preallocated for max_len positions.

    `update` writes the T new keys/values at positions [P, P + T) and returns all S = P + T of them.
    It serves both a chunked prefill (T > 1) and one-token decoding (T = 1). Earlier entries are never
    rewritten: under the causal mask they do not depend on later tokens.
    """

    def __init__(self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        shape = (batch_size, n_kv_head, max_len, head_dim)  # (B, Hkv, max_len, D)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # P: how many positions hold valid keys/values

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, Hkv, T, D); return the cached K, V (B, Hkv, S, D)."""
        B, Hkv, _, D = self.k.shape
        if k.shape != v.shape or k.dim() != 4 or (k.size(0), k.size(1), k.size(3)) != (B, Hkv, D):
            raise ValueError(f"KV cache for (B, Hkv, D) = {(B, Hkv, D)} got keys {tuple(k.shape)}, values {tuple(v.shape)}")
        P, T = self.length, k.size(2)
        if P + T > self.max_len:
            raise ValueError(
                f"KV cache overflow: {P} cached + {T} new tokens > max_len={self.max_len}. "
                "Create the cache with a larger max_len, or reset() it and prefill a shorter window."
            )
        self.k[:, :, P : P + T] = k  # (3) write at positions [P, P + T)
        self.v[:, :, P : P + T] = v  # (3)
        self.length = P + T
        return self.k[:, :, : P + T], self.v[:, :, : P + T]  # (3) (B, Hkv, S, D)

    def write(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(3) with static shapes, for a compiled decode step: write k, v (B, Hkv, T, D) at positions
        pos (T,), a tensor, and return the whole cache, (B, Hkv, max_len, D). Its shapes never change with
        the text's length (one compiled graph; on CUDA, one CUDA graph); the mask (`causal_mask` with
        q_pos) hides the slots after pos. `length` is the caller's to keep."""
        self.k.index_copy_(2, pos, k)  # (3) write at positions pos
        self.v.index_copy_(2, pos, v)  # (3)
        return self.k, self.v  # (3) (B, Hkv, max_len, D)

    def reset(self) -> None:
        self.length = 0

    def repeat_batch(self, n: int) -> "KVCache":
        """A new cache whose rows are this one's, each repeated n times (row b -> rows b*n .. b*n + n-1):
        one prefilled prompt, n continuations."""
        B, Hkv, max_len, D = self.k.shape
        out = KVCache(B * n, Hkv, max_len, D, self.k.device, self.k.dtype)
        out.k.copy_(self.k.repeat_interleave(n, dim=0))  # (B, Hkv, max_len, D) -> (B * n, Hkv, max_len, D)
        out.v.copy_(self.v.repeat_interleave(n, dim=0))  # (B * n, Hkv, max_len, D)
        out.length = self.length
        return out


# ----------------------------------------------------------------------------------------------
# The module: steps (1)-(8)
# ----------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with RoPE, grouped-query K/V heads and an optional KV cache.

    n_kv_head == n_head is ordinary multi-head attention; n_kv_head == 1 is multi-query attention.
    causal=False gives bidirectional attention, kept only to show what the mask is for.
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None,
                 causal: bool = True, impl: str = "sdpa", dropout: float = 0.0):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        assert n_embd % n_head == 0, f"n_embd={n_embd} must be divisible by n_head={n_head}"
        assert n_head % n_kv_head == 0, f"n_head={n_head} must be divisible by n_kv_head={n_kv_head}"
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, n_embd // n_head
        self.causal, self.impl, self.dropout = causal, impl, dropout  # dropout on A, in training only
        # Separate W_Q, W_K, W_V as in the equations; fusing them into one matmul is an optimisation.
        self.wq = nn.Linear(n_embd, n_head * self.head_dim, bias=False)
        self.wk = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.wv = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.wo = nn.Linear(n_head * self.head_dim, n_embd, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Steps (1)-(2): q (B, H, T, D) and k, v (B, Hkv, T, D) for x (B, T, C), RoPE applied to q, k."""
        B, T, C = x.shape
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        if cos.shape != (T, D):
            raise ValueError(f"RoPE tables of shape {tuple(cos.shape)} for {T} tokens of head width {D}")
        q = self.wq(x).view(B, T, H, D).transpose(1, 2)  # (1) (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        k = self.wk(x).view(B, T, Hkv, D).transpose(1, 2)  # (1) (B, Hkv, T, D)
        v = self.wv(x).view(B, T, Hkv, D).transpose(1, 2)  # (1) (B, Hkv, T, D)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v  # (2) shapes unchanged

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) at positions P..P+T-1, where P = cache.length (0 without a cache); or, given pos
        (T,), at those positions of a static cache (`KVCache.write`).

        cos, sin: `rope_tables` of those T positions, (T, D).
        """
        B, T, C = x.shape
        if cache is not None and not self.causal:
            raise ValueError("a KV cache is exact only under the causal mask: with causal=False every "
                             "output depends on later tokens, so cached keys/values go stale")
        q, k, v = self.project(x, cos, sin)  # (1)-(2)
        if cache is not None:
            k, v = cache.update(k, v) if pos is None else cache.write(pos, k, v)  # (3) (B, Hkv, S, D)
        p = self.dropout if self.training else 0.0
        y = attention(q, k, v, causal=self.causal, impl=self.impl, dropout_p=p, q_pos=pos)  # (4)-(7) (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (8) concat heads: (B, H, T, D) -> (B, T, H*D = C)
        return self.wo(y)  # (8) (B, T, C)

    def weights(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The attention weights A of steps (1)-(6) for x (B, T, C) with no cache: (B, H, T, T).

        For looking at (sample.py attention_plot=...); the forward pass never materialises them on the
        SDPA path. Row i holds how much query i reads each key; the causal mask zeroes j > i.
        """
        q, k, _ = self.project(x, cos, sin)  # (1)-(2)
        return attention_weights(q, repeat_kv(k, self.n_head), self.causal)  # (4)-(6) (B, H, T, T)

    def steps(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each step makes for x (B, T, C) with no cache, to look at (look.py's page): the scores of
        (5) before the mask and the weights of (6), (B, H, T, T); the values each query head reads, (B, H, T, D)."""
        q, k, v = self.project(x, cos, sin)  # (1)-(2)
        k, v = repeat_kv(k, self.n_head), repeat_kv(v, self.n_head)  # (4)
        return {"scores": attention_scores(q, k), "weights": attention_weights(q, k, self.causal), "values": v}

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        return KVCache(batch_size, self.n_kv_head, max_len, self.head_dim, device, dtype)


# ----------------------------------------------------------------------------------------------
# Demo: python -m model.attention
# ----------------------------------------------------------------------------------------------


def _matrix(m: torch.Tensor) -> str:
    return "\n".join("    " + " ".join(f"{v:6.3f}" if v != float("-inf") else "  -inf" for v in row) for row in m.tolist())


def demo(T: int = 6, seed: int = 0) -> dict:
    """Print the mask, one head's attention weights, and cached decoding vs one full pass.

    Returns the numbers it prints, so tests can check them. Leaves torch's global RNG as it was.
    """
    C, H, Hkv, D = 32, 4, 2, 8
    print(f"(5) the causal mask M for T = {T}: query i (row) may see key j (column) iff j <= i")
    print(_matrix(torch.zeros(T, T).masked_fill(~causal_mask(T, T), float("-inf"))))

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        attn = CausalSelfAttention(C, H, Hkv).eval()
        bidir = CausalSelfAttention(C, H, Hkv, causal=False).eval()  # the same weights, loaded below
        x = torch.randn(1, T, C)  # (B, T, C)
    cos, sin = rope_tables(torch.arange(T), D)  # (T, D)
    with torch.no_grad():
        A = attn.weights(x, cos, sin)[0, 0]  # (1)-(6) head 0: (T, T)
    row_sums, upper = A.sum(-1), A.triu(diagonal=1).abs().max().item()  # (T,), a number
    print(f"\n(6) attention weights A of head 0 for a random sequence of {T} tokens:")
    print(_matrix(A))
    print(f"    every row sums to 1 (largest error {(row_sums - 1).abs().max().item():.1e}); "
          f"largest weight above the diagonal: {upper}")

    with torch.no_grad():
        full = attn(x, cos, sin)  # (1, T, C): one pass over the whole sequence
        cache = attn.new_cache(1, T)
        steps = [attn(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache) for t in range(T)]  # T x (1, 1, C)
        decoded = torch.cat(steps, dim=1)  # (1, T, C)
    cached_diff = (full - decoded).abs().max().item()
    print(f"\nDecoding token by token with the KV cache vs one full pass: max |difference| = {cached_diff:.2e}")

    bidir.load_state_dict(attn.state_dict())
    with torch.no_grad():
        shorter = (x[:, :-1], cos[:-1], sin[:-1])  # without the last token: (1, T-1, C), (T-1, D), (T-1, D)
        causal_change = (attn(*shorter) - full[:, :-1]).abs().max().item()
        bidir_change = (bidir(*shorter) - bidir(x, cos, sin)[:, :-1]).abs().max().item()
    print("Appending one token changes the outputs at earlier positions by at most:")
    print(f"    causal attention:        {causal_change:.2e}  (so cached keys/values stay valid)")
    print(f"    bidirectional attention: {bidir_change:.2e}  (a cache would be stale)")
    return {"row_sums": row_sums, "max_above_diagonal": upper, "cached_vs_full": cached_diff,
            "causal_prefix_change": causal_change, "bidirectional_prefix_change": bidir_change}


if __name__ == "__main__":
    demo()
