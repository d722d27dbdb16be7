"""Weight-only int8 (model/quantize.py): what it rounds, how close its logits stay, and sampling with it."""

import io
from dataclasses import asdict

import pytest
import torch

from model.generate import complete
from model.quantize import Int8Linear, quantize_int8
from tests.helpers import tiny_model


def test_each_row_is_rounded_to_127_steps_of_its_own_scale():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    linear.weight.data[3] *= 100  # one large row keeps its own scale: the others lose no precision to it
    q = Int8Linear(linear)
    w = linear.weight.detach()
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() == 127
    assert torch.equal(q.weight.abs().amax(dim=1), torch.full((32,), 127, dtype=torch.int8))  # each row spans it
    dequantized = q.weight.float() * q.scale[:, None]  # (out, in)
    # rounding to the nearest step: at most half a step of each row's own scale
    assert ((dequantized - w).abs() <= q.scale[:, None] / 2 + 1e-7).all()


def test_int8_linear_computes_x_times_the_rounded_weight():
    """(x Q^T) * s in the int8 kernel (bf16 activations on a CPU) equals x times the dequantized weight
    computed in float64, within bf16's rounding of x and of the products (relative 2^-8 of each output's
    scale of terms)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=False)
    q = Int8Linear(linear)
    x = torch.randn(5, 7, 64)
    exact = x.double() @ (q.weight.double() * q.scale.double()[:, None]).T  # (5, 7, 48)
    terms = x.double().abs() @ (q.weight.double().abs() * q.scale.double()[:, None]).T  # sum of |x_j W_ij|
    for dtype in (torch.float32, torch.bfloat16):
        y = q(x.to(dtype))
        assert y.dtype == dtype and y.shape == (5, 7, 48)
        assert ((y.double() - exact).abs() <= 2**-7 * terms + 1e-6).all()


def test_a_quantized_model_keeps_its_logits_close_and_its_clear_choices():
    """A tiny random model: int8 weights move each logit by at most 5% of the logits' spread, so wherever
    fp32's best token leads the second by more than twice the largest move, int8 picks the same one.
    (How many greedy tokens match on trained models: python -m bench.int8_quality.)"""
    torch.manual_seed(0)
    model = tiny_model().eval()
    q = tiny_model().eval()
    q.load_state_dict(model.state_dict())
    quantize_int8(q)  # the same weights, rounded
    x = torch.randint(0, 65, (4, 32))
    with torch.no_grad():
        want, got = model(x)[0], q(x)[0]  # (B, T, V)
    moved = (got - want).abs().max()
    assert moved <= 0.05 * want.std()
    top2 = want.topk(2, dim=-1).values  # (B, T, 2)
    clear = top2[..., 0] - top2[..., 1] > 2 * moved  # (B, T): a lead no rounding can overturn
    assert clear.sum() >= 10 and torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


def test_a_tied_lm_head_gets_an_int8_copy_and_the_embedding_keeps_its_weight():
    model = tiny_model(tie_weights=True)
    embedding = model.tok_emb.weight.detach().clone()
    quantize_int8(model)
    assert all(isinstance(b.attn.wq, Int8Linear) and isinstance(b.mlp.w_down, Int8Linear) for b in model.blocks)
    assert isinstance(model.lm_head, Int8Linear) and torch.equal(model.tok_emb.weight, embedding)
    head = model.lm_head.weight.float() * model.lm_head.scale[:, None]  # the head reads the table it shared
    assert ((head - embedding).abs() <= model.lm_head.scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sample_py_samples_with_int8_weights_from_a_checkpoint(tmp_path, dtype):
    """quantize=int8 through sample.py (several samples, a stop string) writes what the int8 model computes."""
    from runtime.checkpoint import save_checkpoint
    from sample import SampleConfig, sample

    torch.manual_seed(0)
    model = tiny_model()
    chars = "".join(chr(32 + i) for i in range(65))
    meta = {"tokenizer": "char", "vocab_size": 65, "chars": chars}
    save_checkpoint({"model_config": asdict(model.config), "model": model.state_dict(), "data_meta": meta,
                     "step": 1}, tmp_path / "int8.pt")
    cfg = SampleConfig(ckpt=str(tmp_path / "int8.pt"), prompt="AB", max_new_tokens=12, num_samples=3,
                       temperature=0, dtype=dtype, quantize="int8", stop="~")
    texts = sample(cfg, out=io.StringIO(), err=io.StringIO())
    model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)  # what sample.py runs: weights in dtype,
    quantize_int8(model.eval())  # then rounded to int8
    tokens = complete(model, torch.tensor([[33, 34]]), 12, num_samples=3, temperature=0)  # "AB" and on
    want = ["".join(chars[t] for t in row).split("~")[0] for row in tokens.tolist()]
    assert texts == want
