"""ropegpt's model: single-device PyTorch code that imports nothing but torch."""

from model.attention import CausalSelfAttention, KVCache, apply_rope, attention, causal_mask, rope_tables
from model.gpt import GPT, GPTConfig, sample_next_token

__all__ = ["CausalSelfAttention", "KVCache", "apply_rope", "attention", "causal_mask", "rope_tables",
           "GPT", "GPTConfig", "sample_next_token"]
