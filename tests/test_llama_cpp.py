"""ropegpt's exports in llama.cpp (bench/llama_cpp.py): a GPT-2 BPE run converted to GGUF by llama.cpp's own
converter reads a prompt to the same ids, decodes the same greedy tokens and gives the same logits.

The slow test needs llama-cpp-python (pip install llama-cpp-python) and llama.cpp's source folder, the one
holding convert_hf_to_gguf.py, in $ROPEGPT_LLAMA_CPP; it skips, saying which is missing, without them. The
other tests run anywhere. Logits are compared in fp32, within the tolerances below.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from bench.llama_cpp import ENV, convert, find_converter, first_difference, parse_args, run, tokenizer_hint
from runtime.errors import UserError
from tests.helpers import run_command

# fp32 logits, llama.cpp's CPU kernels against PyTorch's. With an fp32 KV cache only the arithmetic differs:
# observed 2e-6 to 7e-6 for logits up to 16. llama.cpp's default KV cache is fp16, which rounds each key and
# value: observed 9e-4 to 1.7e-3 for logits of 10 to 16 (5e-5 for this test's smaller model).
LOGIT_TOLERANCE_F32_CACHE = 1e-4
LOGIT_TOLERANCE_F16_CACHE = 1e-2
NEW_TOKENS = 20


def llama_cpp_folder() -> Path:
    """$ROPEGPT_LLAMA_CPP, when llama_cpp imports and the folder holds the converter; else the test skips."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not installed: pip install llama-cpp-python")
    folder = os.environ.get(ENV)
    if not folder or not (Path(folder) / "convert_hf_to_gguf.py").is_file():
        pytest.skip(f"{ENV} does not name a llama.cpp source folder with convert_hf_to_gguf.py ({folder!r})")
    return Path(folder)


@pytest.mark.slow
def test_a_gpt2_bpe_export_runs_in_llama_cpp_with_equal_ids_greedy_tokens_and_logits(tmp_path, data_root):
    folder = llama_cpp_folder()
    r = run_command("train.py", "data=shakespeare", f"data.root={data_root}", "model=tiny", "max_steps=40",
                    "optim.lr=1e-2", "optim.warmup_steps=5", "batch_size=8", "eval_interval=40", "eval_batches=2",
                    "log_interval=10", "progress=false", "compile=false", "suggest_cpu_recipe=false",
                    f"out_dir={tmp_path / 'run'}", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = run(parse_args([str(tmp_path / "run"), "--llama-cpp", str(folder), "--prompt", "ROMEO: Is it",
                           "--new-tokens", str(NEW_TOKENS), "--text", str(data_root / "tinyshakespeare/input.txt"),
                           "--text-chars", "20000"]))
    (f32,) = rows
    assert f32["outtype"] == "f32" and not f32["add_bos"]  # GPT-2's prompts start without a BOS, as ropegpt's
    assert f32["prompt_equal"]
    assert f32["greedy_equal"] == NEW_TOKENS and f32["greedy_first_difference"] is None
    assert f32["max_logit_diff_f32_cache"] < LOGIT_TOLERANCE_F32_CACHE
    assert f32["max_logit_diff"] < LOGIT_TOLERANCE_F16_CACHE
    assert f32["max_logit"] > 1.0  # trained logits, not a near-zero start where any tolerance would pass
    assert f32["text_tokens"] > 4000 and f32["text_first_difference"] is None  # 20,000 characters, same ids


def test_a_missing_converter_or_llama_cpp_folder_is_one_line_and_exit_2(tmp_path):
    r = run_command("-m", "bench.llama_cpp", str(tmp_path), "--llama-cpp", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "has no convert_hf_to_gguf.py" in r.stderr, r.stderr
    r = run_command("-m", "bench.llama_cpp", str(tmp_path), env={ENV: ""})  # set but empty: unset
    assert r.returncode == 2 and r.stderr.startswith("error: no llama.cpp folder: pass --llama-cpp DIR"), r.stderr


def test_find_converter_takes_the_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setenv(ENV, str(tmp_path))
    assert find_converter(None) == tmp_path / "convert_hf_to_gguf.py"
    monkeypatch.delenv(ENV)
    with pytest.raises(UserError, match="no llama.cpp folder"):
        find_converter(None)


def test_a_failed_conversion_is_its_last_line_with_a_hint_for_a_character_export(tmp_path, capsys):
    """A stand-in converter that fails as llama.cpp's does on a character-level export."""
    converter = tmp_path / "convert_hf_to_gguf.py"
    converter.write_text("import sys\nprint('Traceback ...', file=sys.stderr)\n"
                         "print('Exception: WordLevel error: Missing [UNK] token from the vocabulary', "
                         "file=sys.stderr)\nsys.exit(1)\n")
    export = tmp_path / "export"
    export.mkdir()
    (export / "tokenizer.json").write_text('{"model": {"type": "WordLevel", "vocab": {}}}')
    with pytest.raises(UserError) as e:
        convert(converter, export, tmp_path / "m.gguf", "f32")
    assert "(exit code 1): Exception: WordLevel error: Missing [UNK] token" in str(e.value)
    assert "character-level export" in str(e.value) and "\n" not in str(e.value)
    printed = capsys.readouterr().out
    assert printed.startswith("$ python ") and f"--outfile {tmp_path / 'm.gguf'} --outtype f32" in printed
    (export / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    assert tokenizer_hint(export) == ""


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference([], []) is None


def test_bad_arguments_are_one_line(tmp_path):
    r = run_command("-m", "bench.llama_cpp", str(tmp_path / "missing"), "--llama-cpp", str(tmp_path))
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = run_command("-m", "bench.llama_cpp", str(tmp_path), "--new-tokens", "0", "--llama-cpp", str(tmp_path))
    assert r.returncode == 2 and "--new-tokens 0 must be at least 1" in r.stderr, r.stderr


def test_a_converter_missing_a_module_says_to_install_it(tmp_path):
    converter = tmp_path / "convert_hf_to_gguf.py"
    converter.write_text("import sys\nsys.exit(\"ModuleNotFoundError: No module named 'sentencepiece'\")\n")
    with pytest.raises(UserError, match="No module named 'sentencepiece'; install it in this Python"):
        convert(converter, tmp_path, tmp_path / "m.gguf", "f16")
