"""Attention pictures (runtime/plots.py): they show the weights the model really uses, as a valid PNG."""

import struct
from pathlib import Path

import pytest
import torch

from model.attention import repeat_kv, rope_tables
from model.gpt import GPT
from runtime.plots import DPI, figure_inches, plot_attention
from tests.helpers import tiny_model


def model(causal: bool = True) -> GPT:
    return tiny_model(n_embd=32, causal=causal)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_attention_maps_are_the_weights_each_layer_really_uses(causal):
    """A V, heads concatenated and projected, equals the layer's own (SDPA) output, layer by layer."""
    m, idx = model(causal), torch.randint(0, 65, (2, 12))
    maps = m.attention_maps(idx)  # (n_layer, B, H, T, T)
    assert maps.shape == (2, 2, 4, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 12), atol=1e-6, rtol=0)
    above = maps.triu(diagonal=1)
    assert torch.all(above == 0) if causal else torch.all(above[..., 0, 1:] > 0)
    cos, sin = rope_tables(torch.arange(12), 8)
    x = m.tok_emb(idx)
    with torch.no_grad():
        for layer, block in enumerate(m.blocks):
            h = block.attn_norm(x)
            _, _, v = block.attn.project(h, cos, sin)
            y = (maps[layer] @ repeat_kv(v, 4)).transpose(1, 2).reshape(2, 12, 32)  # (B, T, C)
            torch.testing.assert_close(block.attn.wo(y), block.attn(h, cos, sin), atol=1e-6, rtol=1e-5)
            x = block(x, cos, sin)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("layer", [None, 1], ids=["every layer", "one layer"])
def test_the_plot_draws_the_maps_and_writes_a_png_of_the_expected_size(tmp_path, layer):
    m, idx = model(), torch.randint(0, 65, (1, 10))
    maps = m.attention_maps(idx)[:, 0]  # (n_layer, H, T, T)
    drawn = plot_attention(maps, [chr(65 + t % 26) for t in idx[0].tolist()], tmp_path / "a.png", layer=layer)
    layers = [0, 1] if layer is None else [1]
    expected = [maps[l, h] for l in layers for h in range(4)]
    assert len(drawn) == len(expected)
    for d, e in zip(drawn, expected, strict=True):
        assert torch.equal(d.nan_to_num(0.0), e)  # what is drawn is the weights; masked zeros are blank
        assert torch.isnan(d).sum() == 10 * 9 // 2  # exactly the upper triangle is blank
    width, height = figure_inches(len(layers), 4, 10)
    assert png_size(tmp_path / "a.png") == (round(width * DPI), round(height * DPI))
