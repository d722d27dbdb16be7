"""resume=: a run continues as it was configured, on the tokens it trained on."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from data.config import DataError, dataset_dir
from data.prepare import has_source, is_prepared, prepare
from data.shards import load_meta
from runtime.config import groups, parse_overrides, to_schema
from runtime.processes import Processes
from training import TrainError

# data.* keys a resume may change: where the prepared data lives, and how it is prepared; not which data
RESUMABLE_DATA_KEYS = ("data.root", "data.workers")

# Settings about this command rather than the run: a resumed run never takes them from its checkpoint.
PER_COMMAND = ("resume", "stop_step", "out_dir", "threads")


def resumed_config(cfg: Any, overrides: Sequence[str], saved: dict) -> Any:
    """With resume=..., the checkpoint's config, with this command line's key=value overrides on top.

    So `resume=RUN` alone continues the run as it was configured, and `resume=RUN max_steps=8000`
    extends it. Switching a config group (model=, data=, experiment=) would change what is trained,
    so it is refused. The overrides are read with Hydra's own parser; their values come from cfg,
    where Hydra has already typed them.
    """
    schema = type(cfg)
    given = OmegaConf.structured(cfg)
    resumed = OmegaConf.merge(OmegaConf.structured(schema), saved)
    for override in parse_overrides(overrides):
        key = override.key_or_group
        if key in groups("train"):
            raise TrainError(f"resume continues with the checkpoint's config; '{override.input_line}' switches a "
                             "config group. Override single keys instead (e.g. max_steps=8000)")
        if key.startswith("data.") and key not in RESUMABLE_DATA_KEYS:
            raise TrainError(f"resume continues on the data the run trained on; '{override.input_line}' would change "
                             "it. Train on other data in a new run (init_from= takes a Hugging Face folder's weights)")
        if not override.is_delete():
            OmegaConf.update(resumed, key, OmegaConf.select(given, key), merge=False)
    for key in PER_COMMAND:
        resumed[key] = given[key]
    return to_schema(resumed, schema)


def prepare_data(cfg: Any, procs: Processes, trained_on: Optional[dict] = None) -> tuple[Any, Path, dict]:
    """The run's data: (its DataConfig, the prepared folder, its meta.json). The first process on each
    machine prepares it (once); the others wait for its verdict. A Hub corpus streams for hours, longer
    than the others may wait: it is prepared beforehand. A corpus found by data.name alone records the
    tokenizer it was made with in the returned config.

    trained_on: a resumed run's data (its meta.json). The run continues on exactly those tokens: found
    under its data.name, or prepared again only where that folder is gone, and refused if they differ.
    """
    if procs.world_size > 1 and cfg.hf_dataset and not is_prepared(cfg):
        raise DataError(f"{cfg.hf_dataset} is not prepared yet, and preparing it takes hours, longer than the other "
                        "processes may wait: run `python -m data.prepare` with the same data settings first "
                        "(e.g. python -m data.prepare data=fineweb_edu)")
    data_dir = dataset_dir(cfg)
    if trained_on is None or not (data_dir / "meta.json").exists():
        procs.decide(lambda: prepare(cfg), on_each_machine=True)
    meta = load_meta(data_dir, cfg.tokenizer if has_source(cfg) else None)  # without a source: as prepared
    if trained_on is not None and "shards" in trained_on and same_tokens(trained_on) != same_tokens(meta):
        raise TrainError(f"{data_dir} no longer holds the tokens this run trained on: it was prepared again since "
                         f"(from {meta.get('source')}, or with other data settings). Prepare the run's corpus under "
                         "its own data.name for new runs; this run cannot continue on other data")
    if not has_source(cfg):  # found by data.name alone: its config says the tokenizer it was made with
        kind, source = meta.get("tokenizer"), meta.get("tokenizer_source")
        made_with = kind if kind in ("char", "gpt2") else f"hf:{source}" if kind == "hf" and source else None
        cfg = replace(cfg, tokenizer=made_with or cfg.tokenizer)
    return cfg, data_dir, meta


def same_tokens(meta: dict) -> tuple:
    """What identifies a prepared dataset's tokens: each shard's size and sha256, and the tokenizer
    (a re-preparation that gives the same tokens, e.g. after `touch`, keeps it)."""
    return tuple(json.dumps(meta.get(k), sort_keys=True) for k in ("shards", "tokenizer", "chars", "tokenizer_json"))
