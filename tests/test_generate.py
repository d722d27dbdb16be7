"""model/generate.py: the reference loop, the cache across block_size, samples of one prompt, sampling controls."""

import pytest
import torch

from model.generate import (CompiledDecode, complete, decode_one_token, generate, generate_tokens, prefill,
                            sample_next_token, slide_window)
from model.gpt import GPT
from tests.helpers import tiny_model as tiny

# ---------------------------------------------------------------------------------------------
# The reference loop: prefill once, then one token at a time through the KV cache
# ---------------------------------------------------------------------------------------------


def test_the_reference_loop_equals_greedy_recomputation_from_scratch():
    """generate(): each token is the argmax of a fresh full pass over everything before it."""
    model = tiny()
    out = generate(model, torch.randint(0, 65, (3, 4)), 20)
    assert out.shape == (3, 24)
    with torch.no_grad():
        for L in range(4, 24):
            assert torch.equal(out[:, L], model(out[:, :L])[0][:, -1].argmax(-1)), L


def test_the_reference_loop_equals_the_product_loop_at_temperature_zero():
    model, prompt = tiny(), torch.randint(0, 65, (2, 5))
    assert torch.equal(generate(model, prompt, 12), complete(model, prompt, 12, temperature=0))


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
def test_decode_one_token_after_prefill_equals_the_full_forward_pass(impl):
    """The product path's two steps: prefill gives the last prompt position's logits, and each
    decode_one_token after it those of the next position, as one full pass over everything computes them."""
    model = tiny(attn_impl=impl)
    x = torch.randint(0, 65, (3, 10))  # (B, T): a 6-token prompt, then 4 tokens decoded one by one
    with torch.no_grad():
        full, _ = model(x)  # (B, T, V)
        caches = model.new_kv_caches(3, 10)
        steps = [prefill(model, x[:, :6], caches)] + [decode_one_token(model, x[:, t : t + 1], caches)
                                                      for t in range(6, 10)]  # 5 x (B, V)
    assert caches[0].length == 10
    # fp32; equal up to float summation order (one query row against S keys, not a (T, S) block): ~1e-7
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 5:], atol=1e-5, rtol=1e-5)


def test_the_decode_step_compiles_alone_as_one_graph_with_the_eager_logits():
    """decode_one_token is what a compiled sampler compiles: torch.compile captures it whole
    (fullgraph=True fails at any graph break), and it computes what the eager step does. The "eager"
    backend checks the capture without inductor's minutes of C++ compilation on a CPU."""
    torch._dynamo.reset()
    model, x = tiny().eval(), torch.randint(0, 65, (2, 9))
    compiled = torch.compile(decode_one_token, fullgraph=True, backend="eager")
    with torch.no_grad():
        eager_caches, compiled_caches = model.new_kv_caches(2, 9), model.new_kv_caches(2, 9)
        prefill(model, x[:, :5], eager_caches), prefill(model, x[:, :5], compiled_caches)
        for t in range(5, 9):
            want = decode_one_token(model, x[:, t : t + 1], eager_caches)  # (B, V)
            torch.testing.assert_close(compiled(model, x[:, t : t + 1], compiled_caches), want, atol=0, rtol=0)
    assert compiled_caches[0].length == eager_caches[0].length == 9


def test_an_empty_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="the prompt is empty"):
        complete(tiny(), torch.zeros(1, 0, dtype=torch.long), 3)


# ---------------------------------------------------------------------------------------------
# The cache across block_size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_len", [1, 5], ids=["one-token prompt", "five-token prompt"])
def test_greedy_generation_with_and_without_the_cache_is_identical(prompt_len):
    model = tiny()
    prompt = torch.randint(0, 65, (2, prompt_len))
    with_cache = complete(model, prompt, 20, temperature=0, use_cache=True)
    without = complete(model, prompt, 20, temperature=0, use_cache=False)
    assert with_cache.shape == (2, prompt_len + 20)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :prompt_len], prompt)


def test_the_window_slides_by_a_quarter_of_block_size_once_full():
    assert [slide_window(0, L, 8) for L in (1, 8)] == [0, 0]
    assert slide_window(0, 9, 8) == 3  # 6 = 3/4 * 8 tokens remain: positions 3..8
    assert slide_window(3, 11, 8) == 3 and slide_window(3, 12, 8) == 6


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "recomputed"])
def test_generation_past_block_size_equals_recomputing_the_window_from_scratch(use_cache):
    """Each token is the greedy choice of a fresh full pass over its window idx[start:], however made."""
    model = tiny(block_size=8)
    out = complete(model, torch.randint(0, 65, (2, 5)), 20, temperature=0, use_cache=use_cache)
    assert out.shape == (2, 25)
    start = 0
    with torch.no_grad():
        for L in range(5, 25):  # token L follows the window of the first L tokens
            start = slide_window(start, L, 8)
            logits, _ = model(out[:, start:L])
            assert torch.equal(out[:, L], logits[:, -1].argmax(-1)), (L, start)


# ---------------------------------------------------------------------------------------------
# Several samples of one prompt, and the sampling controls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_prompts", [1, 2])
def test_samples_of_a_prompt_share_a_single_prefill(n_prompts):
    """The caller says how many samples of each prompt: each prompt is prefilled once, its cache copied."""
    model = tiny()
    shapes = []
    model.tok_emb.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    prompt = torch.randint(0, 65, (n_prompts, 5))
    shared = complete(model, prompt, 6, num_samples=3, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert shapes == [(n_prompts, 5)] + [(3 * n_prompts, 1)] * 5  # one prefill per prompt, then batched decoding
    assert torch.equal(shared[:, :5], prompt.repeat_interleave(3, dim=0))  # rows 0-2 continue prompt 0, ...
    separate = complete(model, prompt, 6, num_samples=3, temperature=1.0, generator=torch.Generator().manual_seed(0),
                        use_cache=False)
    assert torch.equal(shared, separate)  # the same samples as computing each row in full
    assert len({tuple(row) for row in shared[:3, 5:].tolist()}) > 1  # and the samples differ


def test_a_seeded_generator_reproduces_a_sample():
    model = tiny()
    prompt = torch.randint(0, 65, (2, 3))
    a = complete(model, prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(7))
    b = complete(model, prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(7))
    c = complete(model, prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def trained_tiny() -> GPT:
    """Sharpen the tiny model's predictions a little so that greedy and sampling differ visibly."""
    model = tiny().train()
    x = torch.randint(0, 65, (4, 32), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss = model(x, torch.roll(x, -1, 1))[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("controls", [dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-40)],
                         ids=["top_k=1", "tiny top_p", "tiny temperature"])
def test_top_k_one_and_a_tiny_top_p_equal_greedy(controls):
    model = trained_tiny()
    prompt = torch.randint(0, 65, (3, 2))
    greedy = complete(model, prompt, 20, temperature=0)
    sampled = complete(model, prompt, 20, **{"temperature": 1.5, **controls}, generator=torch.Generator().manual_seed(0))
    free = complete(model, prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, greedy)
    assert not torch.equal(free, greedy)  # without the control, the same seed does not give greedy


def test_top_k_samples_only_among_the_k_most_likely_tokens():
    logits = torch.randn(1, 65, generator=torch.Generator().manual_seed(0)).repeat(2000, 1)
    picks = sample_next_token(logits, top_k=5, generator=torch.Generator().manual_seed(0))
    allowed = set(torch.topk(logits[0], 5).indices.tolist())
    assert set(picks.flatten().tolist()) == allowed  # all 5 occur in 2000 draws, nothing else


def test_top_k_keeps_exactly_k_tokens_even_when_logits_tie():
    logits = torch.tensor([[2.0, 2.0, 2.0, 0.0]]).repeat(1000, 1)
    picks = sample_next_token(logits, top_k=1, generator=torch.Generator().manual_seed(0))
    assert picks.unique().numel() == 1


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    picks = sample_next_token(probs.log().repeat(4000, 1), top_p=0.75, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(picks.flatten(), minlength=4).float() / 4000
    assert counts[2] == 0 and counts[3] == 0  # 0.5 + 0.3 already reaches 0.75
    assert abs(counts[0].item() - 0.5 / 0.8) < 0.03  # renormalised over {0, 1}; 3 sigma ~ 0.023


@pytest.mark.parametrize("bad,match", [(dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"),
                                       (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                       (dict(max_new_tokens=-1), "max_new_tokens"),
                                       (dict(num_samples=0), "num_samples")])
def test_invalid_sampling_controls_are_rejected(bad, match):
    args = {"max_new_tokens": 3, **bad}
    with pytest.raises(ValueError, match=match):
        complete(tiny(), torch.zeros(1, 1, dtype=torch.long), **args)


def test_one_token_decode_steps_never_use_cudnn_attention_and_prefill_may(monkeypatch):
    """cuDNN's SDPA builds a plan per key length: decode steps run with it disabled (on every device)."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append((q.size(-2), torch.backends.cuda.cudnn_sdp_enabled()))
        return real(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny()
    list(generate_tokens(model, torch.randint(0, 65, (1, 5)), 4))
    layers = model.config.n_layer
    assert seen[:layers] == [(5, True)] * layers  # the prefill: any kernel
    assert seen[layers:] == [(1, False)] * (3 * layers)  # three decode steps: never cuDNN
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored afterwards


# ---------------------------------------------------------------------------------------------
# A static KV cache and a compiled decode step (sample.py compile=true)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
def test_a_static_cache_written_at_positions_equals_the_growing_cache(impl):
    """KVCache.write at a position tensor, attending over all max_len slots with the mask from positions,
    gives the logits of KVCache.update's growing cache (fp32: float summation order apart, ~1e-7)."""
    model = tiny(attn_impl=impl).eval()
    x = torch.randint(0, 65, (2, 10))  # (B, T): a 6-token prompt, then 4 tokens decoded
    with torch.no_grad():
        growing, static = model.new_kv_caches(2, 16), model.new_kv_caches(2, 16)
        prefill(model, x[:, :6], growing), prefill(model, x[:, :6], static)
        for t in range(6, 10):
            want = decode_one_token(model, x[:, t : t + 1], growing)  # (B, V)
            got = decode_one_token(model, x[:, t : t + 1], static, pos=torch.tensor([t]))  # (B, V)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_compiled_decode_step_gives_the_eager_tokens_through_samples_and_a_sliding_window():
    """CompiledDecode (inductor on a CPU, as sample.py compile=true) against eager decoding: greedy and
    sampled tokens equal, with 3 samples of each of 2 prompts and a text that outgrows the context."""
    torch._dynamo.reset()
    model = tiny().eval()
    prompt = torch.randint(0, 65, (2, 5))
    n = model.config.block_size + 8  # past the context: the window slides and is prefilled again
    for controls in (dict(temperature=0), dict(temperature=1.0, top_k=10)):
        eager = complete(model, prompt, n, 3, generator=torch.Generator().manual_seed(1), **controls)
        compiled = CompiledDecode(model)
        tokens = complete(model, prompt, n, 3, generator=torch.Generator().manual_seed(1), compiled=compiled,
                          **controls)
        assert compiled.error is None and compiled.step is not decode_one_token
        assert torch.equal(tokens, eager)


def test_a_decode_step_that_cannot_compile_runs_eagerly_with_the_reason(monkeypatch):
    def broken_compile(fn, **kwargs):
        def fails(*args):
            raise RuntimeError("no C++ compiler here")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    model, prompt = tiny().eval(), torch.randint(0, 65, (1, 4))
    compiled = CompiledDecode(model)
    tokens = complete(model, prompt, 12, temperature=0, compiled=compiled)
    assert compiled.error == "RuntimeError: no C++ compiler here" and compiled.step is decode_one_token
    assert torch.equal(tokens, complete(model, prompt, 12, temperature=0))


def test_a_prepared_decode_step_is_called_twice_before_decoding_and_makes_no_tensor_per_token(monkeypatch):
    """CompiledDecode.prepare calls the step twice (compile; on CUDA, record the graph), then each token
    writes the position into one device tensor: no torch.tensor per token (on CUDA, a host-to-device copy)."""
    calls = []

    def counting_compile(fn, **kwargs):
        def step(*args):
            calls.append(args[3])  # the position tensor it is given
            return fn(*args)
        return step

    monkeypatch.setattr(torch, "compile", counting_compile)
    model, prompt = tiny().eval(), torch.randint(0, 65, (1, 4))
    compiled = CompiledDecode(model)
    made = {"n": 0}
    real_tensor = torch.tensor

    def counted(*args, **kwargs):
        made["n"] += 1
        return real_tensor(*args, **kwargs)

    tokens = None
    with monkeypatch.context() as m:
        m.setattr(torch, "tensor", counted)
        tokens = complete(model, prompt, 12, temperature=0, compiled=compiled)
    assert compiled.error is None and len(calls) == 2 + 11  # two in prepare, then one per token after the first
    assert all(pos is compiled.pos for pos in calls)  # one tensor, written in place
    assert made["n"] == 0
    assert torch.equal(tokens, complete(model, prompt, 12, temperature=0))
