"""Bad input, as a hostile user types it: one line on stderr naming the key, exit code 2, no traceback,
and nothing the user had is changed. Prompts, as users type them: accepted exactly as the shell passes them.

The tables run the commands' real entry points (`train.main(argv)`, `sample.main(argv)`: the same
`runtime.config.run_command` that `python train.py ...` runs) in this process, which keeps hundreds of
cases fast; the prompt table and a few cases go through a real subprocess.
"""

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import sample as sample_command
import train as train_command
from data.tokenizers import CharTokenizer, GPT2Tokenizer
from runtime.checkpoint import save_checkpoint
from runtime.config import OTHER_NAMES, compose, unknown_key
from tests.helpers import REPO, run_command, tiny_model
from train import TrainConfig

TINY = ["model=tiny", "max_steps=3", "batch_size=4", "eval_batches=1", "log_interval=1", "eval_interval=2", "progress=false",
        "compile=false"]


def fingerprint(*folders: Path) -> dict:
    """Every file below the folders with its bytes' hash: equal fingerprints mean nothing changed or appeared."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tinyshakespeare):
    """A user's folder: prepared data, a finished run, a regular file, a corrupt checkpoint."""
    home = tmp_path_factory.mktemp("home")
    (home / "data" / "tinyshakespeare").mkdir(parents=True)
    (home / "data" / "tinyshakespeare" / "input.txt").write_bytes(tinyshakespeare.read_bytes())
    run = home / "run"
    train_command.train(compose("train", TrainConfig, [*TINY, "max_steps=2", f"data.root={home / 'data'}",
                                                       f"out_dir={run}"]))
    (home / "notes.txt").write_text("a regular file\n")
    (home / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    return home


def refused(main, argv: list[str], capsys, monkeypatch, home: Path, message: str) -> None:
    monkeypatch.chdir(home)
    before = fingerprint(home)
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2, (argv, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err  # exactly one line
    assert message in err, err
    assert "Traceback" not in err + out
    assert fingerprint(home) == before  # nothing the user had changed, nothing new appeared


TRAIN_CASES = [  # (arguments, what the one line must say)
    ("model.n_kv_head=0", "model.n_kv_head=0 must be >= 1"),
    ("model.n_head=0", "model.n_head=0 must be >= 1"),
    ("model.block_size=0", "model.block_size=0 must be >= 1"),
    ("model.n_embd=-8", "model.n_embd=-8 must be >= 1"),
    ("model.n_layer=0", "model.n_layer=0 must be >= 1"),
    ("model.mlp_hidden=0", "model.mlp_hidden=0 must be >= 1"),
    ("model.dropout=1.5", "model.dropout=1.5 must be in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1 must be in [0, 1)"),
    ("model.rope_base=0", "model.rope_base=0.0 must be > 0"),
    ("model.norm_eps=-1", "model.norm_eps=-1.0 must be > 0"),
    ("model.attn_impl=flash", "model.attn_impl='flash' must be 'sdpa' or 'explicit'"),
    ("model.n_head=5", "model.n_embd=32 must be divisible by n_head=5"),
    ("model.n_embd=36 model.n_head=12", "model.n_head=12 gives a head width n_embd/n_head=3, which must be even"),
    ("model.vocab_size=10", "model.vocab_size=10 disagrees with the data's vocabulary of 65"),
    ("optim.lr=-1", "optim.lr=-1.0 must be >= 0"),
    ("optim.min_lr=-1", "optim.min_lr=-1.0 must be in [0, lr=0.001]"),
    ("optim.min_lr=0.1", "optim.min_lr=0.1 must be in [0, lr=0.001]"),
    ("optim.warmup_steps=-1", "optim.warmup_steps=-1 must be >= 0"),
    ("optim.beta1=1", "optim.beta1=1.0 must be in [0, 1)"),
    ("optim.beta2=-0.1", "optim.beta2=-0.1 must be in [0, 1)"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1.0 must be >= 0"),
    ("optim.grad_clip=-1", "optim.grad_clip=-1.0 must be >= 0"),
    ("max_steps=0", "max_steps=0 must be >= 1"),
    ("batch_size=0", "batch_size=0 must be >= 1"),
    ("batch_size=-4", "batch_size=-4 must be >= 1"),
    ("micro_batch_size=0", "micro_batch_size=0 must be in [1, batch_size=4]"),
    ("micro_batch_size=8", "micro_batch_size=8 must be in [1, batch_size=4]"),
    ("micro_batch_size=3", "micro_batch_size=3 must divide batch_size / processes = 4"),
    ("eval_interval=0", "eval_interval=0 must be >= 1"),
    ("eval_batches=0", "eval_batches=0 must be >= 1"),
    ("log_interval=0", "log_interval=0 must be >= 1"),
    ("stop_step=0", "stop_step=0 must be >= 1"),
    ("peak_flops=0", "peak_flops=0.0 must be > 0"),
    ("seed=-1", "seed=-1 must be in [0, 2^63)"),
    ("device=tpu", "device='tpu' must be auto, cpu, cuda, cuda:N or mps"),
    ("device=cuda", "device=cuda but no CUDA GPU is available"),
    ("dtype=fp8", "dtype='fp8' must be one of auto, bf16, fp16, fp32"),
    ("dtype=fp16", "dtype=fp16 is for CUDA GPUs"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5 must be between 0 and 1"),
    ("data.tokenizer=bytes", "data.tokenizer='bytes' must be one of char, gpt2, bpe"),
    ("data.vocab_size=512", "data.vocab_size=512 is the size of a BPE trained on the corpus: give it with "
                            "data.tokenizer=bpe"),
    ("data.tokenizer=bpe data.vocab_size=10", "data.vocab_size=10 must be at least 257"),
    ("data.name=../x", "data.name='../x' must be a folder name"),
    ("data=nonexistent", "data=nonexistent: there is no configs/data/nonexistent.yaml"),
    ("model=huge", "model=huge: there is no configs/model/huge.yaml; choose one of gpt2, mini, small, tiny"),
    ("experiment=nope", "experiment=nope: there is no configs/experiment/nope.yaml"),
    ("data=text data.path=/nonexistent/book.txt", "no such file or folder: /nonexistent/book.txt (data.path)"),
    ("optim.lr=abc", "optim.lr=abc: Value 'abc' of type 'str' could not be converted to Float"),
    ("max_steps=1.5", "max_steps=1.5: Value '1.5' of type 'float' could not be converted to Integer"),
    ("model.causal=maybe", "model.causal=maybe: Value 'maybe' is not a valid bool"),
    ("compile=sometimes", "compile=sometimes: Value 'sometimes' is not a valid bool"),
    ("lr=0.1", "unknown setting lr: did you mean optim.lr?"),
    ("max_step=3", "unknown setting max_step: did you mean max_steps?"),
    ("optim.lrr=0.1", "unknown setting optim.lrr: did you mean optim.lr?"),
    ("optim.learning_rate=1e-3", "unknown setting optim.learning_rate: did you mean optim.lr?"),  # not optim.min_lr
    ("model.num_hidden_layers=2", "unknown setting model.num_hidden_layers: did you mean model.n_layer?"),
    ("model.hidden_size=64", "unknown setting model.hidden_size: did you mean model.n_embd?"),
    ("max_iters=100", "unknown setting max_iters: did you mean max_steps?"),
    ("+optim.lrr=0.1", "unknown setting optim.lrr: did you mean optim.lr?"),
    ("prompt=hello", "unknown setting prompt"),
    ("max_steps", "cannot read the argument 'max_steps': write key=value"),
    ("=5", "cannot read the argument '=5'"),
    ("max_steps=[1,2", "cannot read the argument 'max_steps=[1,2'"),
    ("hydra.run.dir=elsewhere", "hydra.run.dir=elsewhere: ropegpt sets no Hydra options"),
    ("out_dir={home}/notes.txt", "out_dir={home}/notes.txt is a file: give a folder"),
    ("out_dir={home}/notes.txt/run", "cannot create the run folder {home}/notes.txt/run: Not a directory"),
    ("out_dir={home}/run", "{home}/run already holds a run: continue it with `python train.py resume={home}/run`"),
    ("resume={home}/nothing", "no checkpoint at {home}/nothing"),
    ("resume={home}/corrupt.pt", "{home}/corrupt.pt is not a readable checkpoint"),
    ("resume={home}/run max_steps=4 model.n_layer=3", "the checkpoint's model"),  # max_steps: the run finished
    ("resume={home}/run model=small", "'model=small' switches a config group"),
    ("resume={home}/run optim.lr=-1", "optim.lr=-1.0 must be >= 0"),
]


@pytest.mark.parametrize("args,message", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_a_bad_setting_with_one_line_and_changes_nothing(world, capsys, monkeypatch, args, message):
    base = [] if args.startswith("resume=") else TINY  # a resumed run takes its settings from its checkpoint
    argv = [*base, f"data.root={world / 'data'}", *args.format(home=world).split()]
    refused(train_command.main, argv, capsys, monkeypatch, world, message.format(home=world))


def test_every_other_project_s_name_suggests_the_train_py_key_it_means():
    """runtime.config.OTHER_NAMES (nanoGPT's, transformers', litgpt's, torchtitan's names): each one, in any
    group, suggests the key of train.py's schema that it names, whatever spelling is closer."""
    for ours, names in OTHER_NAMES.items():
        for theirs in names:
            for typed in (theirs, f"optim.{theirs}", f"model.{theirs}"):
                hint = str(unknown_key(typed, TrainConfig))
                assert hint.rpartition(" ")[2].rstrip("?").rpartition(".")[2] == ours, (typed, hint)


@pytest.fixture(scope="module")
def char_ckpt(world) -> Path:
    return world / "run" / "checkpoints" / "last.pt"


SAMPLE_CASES = [
    ("num_samples=0", "num_samples=0 must be >= 1"),
    ("num_samples=1.5", "num_samples=1.5: Value '1.5' of type 'float' could not be converted to Integer"),
    ("max_new_tokens=-1", "max_new_tokens=-1 must be >= 0"),
    ("temperature=-1", "temperature=-1.0 must be >= 0"),
    ("top_k=0", "top_k=0 must be >= 1"),
    ("top_p=0", "top_p=0.0 must be in (0, 1]"),
    ("top_p=1.5", "top_p=1.5 must be in (0, 1]"),
    ("attention_tokens=0", "attention_tokens=0 must be >= 1"),
    ("attention_layer=-1", "attention_layer=-1 must be >= 0"),
    ("attention_layer=2 attention_plot={home}/a.png", "attention_layer=2: the model has layers 0..1"),
    ("attention_plot={home}/missing/a.png", "attention_plot={home}/missing/a.png: the folder {home}/missing does not exist"),
    ("device=tpu", "device='tpu' must be auto, cpu, cuda, cuda:N or mps"),
    ("device=cuda", "device=cuda but no CUDA GPU is available"),
    ("dtype=fp8", "dtype='fp8' must be one of auto, bf16, fp16, fp32"),
    ("seed=abc", "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("seed=-1", "seed=-1 must be in [0, 2^63)"),
    ("stop=''", "stop='' must be a non-empty string or a list of them"),
    ("stop=5", "stop=5 must be a non-empty string or a list of them"),
    ("use_cache=maybe", "use_cache=maybe: Value 'maybe' is not a valid bool"),
    ("quantize=int4", "quantize='int4' must be one of none, int8"),
    ("compile=maybe", "compile=maybe: Value 'maybe' is not a valid bool"),
    ("temprature=0.5", "unknown setting temprature: did you mean temperature?"),
    ("model=small", "unknown setting model"),
    ("ckpt={home}/nothing.pt", "no checkpoint at {home}/nothing.pt"),
    ("ckpt={home}/corrupt.pt", "{home}/corrupt.pt is not a readable checkpoint"),
    ("ckpt={home}/data", "{home}/data holds no checkpoints/best.pt or last.pt: is it a run folder of train.py?"),
    ("prompt=FILE:{home}/missing.txt", "cannot read the prompt file {home}/missing.txt"),
    ("prompt=Où", "1 character(s) not in the 65-character vocabulary: 'ù'"),
]


@pytest.mark.parametrize("args,message", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_sample_refuses_a_bad_setting_with_one_line_and_changes_nothing(world, char_ckpt, capsys, monkeypatch,
                                                                       args, message):
    argv = [f"ckpt={char_ckpt}", "max_new_tokens=3", *args.format(home=world).split()]
    refused(sample_command.main, argv, capsys, monkeypatch, world, message.format(home=world))


@pytest.mark.slow
def test_a_refused_command_line_says_one_line_through_a_real_process_with_or_without_hydra_full_error(world):
    for env in ({}, {"HYDRA_FULL_ERROR": "1"}):
        before = fingerprint(world)
        r = run_command(str(REPO / "train.py"), *TINY, "model.n_head=0", f"out_dir={world}/new", cwd=world, env=env)
        assert (r.returncode, r.stderr) == (2, "error: model.n_head=0 must be >= 1\n")
        r = run_command(str(REPO / "sample.py"), f"ckpt={world}/run", "top_p=2", cwd=world, env=env)
        assert (r.returncode, r.stderr) == (2, "error: top_p=2.0 must be in (0, 1] (or None to keep every token)\n")
        assert fingerprint(world) == before


# ---------------------------------------------------------------------------------------------
# Prompts exactly as typed
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_ckpt(tmp_path_factory) -> Path:
    model = tiny_model(vocab_size=50257)
    path = tmp_path_factory.mktemp("bpe") / "bpe.pt"
    save_checkpoint({"model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                     "data_meta": GPT2Tokenizer().meta()}, path)
    return path


AWKWARD = ["ROMEO: What's that?", "JULIET: O Romeo, Romeo!", "Où est-il", "emoji 🙂 and 中文", "a=b, c=[d]",
           "${oops} and ${now:%H}", "'quoted' \"twice\"", "back\\slash at the end\\", "--help", "null", "  spaces  "]


@pytest.mark.slow
@pytest.mark.parametrize("prompt", AWKWARD)
def test_any_prompt_reaches_a_bpe_model_exactly_as_typed(bpe_ckpt, prompt):
    r = run_command(str(REPO / "sample.py"), f"ckpt={bpe_ckpt}", f"prompt={prompt}", "max_new_tokens=3",
                    "stream=false", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prompt)
    assert f"prefill: {len(GPT2Tokenizer().encode(prompt))} tokens" in r.stderr


@pytest.mark.slow
def test_a_prompt_from_standard_input(bpe_ckpt):
    prompt = "From stdin: it's, = and ${x}\n"
    r = run_command(str(REPO / "sample.py"), f"ckpt={bpe_ckpt}", "prompt=-", "max_new_tokens=2", "stream=false",
                    input=prompt, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith(prompt), r.stderr


@pytest.mark.parametrize("prompt", AWKWARD)
def test_a_character_model_takes_a_prompt_in_its_vocabulary_and_names_the_rest(world, char_ckpt, capsys, prompt):
    vocab = CharTokenizer(torch.load(char_ckpt, weights_only=True)["data_meta"]["chars"]).stoi
    unknown = sorted({c for c in prompt if c not in vocab})
    if unknown:
        with pytest.raises(SystemExit) as e:
            sample_command.main([f"ckpt={char_ckpt}", f"prompt={prompt}", "max_new_tokens=2", "stream=false"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"{len(unknown)} character(s) not in the 65-character vocabulary" in err
    else:
        sample_command.main([f"ckpt={char_ckpt}", f"prompt={prompt}", "max_new_tokens=2", "stream=false"])
        assert capsys.readouterr().out.startswith(prompt)


def test_any_text_survives_hydra_s_grammar_as_a_free_text_setting():
    """compose() quotes free text for Hydra: 100 random strings of the characters that Hydra and OmegaConf
    treat specially (quotes, backslashes, ${, =, brackets, commas, newlines, non-ASCII) come back exactly."""
    import random

    from sample import SampleConfig

    rng = random.Random(0)
    alphabet = list("ab $'\"\\{}[](),=:;#!?%~ \n\té🙂") + ["${", "\\\\", "\\'"]
    texts = ["", "\\", "'", "${x}", "\\${x}", "a\\", "\\\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16))) for _ in range(100)]
    for text in texts:
        assert compose("sample", SampleConfig, [f"prompt={text}"]).prompt == text, repr(text)


def test_help_lists_each_command_s_own_settings_with_the_values_a_bare_command_runs_with(capsys):
    train_command.main(["--help"])
    out = capsys.readouterr().out
    assert "model.n_layer=6" in out and "max_steps=2500" in out  # the GPU recipe: model=small's 6 layers
    assert "model: gpt2, mini, small, tiny (default: small)" in out
    sample_command.main(["--help"])
    out = capsys.readouterr().out
    assert "temperature=0.8  # 0 is greedy" in out and "model" not in out.split("Settings")[1]  # sample's own
