"""The claims of model/attention.py, one test each. CPU, fp32 unless stated."""

import math
import subprocess
import sys

import pytest
import torch

from model.attention import (
    CausalSelfAttention,
    KVCache,
    apply_rope,
    attention,
    attention_weights,
    causal_mask,
    demo,
    rope_tables,
)

# fp32 outputs of two algebraically equal computations agree to a few ulps of the largest value
ATOL, RTOL = 1e-5, 1e-5


def make_attention(n_head=4, n_kv_head=2, n_embd=32, causal=True, impl="explicit", seed=0):
    torch.manual_seed(seed)
    return CausalSelfAttention(n_embd, n_head, n_kv_head, causal=causal, impl=impl).eval()


def tables(T: int, D: int = 8, base: float = 10000.0):
    """RoPE cos and sin for positions 0..T-1, (T, D) each."""
    return rope_tables(torch.arange(T), D, base)


# ---------------------------------------------------------------------------------------------
# The causal mask
# ---------------------------------------------------------------------------------------------


def test_causal_mask_is_lower_triangle_when_no_cache():
    assert torch.equal(causal_mask(5, 5), torch.ones(5, 5, dtype=torch.bool).tril())


def test_causal_mask_is_bottom_right_aligned_after_a_cache():
    # 2 new queries at positions 3 and 4 after P = 3 cached keys: query 3 sees keys 0..3, query 4 sees 0..4
    expected = torch.tensor([[1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 5), expected)
    # and it is the last T rows of the full triangle
    assert torch.equal(causal_mask(2, 5), causal_mask(5, 5)[3:])


def test_attention_weights_rows_sum_to_one_and_are_zero_above_the_diagonal():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    A = attention_weights(q, k)
    torch.testing.assert_close(A.sum(-1), torch.ones(2, 3, 7), atol=1e-6, rtol=0)
    assert torch.all(A.triu(diagonal=1) == 0)
    assert torch.all(A[..., causal_mask(7, 7)] > 0)  # every visible key gets some weight


# ---------------------------------------------------------------------------------------------
# Spelled-out attention == SDPA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T,S", [(7, 7), (3, 10), (1, 10)], ids=["T==S", "T<S", "T=1"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("Hkv", [4, 2], ids=["MHA", "GQA"])
def test_explicit_attention_equals_sdpa_outputs_and_gradients(T, S, causal, Hkv):
    torch.manual_seed(0)
    q = torch.randn(2, 4, T, 16, requires_grad=True)
    k = torch.randn(2, Hkv, S, 16, requires_grad=True)
    v = torch.randn(2, Hkv, S, 16, requires_grad=True)
    dy = torch.randn(2, 4, T, 16)
    grads = {}
    for impl in ("explicit", "sdpa"):
        y = attention(q, k, v, causal=causal, impl=impl)
        grads[impl] = (y, *torch.autograd.grad(y, (q, k, v), dy))
    for a, b in zip(grads["explicit"], grads["sdpa"], strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_explicit_module_equals_sdpa_module_after_a_cache():
    """T < S through the module: 4 cached tokens, then a chunk of 3, both implementations."""
    x = torch.randn(2, 7, 32)
    cos, sin = tables(7)
    outs = {}
    for impl in ("explicit", "sdpa"):
        attn = make_attention(impl=impl)
        cache = attn.new_cache(2, 16)
        with torch.no_grad():
            attn(x[:, :4], cos[:4], sin[:4], cache)
            outs[impl] = attn(x[:, 4:], cos[4:], sin[4:], cache)  # (B, 3, C) with S = 7
    torch.testing.assert_close(outs["explicit"], outs["sdpa"], atol=ATOL, rtol=RTOL)


def test_sdpa_is_causal_flag_alone_would_be_wrong_after_a_cache():
    """The footgun the bottom-right mask avoids: is_causal=True aligns the triangle top-left."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    right = attention(q, k, v, impl="explicit")
    top_left = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (right - top_left).abs().max() > 1e-2


def test_unknown_attention_impl_is_rejected():
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match="explicit"):
        attention(q, q, q, impl="flash")


# ---------------------------------------------------------------------------------------------
# The mask is what makes one pass train every position, and what makes the cache exact
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
def test_future_tokens_do_not_change_past_outputs(impl):
    attn = make_attention(impl=impl)
    cos, sin = tables(10)
    x = torch.randn(2, 10, 32)
    t = 5
    x_changed = x.clone()
    x_changed[:, t + 1 :] = torch.randn(2, 10 - t - 1, 32)  # everything after position t
    with torch.no_grad():
        y, y_changed = attn(x, cos, sin), attn(x_changed, cos, sin)
    assert torch.equal(y[:, : t + 1], y_changed[:, : t + 1])  # bitwise: no path from the future
    assert (y[:, t + 1 :] - y_changed[:, t + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
def test_bidirectional_attention_lets_future_tokens_change_past_outputs(impl):
    attn = make_attention(causal=False, impl=impl)
    cos, sin = tables(10)
    x = torch.randn(2, 10, 32)
    x_changed = x.clone()
    x_changed[:, -1] = torch.randn(2, 32)  # only the last token
    with torch.no_grad():
        y, y_changed = attn(x, cos, sin), attn(x_changed, cos, sin)
    assert (y[:, 0] - y_changed[:, 0]).abs().max() > 1e-3  # even position 0 sees it


# ---------------------------------------------------------------------------------------------
# The KV cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_chunked_prefill_and_token_by_token_decode_equal_full_forward(impl, n_kv_head):
    attn = make_attention(n_head=4, n_kv_head=n_kv_head, impl=impl)
    cos, sin = tables(6)
    x = torch.randn(3, 6, 32)  # batch 3
    with torch.no_grad():
        full = attn(x, cos, sin)
        cache = attn.new_cache(3, 16)
        chunks = torch.cat([attn(x[:, a:b], cos[a:b], sin[a:b], cache) for a, b in [(0, 3), (3, 5), (5, 6)]], 1)
        cache = attn.new_cache(3, 16)
        steps = torch.cat([attn(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache) for t in range(6)], 1)
    torch.testing.assert_close(chunks, full, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(steps, full, atol=ATOL, rtol=RTOL)
    assert cache.length == 6


def test_kv_cache_holds_hkv_heads_so_gqa_shrinks_it():
    mha, gqa = make_attention(n_head=4, n_kv_head=4), make_attention(n_head=4, n_kv_head=1)
    assert mha.new_cache(1, 16).k.shape == (1, 4, 16, 8)
    assert gqa.new_cache(1, 16).k.shape == (1, 1, 16, 8)  # 4x fewer numbers per token


def test_gqa_equals_multi_head_attention_with_repeated_kv_weights():
    """GQA is MHA in which each group of G query heads shares one K/V head."""
    gqa = make_attention(n_head=4, n_kv_head=2)
    mha = make_attention(n_head=4, n_kv_head=4)
    D, G = 8, 2
    with torch.no_grad():
        mha.wq.weight.copy_(gqa.wq.weight)
        mha.wo.weight.copy_(gqa.wo.weight)
        for name in ("wk", "wv"):  # K/V head j of GQA becomes heads G*j .. G*j+G-1 of MHA
            w = getattr(gqa, name).weight.view(2, D, 32)  # (Hkv, D, C)
            getattr(mha, name).weight.copy_(w.repeat_interleave(G, dim=0).reshape(4 * D, 32))
        cos, sin = tables(9, D)
        x = torch.randn(2, 9, 32)
        torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin), atol=ATOL, rtol=RTOL)


def test_kv_cache_overflow_raises_a_clear_error():
    cache = KVCache(1, 2, max_len=4, head_dim=8)
    k = torch.randn(1, 2, 3, 8)
    cache.update(k, k)
    with pytest.raises(ValueError, match=r"3 cached \+ 2 new tokens > max_len=4"):
        cache.update(k[:, :, :2], k[:, :, :2])
    assert cache.length == 3  # the failed write changed nothing


def test_kv_cache_writes_at_the_current_position_and_never_rewrites_earlier_ones():
    cache = KVCache(1, 1, max_len=6, head_dim=4)
    first, second = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4)
    cache.update(first, first)
    K, V = cache.update(second, -second)
    assert K.shape == V.shape == (1, 1, 5, 4) and cache.length == 5
    assert torch.equal(K[:, :, :2], first) and torch.equal(K[:, :, 2:5], second)
    assert torch.equal(V[:, :, 2:5], -second)
    assert torch.all(cache.k[:, :, 5:] == 0)  # the free slot is untouched


def test_kv_cache_rejects_keys_of_the_wrong_shape():
    cache = KVCache(3, 2, max_len=8, head_dim=4)
    k = torch.randn(1, 2, 1, 4)  # batch 1 into a batch-3 cache would broadcast silently
    with pytest.raises(ValueError, match=r"got keys \(1, 2, 1, 4\)"):
        cache.update(k, k)


def test_a_kv_cache_is_refused_without_the_causal_mask():
    attn = make_attention(causal=False)
    cos, sin = tables(2)
    with pytest.raises(ValueError, match="exact only under the causal mask"):
        attn(torch.randn(1, 2, 32), cos, sin, attn.new_cache(1, 4))


# ---------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------


def test_rope_at_position_zero_is_the_identity():
    cos, sin = tables(1, 16)
    x = torch.randn(2, 3, 1, 16)
    assert torch.equal(apply_rope(x, cos, sin), x)


def test_rope_preserves_norms():
    cos, sin = tables(64, 16)
    x = torch.randn(2, 3, 64, 16)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    """<R(m) q, R(n) k> is the same for every (m, n) with the same m - n."""
    cos, sin = tables(128, 16)
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def score(m, n):
        rq = apply_rope(q.view(1, 1, 1, 16), cos[m : m + 1].double(), sin[m : m + 1].double())
        rk = apply_rope(k.view(1, 1, 1, 16), cos[n : n + 1].double(), sin[n : n + 1].double())
        return (rq * rk).sum().item()

    for offset in (0, 1, 7, 40):
        scores = [score(n + offset, n) for n in (0, 3, 20, 80)]
        assert max(scores) - min(scores) < 1e-4, (offset, scores)  # fp32 angles, then float64 math
    assert abs(score(10, 0) - score(0, 0)) > 1e-2  # and it does depend on the offset


def test_rope_rotates_channel_pairs_i_and_i_plus_half():
    """The rotate-half convention: pair (x[i], x[i + D/2]) turns by angle m * base^(-2i/D)."""
    D, m = 8, 3
    cos, sin = tables(8, D, base=10000.0)
    x = torch.zeros(1, 1, 1, D)
    x[..., 1] = 1.0  # the unit vector of pair i = 1, first half
    y = apply_rope(x, cos[m : m + 1], sin[m : m + 1]).flatten()
    angle = m * 10000.0 ** (-2 * 1 / D)
    expected = torch.zeros(D)
    expected[1], expected[1 + D // 2] = math.cos(angle), math.sin(angle)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)


def test_rope_tables_of_later_positions_equal_a_slice_of_the_full_table():
    """What a KV cache relies on: tables built for positions P..P+T-1 alone match the full ones."""
    cos, sin = tables(40, 16)
    cos_late, sin_late = rope_tables(torch.arange(30, 40), 16)
    assert torch.equal(cos_late, cos[30:]) and torch.equal(sin_late, sin[30:])


def test_rope_base_sets_the_rotation_speeds():
    slow, fast = tables(8, 16, base=10000.0), tables(8, 16, base=100.0)
    cos_slow, sin_slow = slow
    cos_fast, sin_fast = fast
    assert torch.equal(sin_slow[:, 0], sin_fast[:, 0])  # pair 0 turns by m radians whatever the base
    assert (sin_slow[:, 7] - sin_fast[:, 7]).abs().max() > 0.1  # the last pair turns faster with base 100


def test_rope_of_bf16_input_is_bf16_and_matches_fp32_to_bf16_rounding():
    cos, sin = tables(512, 16)
    x = torch.randn(1, 2, 512, 16)
    y16 = apply_rope(x.bfloat16(), cos, sin)
    assert y16.dtype == torch.bfloat16 and cos.dtype == torch.float32
    # the error comes from rounding the input and the output only (each 2^-8 relative)
    torch.testing.assert_close(y16.float(), apply_rope(x, cos, sin), atol=0.05, rtol=2 ** -7)


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


def test_demo_shows_the_mask_properties_and_exact_cached_decoding():
    before = torch.get_rng_state()
    r = demo()
    assert torch.equal(torch.get_rng_state(), before)  # the demo leaves the global RNG alone
    torch.testing.assert_close(r["row_sums"], torch.ones_like(r["row_sums"]), atol=1e-6, rtol=0)
    assert r["max_above_diagonal"] == 0.0
    assert r["cached_vs_full"] < 1e-5
    assert r["causal_prefix_change"] == 0.0
    assert r["bidirectional_prefix_change"] > 1e-3


def test_python_dash_m_model_attention_prints_the_demo():
    out = subprocess.run([sys.executable, "-m", "model.attention"], capture_output=True, text=True, check=True)
    assert "the causal mask" in out.stdout and "-inf" in out.stdout
    assert "KV cache vs one full pass" in out.stdout


@pytest.mark.parametrize("D", [16, 64, 256])
def test_dividing_by_sqrt_d_keeps_the_scores_at_unit_variance(D):
    """Step (5)'s scaling: q.k of unit-variance components has variance D; q.k / sqrt(D) has variance 1."""
    g = torch.Generator().manual_seed(D)
    q, k = torch.randn(20000, D, generator=g), torch.randn(20000, D, generator=g)
    dots = (q * k).sum(-1)  # (20000,)
    assert abs(dots.var().item() / D - 1) < 0.05  # the standard error of a variance over 20000 samples is 1%
    assert abs((dots / math.sqrt(D)).var().item() - 1) < 0.05


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
def test_attention_dropout_zeroes_weights_at_rate_p_and_scales_the_rest(impl):
    """With V the identity, y = A itself: after dropout p about a fraction p of the causal weights is
    zero and the others are A's times 1 / (1 - p)."""
    torch.manual_seed(0)
    T = D = 64
    q, k = torch.randn(1, 4, T, D), torch.randn(1, 4, T, D)
    v = torch.eye(T).expand(1, 4, T, T)  # (B, H, S, D) with S = D
    full = attention(q, k, v, impl=impl)
    dropped = attention(q, k, v, impl=impl, dropout_p=0.5)
    allowed = causal_mask(T, T).expand_as(full)
    zeroed = (dropped[allowed] == 0).float().mean().item()
    assert abs(zeroed - 0.5) < 0.03, zeroed  # 8320 weights: a binomial's sd is 0.005
    kept = dropped[allowed] != 0
    torch.testing.assert_close(dropped[allowed][kept], 2 * full[allowed][kept], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_gqa_decode_on_a_static_cache_folds_query_heads_and_equals_repeated_kv(n_kv_head):
    """The static-cache path of attention (q_pos given, as the compiled decode step calls it) with grouped
    K/V heads: each group's query heads folded into the query length, one plain multi-head SDPA call.
    Equal to repeating K/V to every head (the explicit path) within 1e-5."""
    torch.manual_seed(0)
    B, H, S, D = 2, 4, 12, 8
    for T, first in [(1, 7), (3, 4)]:  # one token at position 7; three at 4, 5, 6
        q = torch.randn(B, H, T, D)
        k, v = torch.randn(B, n_kv_head, S, D), torch.randn(B, n_kv_head, S, D)
        pos = torch.arange(first, first + T)
        folded = attention(q, k, v, impl="sdpa", q_pos=pos)
        explicit = attention(q, k, v, impl="explicit", q_pos=pos)
        assert folded.shape == (B, H, T, D)
        assert torch.allclose(folded, explicit, atol=1e-5)
