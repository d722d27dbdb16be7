"""The GPT: a decoder-only transformer built from model/attention.py.

    tokens -> embedding -> n_layer x [x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm -> LM head

Pre-norm blocks, RMSNorm with a learnable scale, RoPE inside attention (no position embedding table),
a SwiGLU MLP, no biases anywhere, and an LM head that can share its weight with the token embedding.
Shape letters as in model/attention.py, plus V for the vocabulary size. This file is the architecture;
how the model writes text, one token at a time through the KV cache, is model/generate.py.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import CausalSelfAttention, KVCache, rope_tables


@dataclass
class GPTConfig:
    """The model's shape and options. The defaults are GPT-2 small's shape (12 layers, 12 heads, width 768,
    context 1024), with an untied head and no dropout, as nanoGPT's GPTConfig has them.

    train.py does not run these sizes: its model is a configs/model/ group, by default small.yaml (6 layers,
    6 heads, width 384, context 256, dropout 0.2), and only the keys a group's YAML leaves out come from
    here (e.g. no dropout for mini.yaml, the CPU recipe's). configs/model/gpt2.yaml is GPT-2 small with its
    head tied. A checkpoint holds its model's whole config: only a key added to ropegpt since it was written
    takes its default from here."""

    vocab_size: Optional[int] = None  # required by GPT; train.py takes it from the data's meta.json
    padded_vocab: Optional[int] = None  # rows of the embedding and LM head, >= vocab_size; None: vocab_size
    block_size: int = 1024  # the longest context: of training sequences, and of a KV cache by default
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: Optional[int] = None  # None: n_head (ordinary multi-head); 1: multi-query attention
    n_embd: int = 768
    mlp_hidden: Optional[int] = None  # None: 8/3 * n_embd rounded up to a multiple of 64 (`hidden`)
    rope_base: float = 10000.0
    rope_scaling: Optional[Dict[str, Any]] = None  # Llama 3.x's longer contexts: see rope_frequencies
    tie_weights: bool = False  # True: the LM head shares the token embedding's weight (GPT-2)
    dropout: float = 0.0  # in training: on the embeddings, the attention weights and both residual branches
    attn_dropout: Optional[float] = None  # on the attention weights alone; None: dropout
    emb_dropout: Optional[float] = None  # on the token embeddings alone; None: dropout
    causal: bool = True  # False only to show what the causal mask is for
    attn_impl: str = "sdpa"  # "sdpa" (fused kernel) or "explicit" (steps written out)
    norm_eps: float = 1e-6

    # Derived values are properties, never stored: the config (and a checkpoint's copy of it) holds
    # only what was chosen, so a schema built from this class never bakes in a default's consequences.

    @property
    def vocab_rows(self) -> int:
        """Rows of the embedding and the LM head: vocab_size, or more (`pad_vocab`)."""
        return self.vocab_size if self.padded_vocab is None else self.padded_vocab

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def attn_p(self) -> float:
        return self.dropout if self.attn_dropout is None else self.attn_dropout

    @property
    def emb_p(self) -> float:
        return self.dropout if self.emb_dropout is None else self.emb_dropout

    @property
    def hidden(self) -> int:
        """The MLP's hidden width. SwiGLU has three matrices instead of two; 8/3 C keeps its parameter
        count at the 8 C^2 of a classic 4C MLP (Shazeer 2020). Multiples of 64 suit the hardware."""
        return 64 * math.ceil(8 * self.n_embd / 3 / 64) if self.mlp_hidden is None else self.mlp_hidden

    def __post_init__(self):
        """Refuse a config that cannot build a model, naming each key: ValueError("key=value must ...")."""
        problems = [f"{key}={value} must be >= 1" for key, value in
                    [("vocab_size", self.vocab_size), ("padded_vocab", self.padded_vocab),
                     ("block_size", self.block_size), ("n_layer", self.n_layer), ("n_head", self.n_head),
                     ("n_kv_head", self.n_kv_head), ("n_embd", self.n_embd), ("mlp_hidden", self.mlp_hidden)]
                    if value is not None and value < 1]
        problems += [f"{key}={value} must be > 0" for key, value in
                     [("rope_base", self.rope_base), ("norm_eps", self.norm_eps)] if not value > 0]
        if problems:  # the divisibility checks below need positive sizes
            raise ValueError("; ".join(problems))
        if self.padded_vocab is not None and self.vocab_size is not None and self.padded_vocab < self.vocab_size:
            problems.append(f"padded_vocab={self.padded_vocab} must be >= vocab_size={self.vocab_size}")
        if self.n_embd % self.n_head:
            problems.append(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        elif (self.n_embd // self.n_head) % 2:
            problems.append(f"n_head={self.n_head} gives a head width n_embd/n_head={self.n_embd // self.n_head}, "
                            "which must be even for RoPE")
        if self.n_head % self.kv_heads:
            problems.append(f"n_head={self.n_head} must be divisible by n_kv_head={self.kv_heads}")
        problems += rope_scaling_problems(self.rope_scaling)
        if self.attn_impl not in ("sdpa", "explicit"):
            problems.append(f"attn_impl={self.attn_impl!r} must be 'sdpa' or 'explicit'")
        for key in ("dropout", "attn_dropout", "emb_dropout"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                problems.append(f"{key}={value} must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))


def pad_vocab(vocab_size: int) -> Optional[int]:
    """The padded_vocab train.py gives a new model: a vocabulary of 8,192 tokens or more gets its embedding
    and LM head rounded up to a multiple of 64 rows (GPT-2's 50,257 -> 50,304, as nanoGPT does), the shape
    GPU matmul kernels run fastest; None (no padding) below that, where the head is a small part of the
    work, and for a multiple of 64. The extra rows are never a target, never in the softmax and never
    sampled: `GPT.forward` cuts the logits to vocab_size, and an export drops the rows."""
    return 64 * math.ceil(vocab_size / 64) if vocab_size >= 8192 and vocab_size % 64 else None


ROPE_SCALING_KEYS = {"linear": ("factor",),
                     "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def rope_scaling_problems(scaling: Optional[dict]) -> list[str]:
    """What is wrong with a rope_scaling setting (none: []): its rope_type and its keys, each a number > 0."""
    if scaling is None:
        return []
    kind = scaling.get("rope_type")
    if kind not in ROPE_SCALING_KEYS:
        return [f"rope_scaling.rope_type={kind!r} must be one of {', '.join(ROPE_SCALING_KEYS)}"]
    problems = [f"rope_scaling.{key}={scaling.get(key)!r} must be a number > 0" for key in ROPE_SCALING_KEYS[kind]
                if isinstance(scaling.get(key), bool) or not isinstance(scaling.get(key), (int, float))
                or not scaling[key] > 0]
    if not problems and kind == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        problems.append("rope_scaling.high_freq_factor must be larger than low_freq_factor")
    return problems


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g (Zhang & Sennrich 2019), computed in fp32 and cast back.

    F.rms_norm is exactly that formula in one fused op (fewer small kernels per decoded token).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).type_as(x)


class SwiGLU(nn.Module):
    """MLP(x) = W_down (silu(x W_gate) * (x W_up))  (Shazeer 2020)."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(n_embd, hidden, bias=False)
        self.w_up = nn.Linear(n_embd, hidden, bias=False)
        self.w_down = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.kv_heads,
                                        causal=config.causal, impl=config.attn_impl, dropout=config.attn_p)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config.n_embd, config.hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: Optional[KVCache] = None, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); cos, sin (T, D): RoPE tables of x's positions (pos: with a static cache)."""
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache, pos))  # (B, T, C)
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("GPTConfig.vocab_size is not set: it is the tokenizer's vocabulary size")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_rows, config.n_embd)
        self.emb_dropout = nn.Dropout(config.emb_p)  # no weights: a Llama export is unaffected
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_rows, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    @classmethod
    def from_state(cls, config: dict, weights: dict) -> "GPT":
        """The model a checkpoint holds: its GPTConfig as a dict, and its state_dict."""
        model = cls(GPTConfig(**config))
        model.load_state_dict(weights)
        return model

    def reset_parameters(self) -> None:
        """GPT-2 initialisation (Radford et al. 2019, as in nanoGPT), with a zero LM head when untied.

        Every matrix and the embedding ~ N(0, 0.02^2). The two projections that write into the residual
        stream (attention's W_O and the MLP's W_down) get std 0.02 / sqrt(2 n_layer): the stream sums
        2 n_layer such branches, so its variance at the output stays the same whatever the depth.
        RMSNorm scales start at 1. An untied LM head starts at zero (as in modded-nanogpt and nanochat):
        the first prediction is exactly uniform, so the initial loss is ln(V) at any width. A tied head
        is the embedding itself; it then favours repeating the input token by a logit of about
        0.02 * n_embd, so its initial loss is close to ln(V) only for narrow models.
        """
        std, resid_std = 0.02, 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("attn.wo.weight", "mlp.w_down.weight")):
                nn.init.normal_(p, mean=0.0, std=resid_std)
            elif name == "lm_head.weight":  # present only when untied
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                kv_caches: Optional[list[KVCache]] = None, pos: Optional[torch.Tensor] = None):
        """idx (B, T) token ids -> logits (B, T, V) and, given targets (B, T), the mean cross-entropy.

        With kv_caches (one per layer, from `new_kv_caches`), idx holds the T tokens that follow the P
        already cached, and the caches grow by T. pos (T,), a tensor: the tokens' positions instead, for
        a compiled decode step with static shapes (`KVCache.write`). Targets equal to -1 are ignored.
        """
        B, T = idx.shape
        P = 0 if kv_caches is None or pos is not None else kv_caches[0].length
        if pos is None and P + T > self.config.block_size:
            raise ValueError(f"{P} cached + {T} new tokens exceed block_size={self.config.block_size}")
        # RoPE tables for positions P..P+T-1 (or pos), computed once here and shared by every layer
        positions = torch.arange(P, P + T, device=idx.device) if pos is None else pos  # (T,)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_base, self.config.rope_scaling)
        x = self.emb_dropout(self.tok_emb(idx))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, None if kv_caches is None else kv_caches[i], pos)  # (B, T, C)
        logits = self.lm_head(self.norm(x))[..., : self.config.vocab_size]  # (B, T, V): a padded head's extra rows cut
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights for idx (B, T), no cache: (n_layer, B, H, T, T).

        For pictures and tests: it recomputes each layer's weights next to a normal forward pass, which
        itself (on the SDPA path) never materialises them. Sampling does not call it.
        """
        B, T = idx.shape
        cos, sin = rope_tables(torch.arange(T, device=idx.device), self.config.head_dim, self.config.rope_base,
                               self.config.rope_scaling)
        x = self.tok_emb(idx)  # (B, T, C)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.weights(block.attn_norm(x), cos, sin))  # (B, H, T, T)
            x = block(x, cos, sin)  # (B, T, C)
        return torch.stack(maps)  # (n_layer, B, H, T, T)

    def attention_steps(self, idx: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Each layer's `CausalSelfAttention.steps` for idx (B, T), no cache: scores, weights, values."""
        B, T = idx.shape
        cos, sin = rope_tables(torch.arange(T, device=idx.device), self.config.head_dim, self.config.rope_base,
                               self.config.rope_scaling)
        x, layers = self.tok_emb(idx), []  # (B, T, C)
        for block in self.blocks:
            layers.append(block.attn.steps(block.attn_norm(x), cos, sin))
            x = block(x, cos, sin)  # (B, T, C)
        return layers

    def new_kv_caches(self, batch_size: int, max_len: Optional[int] = None,
                      dtype: Optional[torch.dtype] = None) -> list[KVCache]:
        """One empty KV cache per layer, on the model's device.

        dtype: that of the keys it will hold; by default the autocast dtype when autocast is on for the
        model's device (call this inside the autocast context), else the weights' dtype.
        """
        max_len = self.config.block_size if max_len is None else max_len
        device = self.tok_emb.weight.device  # the embedding's dtype is the activations' (a head may be int8)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.tok_emb.weight.dtype
        return [b.attn.new_cache(batch_size, max_len, device, dtype) for b in self.blocks]

    # ------------------------------------------------------------------------------------------
    # Accounting
    # ------------------------------------------------------------------------------------------

    def num_params(self) -> int:
        """All parameters, a tied embedding/LM-head weight counted once."""
        return sum(p.numel() for p in self.parameters())

    def attention_params_per_layer(self) -> int:
        """W_Q, W_K, W_V and W_O of one layer: (2 C + 2 Hkv D) C."""
        return sum(p.numel() for p in self.blocks[0].attn.parameters())

    def matmul_params(self) -> int:
        """Parameters used in a matmul for every token: all Linear weights, the LM head included.

        The embedding lookup is no matmul; when tied, its weight is counted once, as the LM head.
        """
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs (forward + backward) per token for sequences of seq_len tokens.

        6 N for the weight matmuls (2 forward, 4 backward per parameter, Kaplan et al. 2020) plus
        12 n_layer H D seq_len for q K^T and A V, counted over the full T x T square as in the PaLM
        paper's MFU and nanoGPT, although the causal mask makes half of it zeros.
        """
        c = self.config
        return 6 * self.matmul_params() + 12 * c.n_layer * c.n_head * c.head_dim * seq_len
