"""Dataclass schemas for the Hydra configs: a wrong type or an unknown key fails when composing.

The YAML files under configs/ give values; these classes give the keys and their types. The model's
schema is model.gpt.GPTConfig itself; its vocab_size is never configured: it comes from the data.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from data.config import DataConfig
from model.gpt import GPTConfig


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    min_lr: float = 1e-4  # the cosine decay ends here at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only, not on norm scales
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class WandbConfig:
    enabled: bool = False  # wandb.enabled=true turns it on; WANDB_MODE=offline keeps it local
    project: str = "ropegpt"
    name: Optional[str] = None  # the run's name; None: the run directory's name


@dataclass
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)  # vocab_size comes from the data, not from here
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    max_steps: int = 5000  # optimizer steps; the learning-rate schedule ends here
    stop_step: Optional[int] = None  # stop (with a checkpoint) at this step, to continue later with resume=
    batch_size: int = 64  # sequences per optimizer step, across all processes and micro-batches
    micro_batch_size: Optional[int] = None  # sequences per forward pass; None: batch_size / processes
    eval_interval: int = 250  # evaluate, and save the checkpoints, every this many steps (and at the end)
    eval_batches: int = 20  # fixed batches per split for each evaluation
    log_interval: int = 10
    device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu
    dtype: str = "auto"  # auto (bf16 on CUDA where supported, else fp16; fp32 elsewhere), bf16, fp16, fp32
    compile: bool = False  # torch.compile the model (on CUDA; ignored elsewhere)
    peak_flops: Optional[float] = None  # FLOP/s that MFU is measured against; None: known GPUs only
    seed: int = 1337
    resume: Optional[str] = None  # a run directory or a checkpoint file to continue from
    suggest_cpu_recipe: bool = True  # on a machine without CUDA, point to the CPU recipe
    progress: bool = True  # a progress bar when the output is a terminal


@dataclass
class SampleConfig:
    ckpt: Optional[str] = None  # a run directory (its best.pt, else last.pt) or a .pt file; None: the newest run
    runs_dir: str = "outputs"  # where train.py's run directories are, to find the newest one
    prompt: str = ""  # the text to continue, or FILE:path; "" starts from the start token (see README)
    num_samples: int = 1
    max_new_tokens: int = 500
    temperature: float = 0.8  # 0 is greedy
    top_k: Optional[int] = 200
    top_p: Optional[float] = None
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    stream: bool = True  # print tokens as they come (with num_samples=1)
    stop: Any = None  # a string or a list of strings: a sample ends before the first one
    use_cache: bool = True
    attention_plot: Optional[str] = None  # a .png path: heatmaps of the attention weights of sample 0
    attention_layer: Optional[int] = None  # only this layer in the picture; None: every layer
    attention_tokens: int = 48  # the picture shows the first this many tokens (prompt, then generated)


@dataclass
class PrepareConfig:
    data: DataConfig = field(default_factory=DataConfig)


def register_configs() -> None:
    """Make the schemas known to Hydra; the primary YAML files name them first in their defaults."""
    cs = ConfigStore.instance()
    cs.store(name="prepare_schema", node=PrepareConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
