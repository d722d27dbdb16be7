"""Dataclass schemas for the Hydra configs: a wrong type or an unknown key fails when composing."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from data.config import DataConfig


@dataclass
class PrepareConfig:
    data: DataConfig = field(default_factory=DataConfig)


def register_configs() -> None:
    """Make the schemas known to Hydra; the primary YAML files name them first in their defaults."""
    cs = ConfigStore.instance()
    cs.store(name="prepare_schema", node=PrepareConfig)
