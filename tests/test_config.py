"""runtime.config on a toy command of its own: a command line becomes a schema instance through Hydra's compose
API, and every kind of bad argument is one ConfigError that names it. The toy's configs/ is written here, so
these tests hold whatever train.py and sample.py hold."""

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from runtime.config import FREE_TEXT, ConfigError, compose, require, run_command, to_schema


@dataclasses.dataclass
class Inner:
    width: int = 4  # how wide

    def __post_init__(self):
        require([(self.width >= 1, f"width={self.width} must be >= 1")])


@dataclasses.dataclass
class Toy:
    inner: Inner = dataclasses.field(default_factory=Inner)
    steps: int = 1  # how many
    text: str = dataclasses.field(default="", metadata=FREE_TEXT)


@pytest.fixture
def toy_configs(tmp_path, monkeypatch) -> Path:
    """configs/toy.yaml with a group `inner` (small by default, or big) and an optional group `extra`."""
    configs = tmp_path / "configs"
    (configs / "inner").mkdir(parents=True)
    (configs / "extra").mkdir()
    (configs / "toy.yaml").write_text("defaults:\n  - toy_schema\n  - inner: small\n  - _self_\n  - extra: null\n")
    (configs / "inner" / "small.yaml").write_text("width: 8\n")
    (configs / "inner" / "big.yaml").write_text("width: 64\n")
    (configs / "extra" / "more.yaml").write_text("# @package _global_\nsteps: 5\n")
    monkeypatch.setattr("runtime.config.CONFIG_DIR", configs)
    monkeypatch.chdir(tmp_path)
    return configs


def test_a_command_line_becomes_the_schema_instance_through_the_yaml_and_its_groups(toy_configs):
    assert compose("toy", Toy, []) == Toy(Inner(8), 1)  # the default group's YAML over the schema
    assert compose("toy", Toy, ["steps=3", "inner=big"]) == Toy(Inner(64), 3)
    assert compose("toy", Toy, ["extra=more", "inner.width=2"]) == Toy(Inner(2), 5)
    assert compose("toy", Toy, ["~inner"]) == Toy(Inner(4), 1)  # without the group: the schema's default


def test_hydra_writes_no_files(toy_configs):
    compose("toy", Toy, ["steps=2"])
    assert sorted(p.name for p in toy_configs.parent.iterdir()) == ["configs"]


def test_free_text_is_taken_verbatim(toy_configs):
    text = "a=b, [c] 'd' \"e\" ${f} \\${g} \\ h\\"
    assert compose("toy", Toy, [f"text={text}"]).text == text


BAD = [  # (argument, what the one line says)
    ("stpes=3", "unknown setting stpes: did you mean steps?"),
    ("width=3", "unknown setting width: did you mean inner.width?"),
    ("+inner.widht=2", "unknown setting inner.widht: did you mean inner.width?"),  # Hydra would add it
    ("inner=huge", "inner=huge: there is no configs/inner/huge.yaml; choose one of big, small"),
    ("extra=null", "extra=null: to run without one, leave extra= out or write ~extra"),
    ("hydra.job.name=x", "hydra.job.name=x: ropegpt sets no Hydra options"),
    ("steps", "cannot read the argument 'steps': write key=value"),
    ("=5", "cannot read the argument '=5': write key=value"),
    ("steps=[1,2", "cannot read the argument 'steps=[1,2'"),
    ("steps=abc", "steps=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("inner.width=0", "inner.width=0 must be >= 1"),  # __post_init__'s message, with the group prefixed
]


@pytest.mark.parametrize("arg,message", BAD, ids=[a for a, _ in BAD])
def test_each_bad_argument_is_one_config_error_that_names_it(toy_configs, arg, message):
    with pytest.raises(ConfigError) as e:
        compose("toy", Toy, [arg])
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_to_schema_refuses_a_key_the_schema_lacks_with_the_closest_one():
    cfg = OmegaConf.structured(Toy)
    with open_dict(cfg.inner):  # as Hydra's `+inner.widht=3` does
        cfg.inner.widht = 3
    with pytest.raises(ConfigError, match="unknown setting inner.widht: did you mean inner.width"):
        to_schema(cfg, Toy)


def test_help_and_cfg_and_a_broken_config_through_run_command(toy_configs, capsys):
    ran = []
    run_command("toy", Toy, lambda cfg, args: ran.append((cfg, args)), ["steps=2"])
    assert ran == [(Toy(Inner(8), 2), ["steps=2"])]
    run_command("toy", Toy, ran.append, ["--help"])
    out = capsys.readouterr().out
    assert "inner.width=8  # how wide" in out and "steps=1  # how many" in out
    assert "inner: big, small (default: small)" in out and "extra: more (default: none)" in out
    run_command("toy", Toy, ran.append, ["--cfg", "inner=big"])
    assert OmegaConf.create(capsys.readouterr().out) == {"inner": {"width": 64}, "steps": 1, "text": ""}
    (toy_configs / "toy.yaml").write_text("defaults:\n  - toy_schema\n  - inner: huge\n  - _self_\n")
    for args in (["--help"], ["--cfg"], []):
        with pytest.raises(SystemExit) as e:
            run_command("toy", Toy, ran.append, args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert len(ran) == 1
