"""Weight-only int8: every linear layer's weight kept as int8, with one scale per output channel.

At batch 1, decoding one token reads every weight once, so its speed is at most the memory bandwidth
divided by the bytes of the weights. int8 weights are a quarter of fp32's bytes and half of bf16's.
Each row of W (one output channel) gets its own scale, so one large row does not cost the others their
precision:

    s_i = max_j |W_ij| / 127         Q_ij = round(W_ij / s_i), in [-127, 127]        W ≈ s[:, None] * Q
    y = x W^T ≈ (x Q^T) * s          the scale factors out of the sum over j: one multiply per output

The activations stay in the model's dtype; only the weights are rounded. The token embedding stays as
it is: a lookup reads one row per token, not the whole table. An LM head that shares the embedding's
weight (tie_weights) gets an int8 copy of it, because the head does read the whole table every token:
at SmolLM2-135M's shape that table is a fifth of the weights. Quantizing is for sampling: the model
cannot train afterwards.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Int8Linear(nn.Module):
    """nn.Linear without bias whose weight W (out, in) is stored as int8 Q and per-row scales s (out,)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear quantizes linear layers without a bias (ropegpt has none)")
        w = linear.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,): the largest |W_ij| of row i maps to 127
        self.register_buffer("weight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))  # (out, in)
        self.register_buffer("scale", scale.to(linear.weight.dtype))  # (out,)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) = (x Q^T) * s."""
        if x.device.type == "cpu":
            # torch's int8 weight-only kernel reads Q as int8 (the formula below would first write W out in
            # x's dtype, four bytes a weight in fp32). On a CPU it is fast for bf16 activations: fp32 ones
            # are cast to bf16 for the product and back (bf16 keeps 8 bits of mantissa; Q has 7 and a sign).
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (N, in)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(torch.bfloat16))  # (N, out)
            return y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)  # torch.compile fuses the two

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of model, in place, by its Int8Linear (a tied LM head by an int8 copy of the
    weight it shares; the embedding keeps the original). Returns model, in eval mode."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return model.eval()
