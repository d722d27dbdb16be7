"""init_from=FOLDER: fine-tune a Hugging Face Llama folder's model (its architecture, tokenizer and weights)."""

import json
from pathlib import Path
from typing import Any, Sequence

from data.tokenizers import HFTokenizer
from model.gpt import GPT, GPTConfig
from model.llama import LlamaFormatError, gpt_config, is_llama_folder, load_llama_state_dict, read_config, read_weights
from runtime.config import parse_overrides
from training import TrainError

# model.* keys that apply with init_from; the folder's config.json sets the others
FINE_TUNING_KEYS = ("block_size", "dropout", "attn_dropout", "emb_dropout", "attn_impl")


def imported_model(cfg: Any, overrides: Sequence[str]) -> GPTConfig:
    """The folder's architecture, checked before any data is prepared.

    Of the model settings only model.block_size (a shorter training context; by default the folder's),
    model.dropout (by default 0, as fine-tuning usually is), model.attn_dropout, model.emb_dropout and
    model.attn_impl apply, when given on the command line; any other model setting there is refused
    rather than silently ignored.
    """
    folder = Path(cfg.init_from).expanduser()
    if not is_llama_folder(folder):
        raise TrainError(f"init_from={cfg.init_from}: not a Hugging Face model folder (no config.json there); "
                         "to continue a run of train.py, use resume=")
    if not cfg.data.tokenizer.startswith("hf:"):
        raise TrainError(f"init_from={cfg.init_from} reads tokens of its own tokenizer: prepare your text with it, "
                         f"e.g. data=text data.path=FILE data.tokenizer=hf:{cfg.init_from}")
    given = {o.key_or_group for o in parse_overrides(overrides)}
    ignored = sorted(k for k in given
                     if k.split(".")[0] == "model" and k.removeprefix("model.") not in FINE_TUNING_KEYS)
    if ignored:
        raise TrainError(f"init_from={cfg.init_from} takes the model's shape from its config.json: drop "
                         f"{', '.join(ignored)} (model.{', model.'.join(FINE_TUNING_KEYS)} apply)")
    chosen = {"dropout": 0.0, **{k: getattr(cfg.model, k) for k in FINE_TUNING_KEYS if f"model.{k}" in given}}
    try:
        return gpt_config(read_config(folder), **chosen)
    except LlamaFormatError as e:
        raise TrainError(f"init_from={cfg.init_from}: {e}") from None


def check_tokenizer(cfg: Any, meta: dict) -> None:
    """The prepared data's tokens must be the init_from folder's, and fit its vocabulary."""
    theirs = HFTokenizer.from_folder(cfg.init_from)
    if meta.get("tokenizer") != "hf" or json.loads(meta["tokenizer_json"]) != json.loads(theirs.tokenizer_json):
        raise TrainError(f"init_from={cfg.init_from} reads tokens of its own tokenizer, but the data {cfg.data.name} "
                         f"was prepared with another ({meta.get('tokenizer')}): prepare it with the folder's, "
                         f"e.g. data=text data.path=FILE data.tokenizer=hf:{cfg.init_from} data.name=NEW_NAME")
    if cfg.model.vocab_size < meta["vocab_size"]:
        raise TrainError(f"init_from={cfg.init_from}: its vocabulary of {cfg.model.vocab_size} is smaller than the "
                         f"tokenizer's {meta['vocab_size']}")


def load_weights(model: GPT, cfg: Any) -> None:
    """The folder's weights into model (built with its architecture)."""
    try:
        load_llama_state_dict(model, read_weights(Path(cfg.init_from).expanduser()))
    except LlamaFormatError as e:
        raise TrainError(f"init_from={cfg.init_from}: {e}") from None
