"""Hydra, once: every command composes its config from configs/ against the schema it owns.

A command (train.py, sample.py, `python -m data.prepare`) defines its settings as a dataclass at its
top and calls `run_command(name, Schema, task)`: Hydra reads the command line (so `--help`,
`--cfg job` and tab completion work), a wrong type or an unknown key fails at compose time, and the
task gets an instance of the schema plus the command line's overrides. Tests and benchmarks build the
same config with `compose`. Hydra writes nothing: each configs/NAME.yaml sets `hydra.run.dir: .`, no
`.hydra` folder and no logging set-up; a command that writes files chooses where itself.
"""

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from runtime.errors import UserError, exit_on_user_error

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(UserError):
    """A setting that composes but cannot be used. The message names the key."""


def is_group(key: str) -> bool:
    """Whether an override's key names a config group (a folder of configs/: model, data, experiment)."""
    return "." not in key and (CONFIG_DIR / key).is_dir()


def parse_overrides(overrides: Sequence[str]) -> list:
    """The command line's key=value list as Hydra reads it (hydra.core.override_parser Override objects)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def register_schema(name: str, schema: type) -> None:
    """configs/NAME.yaml lists `NAME_schema` first in its defaults: the keys and types come from here."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=f"{name}_schema", node=schema)


def check_keys(node: Any, schema: type, prefix: str = "") -> None:
    """Refuse keys the schema lacks: Hydra lets `+key=value` add them, and they would do nothing."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            raise ConfigError(f"unknown config key {prefix}{key}: the command's `--cfg job` lists its keys")
        nested = fields[key].default_factory
        if dataclasses.is_dataclass(nested):
            check_keys(node[key], nested, f"{prefix}{key}.")


def to_schema(cfg: DictConfig, schema: type) -> Any:
    """The composed config as an instance of its schema (nested dataclasses all the way down).

    A schema checks its values in __post_init__ and raises ValueError naming the key: that is a
    ConfigError here, so the command exits 2 with that one line.
    """
    check_keys(cfg, schema)
    try:
        return OmegaConf.to_object(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def compose(name: str, schema: type, overrides: Sequence[str] = ()) -> Any:
    """The settings `python NAME.py *overrides` would run with, as an instance of schema."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema(name, schema)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return to_schema(hydra_compose(config_name=name, overrides=list(overrides)), schema)


def run_command(name: str, schema: type, task: Callable[[Any, list[str]], Any]) -> None:
    """The entry point of a command: compose configs/NAME.yaml with the command line, then
    task(settings, overrides), where overrides are the command line's key=value items (hydra.* ones
    included). A UserError anywhere becomes one line on stderr and exit code 2."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_schema(name, schema)

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=name)
    def hydra_task(cfg: DictConfig) -> None:
        with exit_on_user_error():
            overrides = HydraConfig.get().overrides
            task(to_schema(cfg, schema), [*overrides.task, *overrides.hydra])

    hydra_task()
