"""ropegpt's GPT in Hugging Face's Llama format, both ways: the config, the weights, the files.

model/gpt.py builds exactly the network of transformers' `LlamaForCausalLM`: pre-norm RMSNorm blocks,
RoPE that rotates channel i with channel i + D/2 (`rotate_half`), grouped-query attention, a SwiGLU MLP,
no biases. The two name the same tensors differently, and nothing else differs: not even the order of
the rows of W_Q and W_K, since both rotate the same channel pairs. So a Llama folder (config.json +
*.safetensors) becomes a GPT by renaming, and a GPT becomes a Llama folder the same way.

RoPE scaling of types "llama3" (Llama 3.1, 3.2, 3.3) and "linear" is read and written back
(model/attention.py's rope_frequencies). What Llama-family checkpoints may hold and ropegpt does not
implement (other RoPE scalings, biases, a head width other than hidden_size / num_attention_heads, another
activation, other model types) is refused with the reason and the models it comes from, never guessed.
"""

import json
from pathlib import Path
from typing import Optional

import torch

from model.gpt import ROPE_SCALING_KEYS, GPT, GPTConfig

# ropegpt's parameter name -> Llama's: within each layer (blocks.i. -> model.layers.i.), and outside the layers.
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight",
    "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
}
OUTER_NAMES = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
               "lm_head.weight": "lm_head.weight"}
CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"


class LlamaFormatError(ValueError):
    """A Hugging Face folder or config that ropegpt cannot read (or a GPT it cannot write as Llama)."""


def llama_name(name: str) -> str:
    """ropegpt's parameter name -> Llama's: blocks.3.attn.wq.weight -> model.layers.3.self_attn.q_proj.weight."""
    if name in OUTER_NAMES:
        return OUTER_NAMES[name]
    _, layer, rest = name.split(".", 2)  # "blocks", "3", "attn.wq.weight"
    return f"model.layers.{layer}.{LAYER_NAMES[rest]}"


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def llama_config(config: GPTConfig, bos_token_id: Optional[int] = None,
                 eos_token_id: Optional[int | list[int]] = None) -> dict:
    """config.json of a LlamaForCausalLM with the same network as a GPT of this config."""
    if not config.causal:
        raise LlamaFormatError("this model was trained with causal=false (attention both ways), which a Llama "
                               "model cannot express; only causal models can be exported")
    scaling = config.rope_scaling
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden,  # the MLP's real width, however it was chosen
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,  # read by transformers 4.x
        "rope_scaling": dict(scaling) if scaling else None,  # 4.x, and llama.cpp
        "rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": config.rope_base},  # 5.x
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
        "torch_dtype": "float32",  # the weights' dtype, under its transformers 4.x name
        "dtype": "float32",  # and its 5.x name
    }


# What other model types add to Llama's network, so that a refusal says what is missing.
OTHER_MODELS = {
    "mistral": " (Mistral: sliding-window attention)",
    "mixtral": " (Mixtral: a mixture of experts)",
    "qwen2": " (Qwen2, Qwen2.5: biases in W_Q, W_K, W_V)",
    "qwen3": " (Qwen3: RMSNorm on queries and keys, a head width of its own)",
    "gemma": " (Gemma: GeGLU, a head width of its own, a scaled embedding)",
    "gemma2": " (Gemma 2: sliding windows, logit soft-capping)",
    "gemma3": " (Gemma 3: sliding windows, RMSNorm on queries and keys)",
    "phi3": " (Phi-3: fused QKV and 'longrope' RoPE scaling)",
    "gpt2": " (GPT-2: learned positions, LayerNorm, biases, GELU)",
}
# RoPE scalings ropegpt does not implement, and where they come from.
OTHER_SCALINGS = {
    "yarn": "YaRN, as in long-context Qwen2.5 and DeepSeek models",
    "dynamic": "dynamic NTK, transformers' option for stretching any model",
    "longrope": "LongRoPE, as in Phi-3 and Phi-3.5",
    "su": "LongRoPE under its older name, as in Phi-3",
}


def rope_scaling(rope: dict) -> Optional[dict] | str:
    """GPTConfig.rope_scaling of a config's RoPE entries (rope_scaling, rope_parameters): None for plain
    RoPE, a dict for "linear" and "llama3", or the one-line reason another type is refused."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in (None, "default"):
        return None
    if kind not in ROPE_SCALING_KEYS:
        where = f" ({OTHER_SCALINGS[kind]})" if kind in OTHER_SCALINGS else ""
        return f"RoPE scaling {kind!r}{where}: ropegpt implements 'llama3' (Llama 3.1-3.3) and 'linear' only"
    return {"rope_type": kind, **{k: rope.get(k) for k in ROPE_SCALING_KEYS[kind]}}


def gpt_config(llama: dict, block_size: Optional[int] = None, **ropegpt_settings) -> GPTConfig:
    """The GPTConfig of a Llama config.json, or LlamaFormatError listing everything ropegpt lacks.

    block_size: a context shorter than the model's max_position_embeddings (None: that one).
    ropegpt_settings: GPTConfig keys that are not part of the network's shape (dropout, attn_impl).
    """
    if not isinstance(llama, dict):
        raise LlamaFormatError("config.json does not hold a JSON object")
    get = llama.get
    problems = []
    if get("model_type") != "llama":
        problems.append(f"model_type={get('model_type')!r}" + OTHER_MODELS.get(get("model_type"), "") +
                        ": ropegpt reads Llama-family folders (model_type 'llama': Llama 2 and 3.x, SmolLM2, "
                        "TinyLlama)")
    rope = {**(get("rope_scaling") or {}), **(get("rope_parameters") or {})}  # transformers 4.x, 5.x
    theta, scaling = rope.get("rope_theta", get("rope_theta", 10000.0)), rope_scaling(rope)
    if isinstance(scaling, str):  # a type ropegpt lacks; a bad value of a known type is GPTConfig's to refuse
        problems.append(scaling)
        scaling = None
    hidden, heads, head_dim = get("hidden_size"), get("num_attention_heads"), get("head_dim")
    if head_dim is not None and hidden and heads and head_dim * heads != hidden:
        problems.append(f"head_dim={head_dim} with {heads} heads of width {hidden}: ropegpt's heads are "
                        "hidden_size / num_attention_heads wide")
    for key in ("attention_bias", "mlp_bias"):
        if get(key):
            problems.append(f"{key}=true: ropegpt's layers have no biases")
    if get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={get('hidden_act')!r}: ropegpt's MLP is SwiGLU with SiLU")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads", "max_position_embeddings") if get(k) is None]
    if missing:
        problems.append(f"config.json lacks {', '.join(missing)}")
    if problems:
        raise LlamaFormatError("; ".join(problems))
    block_size = block_size or get("max_position_embeddings")
    if block_size > get("max_position_embeddings"):
        raise LlamaFormatError(f"block_size={block_size} is longer than the model's context of "
                               f"{get('max_position_embeddings')} (max_position_embeddings)")
    try:
        return GPTConfig(vocab_size=get("vocab_size"), block_size=block_size, n_layer=get("num_hidden_layers"),
                         n_head=heads, n_kv_head=get("num_key_value_heads") or heads, n_embd=hidden,
                         mlp_hidden=get("intermediate_size"), rope_base=float(theta), rope_scaling=scaling,
                         tie_weights=bool(get("tie_word_embeddings", False)),
                         norm_eps=float(get("rms_norm_eps", 1e-6)), **ropegpt_settings)
    except ValueError as e:
        raise LlamaFormatError(f"config.json describes a model ropegpt cannot build: {e}") from None


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under Llama's names, contiguous, on the CPU; a tied head stored once (as the
    embedding, which is how transformers writes tied models); a padded vocabulary's extra rows dropped."""
    V = model.config.vocab_size
    return {llama_name(name): (p[:V] if name in ("tok_emb.weight", "lm_head.weight") else p).detach().cpu().contiguous()
            for name, p in model.named_parameters()}


def load_llama_state_dict(model: GPT, weights: dict[str, torch.Tensor]) -> None:
    """Copy Llama-named weights into model, refusing missing, extra or misshapen tensors by name."""
    ours = dict(model.named_parameters())  # a tied head appears once, as tok_emb.weight
    expected = {llama_name(name): name for name in ours}
    ignored = set()
    embedding = weights.get(OUTER_NAMES["tok_emb.weight"])
    if model.config.tie_weights and "lm_head.weight" in weights and embedding is not None:  # stored twice
        if not torch.equal(weights["lm_head.weight"], embedding):
            raise LlamaFormatError("tie_word_embeddings=true, but lm_head.weight differs from the embedding")
        ignored.add("lm_head.weight")
    extra = sorted(k for k in weights
                   if k not in expected and k not in ignored and not k.endswith("rotary_emb.inv_freq"))
    missing = sorted(k for k in expected if k not in weights)
    if extra or missing:
        found = ([f"missing {', '.join(missing[:4])}"] if missing else []) + \
            ([f"unexpected {', '.join(extra[:4])}"] if extra else [])
        raise LlamaFormatError(f"the weights do not match a Llama model of this config: {'; '.join(found)}")
    with torch.no_grad():
        for llama_key, name in expected.items():
            w = weights[llama_key]
            if w.shape != ours[name].shape:
                raise LlamaFormatError(f"{llama_key} has shape {tuple(w.shape)}, expected {tuple(ours[name].shape)}")
            ours[name].copy_(w)


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def is_llama_folder(path: str | Path) -> bool:
    """A folder in Hugging Face's layout: a config.json beside the weights."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LlamaFormatError(f"cannot read {folder / CONFIG_FILE}: {e}") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards that model.safetensors.index.json lists."""
    from safetensors.torch import load_file

    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif (folder / INDEX_FILE).is_file():
        try:
            index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
            files = [folder / name for name in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LlamaFormatError(f"{folder / INDEX_FILE} is not a usable index of shards ({type(e).__name__}: "
                                   f"{e})") from None
    elif any(folder.glob("*.bin")):
        raise LlamaFormatError(f"{folder} holds PyTorch .bin weights; ropegpt reads safetensors. Convert once with "
                               "transformers: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR)")
    else:
        raise LlamaFormatError(f"{folder} has no {WEIGHTS_FILE} nor {INDEX_FILE}")
    weights = {}
    for file in files:
        try:
            weights.update(load_file(file))
        except Exception as e:  # a missing shard, a truncated download
            raise LlamaFormatError(f"cannot read {file}: {type(e).__name__}: {str(e)[:200]}") from None
    return weights


def load_llama(folder: str | Path, **ropegpt_settings) -> GPT:
    """A GPT with the weights of a Hugging Face Llama folder, in fp32 on the CPU."""
    folder = Path(folder).expanduser()
    config = gpt_config(read_config(folder), **ropegpt_settings)
    model = GPT(config)
    load_llama_state_dict(model, {k: v.float() for k, v in read_weights(folder).items()})
    return model


def save_llama(model: GPT, folder: Path, bos_token_id: Optional[int] = None,
               eos_token_id: Optional[int | list[int]] = None) -> None:
    """config.json, generation_config.json and model.safetensors of the model into an existing folder."""
    from safetensors.torch import save_file

    config = llama_config(model.config, bos_token_id, eos_token_id)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": None}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    save_file(llama_state_dict(model), folder / WEIGHTS_FILE, metadata={"format": "pt"})

