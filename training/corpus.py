"""The run's corpus: prepared once per machine before training, and on resume the very tokens the run
trained on."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

from data.config import DataConfig, DataError, dataset_dir
from data.prepare import has_source, is_prepared, prepare
from data.shards import load_meta
from runtime.processes import Processes
from training import TrainError


def prepare_data(cfg: DataConfig, procs: Processes, trained_on: Optional[dict] = None) -> tuple[DataConfig, Path, dict]:
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
        made_with = kind if kind in ("char", "gpt2", "bpe") else f"hf:{source}" if kind == "hf" and source else None
        cfg = replace(cfg, tokenizer=made_with or cfg.tokenizer,
                      vocab_size=meta.get("vocab_size") if made_with == "bpe" else None)
    return cfg, data_dir, meta


def same_tokens(meta: dict) -> tuple:
    """What identifies a prepared dataset's tokens: each shard's size and sha256, and the tokenizer
    (a re-preparation that gives the same tokens, e.g. after `touch`, keeps it)."""
    return tuple(json.dumps(meta.get(k), sort_keys=True) for k in ("shards", "tokenizer", "chars", "tokenizer_json"))
