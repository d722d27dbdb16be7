"""Hydra, once: every command composes its settings from configs/ against the schema it owns.

A command (train.py, sample.py, `python -m data.prepare`) defines its settings as a dataclass at its
top and calls `run_command(name, Schema, task)`. The command line's `key=value` items are read with
Hydra's override parser and composed with configs/NAME.yaml through Hydra's compose API, the same way
in every process under torchrun, in tests and in benchmarks (`compose`). Then:

  * a wrong type, an unknown key (with the one meant suggested: ropegpt's name for another project's,
    `optim.learning_rate` -> optim.lr, else the closest), a malformed argument, or a value a schema's
    __post_init__ refuses is a ConfigError: one line naming the key, exit code 2;
  * a field declared free text (`field(metadata=FREE_TEXT)`, e.g. sample.py's prompt) takes the rest
    of its argument verbatim: quotes, commas, `=`, `${`, backslashes and any Unicode survive, because
    the value is quoted for Hydra's grammar before Hydra reads it;
  * `--help` lists the command's own settings with their defaults and comments, `--cfg` (or `--cfg job`)
    prints the composed settings as YAML, and `-m` runs a sweep where the command offers one
    (train.py: training/sweep.py), each flag anywhere on the line as Hydra's own commands take them;
  * Hydra writes nothing (no .hydra folder, no log file): a command that writes files chooses where.

HYDRA_FULL_ERROR changes nothing here: a user error is one line with or without it, and anything
else (a bug) shows Python's full traceback either way.

The file reads in the order it runs: `run_command` and `compose` first, then what compose calls.
"""

import dataclasses
import difflib
import inspect
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runtime.errors import UserError, exit_on_user_error

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
FREE_TEXT = {"free_text": True}  # field metadata: the value is taken verbatim from the command line


class ConfigError(UserError):
    """A setting that cannot be used. The message names the key and what it accepts."""


def run_command(name: str, schema: type, task: Callable[[Any, list[str]], Any],
                argv: Optional[Sequence[str]] = None, sweep: Optional[Callable] = None) -> Any:
    """The entry point of a command: `--help`, `--cfg`, a sweep (`-m`, where the command offers one:
    sweep(name, schema, args)), or compose configs/NAME.yaml with the command line and return
    task(settings, args). The flags go anywhere on the line, as with Hydra's own commands. A UserError
    anywhere becomes one line on stderr and exit 2; Ctrl-C where the command does not handle it (before
    a training loop starts, while sampling) one line and exit 130, as a shell reports SIGINT."""
    try:
        return run_flags(name, schema, task, argv, sweep)
    except KeyboardInterrupt:
        print(f"{name}: stopped by Ctrl-C", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)  # 130


def run_flags(name: str, schema: type, task: Callable, argv: Optional[Sequence[str]], sweep: Optional[Callable]):
    """run_command's body: the flags first, then the sweep or the task."""
    with exit_on_user_error():
        flags, args = hydra_flags(list(sys.argv[1:] if argv is None else argv))
        if "help" in flags:
            print(describe(name, schema))
        elif "cfg" in flags:
            print(OmegaConf.to_yaml(OmegaConf.structured(compose(name, schema, args))), end="")
        elif "multirun" in flags:
            if sweep is None:
                raise ConfigError(f"-m (a sweep): {name} runs once; sweeps are train.py's (python train.py -m "
                                  "optim.lr=1e-3,3e-3)")
            return sweep(name, schema, args)
        else:
            return task(compose(name, schema, args), args)


def hydra_flags(args: list[str]) -> tuple[set[str], list[str]]:
    """({"help", "cfg", "multirun"} as found, the other items): Hydra's flags, anywhere on the line.
    `--cfg job` and `--cfg all` both print the settings (ropegpt has no Hydra settings of its own)."""
    flags, rest, i = set(), [], 0
    while i < len(args):
        item, i = args[i], i + 1
        if item in ("-h", "--help"):
            flags.add("help")
        elif item in ("-m", "--multirun"):
            flags.add("multirun")
        elif item in ("-c", "--cfg") or item.startswith("--cfg="):
            flags.add("cfg")
            part = item.split("=", 1)[1] if "=" in item else None
            if part is None and i < len(args) and args[i] in ("job", "all", "hydra"):
                part, i = args[i], i + 1  # the flag's own argument
            if part == "hydra":
                raise ConfigError("--cfg hydra: ropegpt sets no Hydra options; --cfg job prints the settings")
            if part not in (None, "job", "all"):
                raise ConfigError(f"--cfg={part}: write --cfg or --cfg job")
        else:
            rest.append(item)
    return flags, rest


def compose(name: str, schema: type, args: Sequence[str] = ()) -> Any:
    """The settings `python NAME.py *args` runs with, as an instance of schema, in four steps: (1) quote
    free text for Hydra; (2) read each key=value with Hydra's parser and refuse what the schema and
    configs/ lack; (3) Hydra's compose API: the schema, the YAML, the overrides; (4) the schema's checks."""
    import hydra  # here, not at the top: a command that only imports this module loads no Hydra
    from hydra.core.config_store import ConfigStore

    free = {f.name for f in dataclasses.fields(schema) if f.metadata.get("free_text")}
    args = [quote_for_hydra(a) if "=" in a and a.split("=", 1)[0] in free else a for a in args]  # (1)
    command_groups = groups(name)
    for o in parse_overrides(args):  # (2)
        key = o.key_or_group
        if key.split(".")[0] == "hydra":
            raise ConfigError(f"{o.input_line}: ropegpt sets no Hydra options (train.py's run folder is out_dir=)")
        if key in command_groups:
            if o.value() is None and not o.is_delete():  # Hydra drops a group with ~key, not key=null
                raise ConfigError(f"{o.input_line}: to run without one, leave {key}= out or write ~{key}")
            if not o.is_delete() and o.value() not in options(key):  # `~experiment` drops one
                raise ConfigError(f"{o.input_line}: there is no configs/{key}/{o.value()}.yaml; choose one of "
                                  f"{', '.join(options(key))}")
        elif not o.is_add() and not any(k == key or k.startswith(f"{key}.") for k in schema_keys(schema)):
            raise unknown_key(key, schema)  # a `+key=` addition is refused by to_schema, once composed
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)  # configs/NAME.yaml lists it first
    try:
        with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra.compose(config_name=name, overrides=args)  # (3)
    except (hydra.errors.HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
    return to_schema(cfg, schema)  # (4)


# ----------------------------------------------------------------------------------------------
# What compose calls, in that order; then require (for schemas) and describe (for --help)
# ----------------------------------------------------------------------------------------------


def quote_for_hydra(item: str) -> str:
    """key=text with text single-quoted, so that Hydra and OmegaConf read back exactly text.

    Hydra unescapes backslashes only where they precede a quote or end the string, OmegaConf only where
    they precede an interpolation `${`: double those runs, then escape the quotes and the `${`.
    """
    key, text = item.split("=", 1)
    text = re.sub(r"\\+(?='|\Z|\$\{)", lambda m: m.group(0) * 2, text)
    return f"{key}='" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def groups(name: str) -> dict[str, Any]:
    """The config groups configs/NAME.yaml uses, with their default options: {"model": "small", ...}."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{name}.yaml")).get("defaults", [])
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if (CONFIG_DIR / k).is_dir()}


def parse_overrides(overrides: Sequence[str]) -> list:
    """The command line's key=value items as Hydra reads them (hydra.core.override_parser Override objects)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        try:
            parsed.append(parser.parse_override(item))
            if not parsed[-1].key_or_group:  # `=5`: a value without a key is unreadable too
                raise HydraException(item)
        except HydraException:
            raise ConfigError(f"cannot read the argument {item!r}: write key=value (e.g. max_steps=100), "
                              "quoting a value that holds spaces or commas") from None
    return parsed


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in configs/GROUP/."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every settable key of a schema, nested ones dotted: ["model.n_layer", ..., "max_steps", ...]."""
    keys = []
    for f in dataclasses.fields(schema):
        nested = f.default_factory if dataclasses.is_dataclass(f.default_factory) else None
        keys += schema_keys(nested, f"{prefix}{f.name}.") if nested else [f"{prefix}{f.name}"]
    return keys


# Why this table: people type the names of the projects they come from (nanoGPT, Hugging Face transformers,
# litgpt, torchtitan), and the closest spelling misleads: `optim.learning_rate` is closest to optim.min_lr,
# but means optim.lr. ropegpt's name (a key's last part) -> theirs; suggested only where the schema has it.
OTHER_NAMES = {
    "lr": ("learning_rate",),
    "min_lr": ("lr_min", "min_learning_rate"),
    "warmup_steps": ("warmup", "warmup_iters", "lr_warmup_steps"),
    "max_steps": ("steps", "max_iters", "num_steps", "lr_decay_iters"),
    "batch_size": ("batchsize", "global_batch_size"),
    "grad_clip": ("max_grad_norm", "max_norm"),
    "eval_batches": ("eval_iters",),
    "n_layer": ("n_layers", "num_layers", "num_hidden_layers"),
    "n_head": ("n_heads", "num_heads", "num_attention_heads"),
    "n_kv_head": ("n_kv_heads", "num_key_value_heads", "n_query_groups"),
    "n_embd": ("hidden_size", "d_model", "dim"),
    "mlp_hidden": ("intermediate_size",),
    "block_size": ("context_length", "seq_len", "max_seq_len", "max_position_embeddings"),
    "rope_base": ("rope_theta",),
    "norm_eps": ("rms_norm_eps",),
    "tie_weights": ("tie_word_embeddings",),
}
OURS = {theirs: ours for ours, names in OTHER_NAMES.items() for theirs in names}


def unknown_key(key: str, schema: type) -> ConfigError:
    """The one line for a key the schema lacks, suggesting the key meant: ropegpt's name for another
    project's (OTHER_NAMES, in the typed key's group if it has one), else the closest spelling, else the
    same last part under another group (`lr=0.1` for optim.lr)."""
    known, (group, _, last) = schema_keys(schema), key.rpartition(".")
    ours = [k for k in known if k.rpartition(".")[2] == OURS.get(last)]
    close = sorted(ours, key=lambda k: not k.startswith(f"{group}."))[:1]  # in the typed key's group first
    close = close or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        close = [k for k in known if k.rpartition(".")[2] == last][:1]
    hint = f"did you mean {close[0]}?" if close else "`--help` lists the settings"
    return ConfigError(f"unknown setting {key}: {hint}")


def one_line(e: BaseException) -> str:
    """Hydra's composition error and its cause, as one line: 'Error merging override optim.lr=abc: Value
    'abc' of type 'str' could not be converted to Float'."""
    parts = []
    while e is not None and len(parts) < 3:
        lines = []
        for line in str(e).strip().splitlines() or [type(e).__name__]:
            if line.strip().startswith(("full_key:", "object_type=", "reference_type=")):
                break  # OmegaConf's context lines: the key is named already
            lines.append(line.strip().rstrip(":."))
        text = " ".join(lines)
        if text and not any(text in p for p in parts):
            parts.append(text)
        e = e.__cause__
    return ": ".join(parts)


def to_schema(cfg: Any, schema: type, prefix: str = "", root: Optional[type] = None) -> Any:
    """A composed DictConfig as an instance of its schema (nested dataclasses all the way down).

    A key the schema lacks is refused (Hydra lets `+key=value` add one; it would do nothing). Each schema
    checks its values in __post_init__ and raises ValueError("key=value must ..."): that becomes a
    ConfigError whose keys carry their group (model.n_head=0 ...), checked inner groups first.
    """
    fields = {f.name: f.default_factory for f in dataclasses.fields(schema)}
    for key in cfg:
        if key not in fields:
            raise unknown_key(f"{prefix}{key}", root or schema)  # suggestions come from the whole schema
    for key, nested in fields.items():
        if dataclasses.is_dataclass(nested):
            to_schema(cfg[key], nested, f"{prefix}{key}.", root or schema)
    try:
        return OmegaConf.to_object(cfg)
    except ValueError as e:
        raise ConfigError(re.sub(r"(^|; )(\w+)=", rf"\g<1>{prefix}\g<2>=", str(e))) from None


def require(checks: list[tuple[bool, str]]) -> None:
    """For a schema's __post_init__: raise ValueError("key=value must ...; ...") naming every failed check."""
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ValueError("; ".join(problems))


def describe(name: str, schema: type) -> str:
    """--help: the command's docstring, its config groups, and every setting with the value a bare
    command runs with (the schema's default, or what the default groups set) and its comment."""
    lines = [(inspect.getmodule(schema).__doc__ or "").strip(), "",
             "Settings (key=value; the values shown are those a bare command runs with):"]
    bare = OmegaConf.structured(compose(name, schema, []))

    def walk(cls: type, prefix: str) -> None:
        comments = {}
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
            if m:
                comments[m.group(1)] = m.group(2)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory):
                walk(f.default_factory, f"{prefix}{f.name}.")
                continue
            value = OmegaConf.select(bare, f"{prefix}{f.name}")
            comment = f"  # {comments[f.name]}" if f.name in comments else ""
            lines.append(f"  {prefix}{f.name}={'null' if value is None else value}{comment}")

    walk(schema, "")
    if groups(name):
        lines += ["", "Config groups (group=option; the option's YAML sets several keys at once):"]
        lines += [f"  {group}: {', '.join(options(group))} (default: {default or 'none'})"
                  for group, default in groups(name).items()]
    return "\n".join(lines)
