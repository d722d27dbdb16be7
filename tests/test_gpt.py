"""The GPT built from model/attention.py: loss, caching, generation, parameter and FLOP accounting."""

import ast
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.attention import rope_tables
from model.gpt import GPT, GPTConfig
from tests.helpers import REPO
from tests.helpers import tiny_model as tiny

ATOL, RTOL = 1e-5, 1e-5


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def test_loss_at_initialization_is_ln_vocab_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, block_size=32, n_layer=2, n_head=6, n_embd=384))
    x, y = torch.randint(0, 1000, (4, 32)), torch.randint(0, 1000, (4, 32))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(1000)) < 1e-4  # the untied head starts at zero: exactly uniform


def test_loss_at_initialization_is_near_ln_vocab_size_with_tied_weights():
    model = tiny(tie_weights=True)
    assert model.lm_head.weight is model.tok_emb.weight
    x, y = torch.randint(0, 65, (4, 32)), torch.randint(0, 65, (4, 32))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(65)) < 0.1


def test_targets_of_minus_one_are_ignored():
    model = tiny()
    x, y = torch.randint(0, 65, (2, 8)), torch.randint(0, 65, (2, 8))
    y_masked = y.clone()
    y_masked[:, 4:] = -1
    logits, loss = model(x, y_masked)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, 65), y[:, :4].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_a_padded_vocabulary_is_never_seen_the_logits_the_loss_and_greedy_tokens_are_the_unpadded_models():
    """GPT-2's 50,257 tokens get 50,304 rows (pad_vocab): the extra rows are cut from the logits, so even
    huge weights there change no logit, no loss and no sampled token."""
    from model.generate import generate_tokens
    from model.gpt import pad_vocab

    assert (pad_vocab(50257), pad_vocab(65), pad_vocab(1024), pad_vocab(8200), pad_vocab(49152)) == \
        (50304, None, None, 8256, None)
    plain, padded = tiny(vocab_size=100), tiny(vocab_size=100, padded_vocab=128)
    assert padded.lm_head.weight.shape == padded.tok_emb.weight.shape == (128, 64)
    with torch.no_grad():
        for p, q in zip(plain.parameters(), padded.parameters(), strict=True):
            q[: p.shape[0]].copy_(p)
        padded.lm_head.weight[100:] = 1e4  # if any of these rows reached the softmax, it would take all of it
    x, y = torch.randint(0, 100, (2, 16)), torch.randint(0, 100, (2, 16))
    (a, loss_a), (b, loss_b) = plain(x, y), padded(x, y)
    assert b.shape == (2, 16, 100) and torch.equal(a, b) and torch.equal(loss_a, loss_b)
    def tokens(model, **sampling):
        return torch.cat(list(generate_tokens(model, x[:1, :4], 24, **sampling)), dim=1)  # (1, 24)

    assert tokens(padded, temperature=1.0, num_samples=8).max() < 100
    assert torch.equal(tokens(padded, temperature=0), tokens(plain, temperature=0))


def test_train_py_pads_gpt2s_vocabulary_and_nothing_smaller(tmp_path):
    from runtime.config import compose
    from train import TrainConfig, build_model

    cfg = compose("train", TrainConfig, ["model=tiny"])
    rows = {v: build_model(cfg, {"vocab_size": v}, torch.device("cpu")).lm_head.weight.shape[0]
            for v in (65, 1024, 50257)}
    assert rows == {65: 65, 1024: 1024, 50257: 50304}


def test_a_tiny_model_overfits_one_batch():
    model = tiny().train()
    torch.manual_seed(1)
    x = torch.randint(0, 65, (4, 32))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0 and loss.item() < 0.05, (first, loss.item())


# ---------------------------------------------------------------------------------------------
# Causality and the KV cache, through the whole model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_future_tokens_change_past_logits_only_without_the_mask(causal):
    model = tiny(causal=causal)
    x = torch.randint(0, 65, (2, 12))
    x_changed = x.clone()
    x_changed[:, 8:] = (x[:, 8:] + 1) % 65
    with torch.no_grad():
        past, past_changed = model(x)[0][:, :8], model(x_changed)[0][:, :8]
    if causal:
        assert torch.equal(past, past_changed)
    else:
        assert (past - past_changed).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_appending_a_token_changes_earlier_outputs_only_without_the_mask(causal):
    """Why only a causal model can cache: its outputs at earlier positions never change when the
    sequence grows, so keys and values computed once stay right. A bidirectional model's do change."""
    model = tiny(causal=causal)
    x = torch.randint(0, 65, (2, 12))
    with torch.no_grad():
        short, longer = model(x[:, :11])[0], model(x)[0][:, :11]
    if causal:  # equal up to float summation order: the two lengths take different matmul kernels' paths
        torch.testing.assert_close(short, longer, atol=ATOL, rtol=RTOL)
    else:
        assert (short - longer).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_full_forward_equals_chunked_prefill_equals_cached_decode(impl, n_kv_head):
    model = tiny(n_kv_head=n_kv_head, attn_impl=impl)
    x = torch.randint(0, 65, (3, 6))  # batch 3
    with torch.no_grad():
        full, _ = model(x)
        caches = model.new_kv_caches(3)
        chunked = torch.cat([model(x[:, a:b], kv_caches=caches)[0] for a, b in [(0, 3), (3, 5), (5, 6)]], 1)
        caches = model.new_kv_caches(3)
        decoded = torch.cat([model(x[:, t : t + 1], kv_caches=caches)[0] for t in range(6)], 1)
    torch.testing.assert_close(chunked, full, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(decoded, full, atol=ATOL, rtol=RTOL)


def test_explicit_and_sdpa_models_agree_in_outputs_and_gradients():
    x, y = torch.randint(0, 65, (2, 16)), torch.randint(0, 65, (2, 16))
    results = []
    for impl in ("explicit", "sdpa"):
        model = tiny(attn_impl=impl)
        logits, loss = model(x, y)
        loss.backward()
        results.append((logits, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=ATOL, rtol=RTOL)
    for g0, g1 in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-4)


def test_sequence_longer_than_block_size_raises_a_clear_error():
    model = tiny(block_size=8)
    with pytest.raises(ValueError, match="exceed block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_decoding_under_bf16_autocast_caches_bf16_keys_and_matches_the_full_pass():
    model = tiny()
    x = torch.randint(0, 65, (2, 10))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        caches = model.new_kv_caches(2)
        assert caches[0].k.dtype == torch.bfloat16  # half the memory of fp32 keys
        full, _ = model(x)
        decoded = torch.cat([model(x[:, t : t + 1], kv_caches=caches)[0] for t in range(10)], 1)
    # bf16 keeps 8 bits of mantissa: the two orders of summation agree to a few bf16 ulps of the logits
    torch.testing.assert_close(decoded.float(), full.float(), atol=0.02, rtol=0.02)


def test_rope_base_from_the_config_reaches_attention():
    model, other = tiny(), tiny(rope_base=100.0)
    other.load_state_dict(model.state_dict())
    x = torch.randint(0, 65, (1, 16))
    with torch.no_grad():
        assert (model(x)[0] - other(x)[0]).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------
# A bag of tokens: only RoPE and the causal mask tell the model where each token stands
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def positions_off(monkeypatch):
    """RoPE switched off: GPT.forward gets the tables of the identity rotation (cos = 1, sin = 0), so
    apply_rope returns q and k unchanged at every position."""
    def identity_tables(positions: torch.Tensor, head_dim: int, base: float,
                        scaling=None) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_tables(positions, head_dim, base, scaling)  # (T, D) each
        return torch.ones_like(cos), torch.zeros_like(sin)

    monkeypatch.setattr("model.gpt.rope_tables", identity_tables)


def permuted_logits(causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of permuted tokens, and the logits of the tokens, permuted the same way: (2, 16, V) each."""
    model = tiny(causal=causal)
    x = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))  # (T,)
    with torch.no_grad():
        return model(x[:, perm])[0], model(x)[0][:, perm]


def test_attention_alone_is_order_blind_permuting_tokens_permutes_outputs(positions_off):
    """Without positions and without the mask the model reads a bag of tokens: every position computes
    the same function of its own token and of the set of all tokens, wherever it stands."""
    of_permuted, permuted = permuted_logits(causal=False)
    # equal up to float summation order (the keys are summed in another order): observed ~1e-7
    torch.testing.assert_close(of_permuted, permuted, atol=ATOL, rtol=RTOL)


def test_rope_makes_attention_see_order_permuting_tokens_changes_outputs():
    of_permuted, permuted = permuted_logits(causal=False)
    assert (of_permuted - permuted).abs().max() > 100 * ATOL  # observed ~3e-3 for this small random model


def test_the_causal_mask_makes_attention_see_order_permuting_tokens_changes_outputs(positions_off):
    of_permuted, permuted = permuted_logits(causal=True)
    assert (of_permuted - permuted).abs().max() > 100 * ATOL  # observed ~0.3: each token sees another prefix


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,match", [(dict(n_embd=65), "divisible by n_head"),
                                       (dict(n_kv_head=3), "divisible by n_kv_head"),
                                       (dict(n_embd=12, n_head=4), "even for RoPE"),
                                       (dict(attn_impl="flash"), "attn_impl"),
                                       (dict(dropout=1.0), "dropout")])
def test_invalid_configs_are_rejected_with_the_reason(bad, match):
    cfg = dict(vocab_size=65, n_layer=1, n_head=4, n_embd=64)
    cfg.update(bad)
    with pytest.raises(ValueError, match=match):
        GPTConfig(**cfg)


def test_model_package_imports_only_torch_and_the_standard_library():
    """The tutorial files need torch alone; llama.py reads and writes weight files with safetensors too."""
    files = sorted((REPO / "model").glob("*.py"))
    assert {f.name for f in files} >= {"attention.py", "gpt.py", "generate.py", "llama.py"}
    for path in files:
        allowed = {"torch", "math", "dataclasses", "typing", "model"}
        if path.name == "llama.py":
            allowed |= {"json", "pathlib", "safetensors"}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path} imports {roots - allowed}"


# ---------------------------------------------------------------------------------------------
# Parameter and FLOP accounting
# ---------------------------------------------------------------------------------------------


def test_initialization_follows_gpt2_with_a_zero_lm_head():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, n_layer=8, n_head=8, n_embd=512))
    std = lambda name: dict(model.named_parameters())[name].std().item()  # noqa: E731
    assert abs(std("tok_emb.weight") / 0.02 - 1) < 0.02
    assert abs(std("blocks.3.attn.wq.weight") / 0.02 - 1) < 0.02
    assert abs(std("blocks.3.attn.wo.weight") / (0.02 / 4) - 1) < 0.02  # 0.02 / sqrt(2 * 8 layers)
    assert abs(std("blocks.3.mlp.w_down.weight") / (0.02 / 4) - 1) < 0.02
    assert torch.all(model.lm_head.weight == 0)
    assert torch.all(model.blocks[3].attn_norm.weight == 1)


def test_parameter_count_matches_the_formula():
    for tie in (False, True):
        model = tiny(tie_weights=tie)
        c = model.config
        V, C, L, Dkv = c.vocab_size, c.n_embd, c.n_layer, c.kv_heads * c.head_dim
        attn = 2 * C * C + 2 * C * Dkv  # W_Q, W_O: C x C; W_K, W_V: C x Hkv D
        mlp = 3 * C * c.hidden
        expected = V * C * (1 if tie else 2) + L * (attn + mlp + 2 * C) + C
        assert model.attention_params_per_layer() == attn
        assert model.num_params() == expected


def test_gpt3_shape_has_6_3m_attention_parameters_per_head_and_58b_in_all_attention_layers():
    cfg = GPTConfig(vocab_size=50257, block_size=2048, n_layer=96, n_head=96, n_embd=12288)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = GPT(cfg)
    assert all(p.is_meta for p in model.parameters())
    per_layer = model.attention_params_per_layer()
    per_head = per_layer // cfg.n_head
    assert per_head == 4 * 12288 * 128 == 6_291_456  # W_Q, W_K, W_V, W_O slices of one head: ~6.3M
    assert cfg.n_layer * per_layer == 57_982_058_496  # ~58B
    assert cfg.hidden == 32768  # 8/3 * 12288: SwiGLU's 3 matrices have the 8 C^2 of GPT-3's MLP
    assert abs(model.num_params() / 175e9 - 1) < 0.01  # and the whole model is GPT-3's 175B to 1%


@pytest.mark.parametrize("tie", [False, True])
def test_flops_per_token_matches_torch_flop_counter(tie):
    """6 N + 12 L H D T, checked against every matmul torch counts in a forward and backward pass."""
    model = tiny(attn_impl="explicit", tie_weights=tie, n_kv_head=2)
    B, T = 2, 32
    x = torch.randint(0, 65, (B, T))
    with FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    assert counter.get_total_flops() == model.flops_per_token(T) * B * T


def test_dropout_acts_in_training_only_and_adds_no_weights():
    plain, dropped = tiny(), tiny(dropout=0.3)
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # the Llama export is unaffected
    assert dropped.emb_dropout.p == 0.3 and all(b.attn.dropout == 0.3 and b.dropout.p == 0.3 for b in dropped.blocks)
    x = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x)[0], plain.eval()(x)[0], rtol=0, atol=0)
        dropped.train()
        assert not torch.equal(dropped(x)[0], dropped(x)[0])  # a fresh mask each pass


def test_finer_dropout_keys_set_one_place_each():
    """attn_dropout and emb_dropout override dropout for their place; None follows dropout."""
    m = tiny(dropout=0.2, attn_dropout=0.0, emb_dropout=0.1)
    assert m.emb_dropout.p == 0.1 and all(b.attn.dropout == 0.0 and b.dropout.p == 0.2 for b in m.blocks)
    x = torch.randint(0, 65, (2, 16))
    residual_only = tiny(dropout=0.3, attn_dropout=0.0, emb_dropout=0.0).train()
    attention_only = tiny(dropout=0.0, attn_dropout=0.5).train()
    block, attn_block = residual_only.blocks[0], attention_only.blocks[0]
    h = torch.randn(2, 16, 64)
    cos, sin = rope_tables(torch.arange(16), 16)
    with torch.no_grad():
        emb = residual_only.tok_emb(x)
        assert torch.equal(residual_only.emb_dropout(emb), emb)  # emb_dropout=0: no mask in training
        assert torch.equal(block.attn(h, cos, sin), block.attn.eval()(h, cos, sin))  # attn_dropout=0
        assert not torch.equal(block(h, cos, sin), block(h, cos, sin))  # the residual branches still drop
        assert not torch.equal(attn_block.attn(h, cos, sin), attn_block.attn.eval()(h, cos, sin))
    with pytest.raises(ValueError, match=r"attn_dropout=1.0 must be in \[0, 1\)"):
        GPTConfig(vocab_size=65, attn_dropout=1.0)
