"""Benchmarks, each a module: `python -m bench.NAME --help` says what it measures and how to run it.

They take model shapes from configs/ (`model_config`), never typed in again here.
"""

from dataclasses import replace

from omegaconf import OmegaConf

from model.gpt import GPTConfig
from runtime.config import CONFIG_DIR


def model_config(group: str = "small", vocab_size: int = 65, **changes) -> GPTConfig:
    """The model of configs/model/<group>.yaml (`small`: the baby GPT), with a vocabulary and any changes."""
    cfg = OmegaConf.merge(OmegaConf.structured(GPTConfig), OmegaConf.load(CONFIG_DIR / "model" / f"{group}.yaml"))
    return replace(OmegaConf.to_object(cfg), vocab_size=vocab_size, **changes)
