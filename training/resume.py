"""resume=: a run continues as it was configured (the checkpoint's config, with this command's overrides)."""

from typing import Any, Sequence

from omegaconf import OmegaConf

from runtime.config import groups, parse_overrides, to_schema
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
