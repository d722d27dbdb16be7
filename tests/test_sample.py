"""sample.py: text from checkpoints, the cache across block_size, sampling controls, clear errors."""

import dataclasses
import io
import os
import random
from pathlib import Path

import pytest
import torch

from data.config import DataError
from data.prompts import read_prompt, stop_strings
from data.tokenizers import CharTokenizer
from runtime import devices
from runtime.checkpoint import CheckpointError, save_checkpoint
from runtime.config import ConfigError, compose
from sample import SampleConfig, SampleError, sample
from tests.helpers import REPO, run_command, tiny_model
from train import TrainConfig, train

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A character-level checkpoint with a context of 16 whose weights are random but not flat."""
    model = tiny_model(vocab_size=len(CHARS), block_size=16, n_embd=32)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # peaked predictions: greedy and sampling differ
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint({"model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                     "data_meta": CharTokenizer(CHARS).meta()}, path)
    return path


def run(ckpt: Path, *overrides: str, stream: bool = False) -> tuple[list[str], str, str]:
    """sample.py in this process: texts, stdout, stderr. One thread, unless overrides say: the free cores'
    0.2 s measurement (tests/test_threads.py) would add up over this file's hundreds of calls."""
    threads = [] if any(o.startswith("threads=") for o in overrides) else ["threads=1"]
    cfg = compose("sample", SampleConfig, [f"ckpt={ckpt}", f"stream={stream}", *threads, *overrides])
    out, err = io.StringIO(), io.StringIO()
    texts = sample(cfg, out, err)
    return texts, out.getvalue(), err.getvalue()


def run_cli(*overrides: str, cwd: Path = REPO):
    return run_command(str(REPO / "sample.py"), *overrides, cwd=cwd, timeout=120)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_greedy_text_is_identical_with_and_without_the_cache_across_block_size(ckpt):
    cached, _, _ = run(ckpt, "prompt=ROMEO:", "temperature=0", "max_new_tokens=40", "use_cache=true")
    recomputed, _, err = run(ckpt, "prompt=ROMEO:", "temperature=0", "max_new_tokens=40", "use_cache=false")
    assert cached == recomputed
    assert len(cached[0]) == len("ROMEO:") + 40  # 46 tokens: well past the context of 16
    assert "without the KV cache" in err


def test_a_seed_reproduces_a_sample_and_another_seed_does_not(ckpt):
    a, _, _ = run(ckpt, "prompt=To be", "seed=1", "max_new_tokens=30")
    b, _, _ = run(ckpt, "prompt=To be", "seed=1", "max_new_tokens=30")
    c, _, _ = run(ckpt, "prompt=To be", "seed=2", "max_new_tokens=30")
    assert a == b and a != c


@pytest.mark.parametrize("control", ["top_k=1", "top_p=1e-9"])
def test_top_k_one_and_a_tiny_top_p_equal_greedy(ckpt, control):
    greedy, _, _ = run(ckpt, "prompt=ROMEO:", "temperature=0", "max_new_tokens=30")
    controlled, _, _ = run(ckpt, "prompt=ROMEO:", "temperature=1.0", control, "max_new_tokens=30")
    free, _, _ = run(ckpt, "prompt=ROMEO:", "temperature=1.0", "top_k=null", "max_new_tokens=30")
    assert controlled == greedy and free != greedy


def test_several_samples_share_one_prefill_and_differ(ckpt):
    texts, out, err = run(ckpt, "prompt=ROMEO:", "num_samples=3", "max_new_tokens=20")
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(t.startswith("ROMEO:") and len(t) == 26 for t in texts)
    assert out == "\n----------------------------------------\n".join(texts) + "\n"
    assert "prefill: 6 tokens" in err and "once for 3 samples" in err  # the 6-token prompt, once
    assert "decode: 57 tokens" in err  # 3 x 19


def test_what_streaming_prints_equals_the_returned_text(ckpt):
    texts, out, _ = run(ckpt, "prompt=ROMEO:", "max_new_tokens=30", stream=True)
    assert out == texts[0] + "\n"


@pytest.mark.parametrize("stream", [True, False])
def test_a_stop_string_ends_the_sample_before_it(ckpt, stream):
    full, _, _ = run(ckpt, "prompt=ROMEO:", "temperature=0", "max_new_tokens=40")
    continuation = full[0][len("ROMEO:"):]
    at = next(i for i in range(5, 38) if continuation[i : i + 2].isalpha())
    stop = continuation[at : at + 2]  # two letters the greedy continuation produces (no quoting needed)
    expected = "ROMEO:" + continuation[: continuation.find(stop)]
    texts, out, err = run(ckpt, "prompt=ROMEO:", "temperature=0", "max_new_tokens=40", f"stop='{stop}'", stream=stream)
    assert texts == [expected]
    assert out == expected + "\n"
    assert f"decode: {len(expected) - len('ROMEO:') + len(stop) - 1} tokens" in err  # stopped early


def test_an_empty_prompt_starts_from_a_newline_at_character_level(ckpt):
    texts, _, err = run(ckpt, "prompt=", "max_new_tokens=10")
    assert len(texts[0]) == 10 and "prefill: 1 tokens" in err


def test_a_prompt_from_a_file(ckpt, tmp_path):
    (tmp_path / "p.txt").write_text("KING:\nWhat")
    texts, _, _ = run(ckpt, f"prompt=FILE:{tmp_path}/p.txt", "max_new_tokens=5")
    assert texts[0].startswith("KING:\nWhat") and len(texts[0]) == 15


def test_attention_plot_saves_the_first_tokens_of_sample_zero(ckpt, tmp_path):
    texts, _, err = run(ckpt, "prompt=ROMEO:", "max_new_tokens=6", f"attention_plot={tmp_path}/a.png",
                        "attention_layer=1", "attention_tokens=10")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"attention weights of the first 10 tokens saved to {tmp_path}/a.png" in err
    with pytest.raises(SampleError, match="the model has layers 0..1"):
        run(ckpt, f"attention_plot={tmp_path}/b.png", "attention_layer=2")


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_two_training_steps_then_sample_py_from_that_run_directory(data_root, tmp_path):
    run_dir = tmp_path / "outputs" / "2026-01-01" / "00-00-00"
    train(compose("train", TrainConfig, ["model=tiny", "max_steps=2", "eval_interval=2", "eval_batches=1",
                                         "batch_size=2", "compile=false", f"data.root={data_root}",
                                         f"out_dir={run_dir}"]))
    r = run_cli(f"ckpt={run_dir}", "prompt=ROMEO:", "max_new_tokens=20", "seed=3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout) == len("ROMEO:") + 20 + 1
    assert "prefill: 6 tokens" in r.stderr and "decode: 19 tokens" in r.stderr
    newest = run_cli("prompt=ROMEO:", "max_new_tokens=20", "seed=3", cwd=tmp_path)  # no ckpt: the newest run
    assert newest.returncode == 0 and newest.stdout == r.stdout


# ---------------------------------------------------------------------------------------------
# Bad input: exit code 2, a message, no traceback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (["prompt='héllo@'"], "2 character(s) not in the 61-character vocabulary: '@', 'é'"),
    (["temperature=-1"], "temperature=-1.0 must be >= 0"),
    (["top_p=0"], r"top_p=0.0 must be in (0, 1]"),
    (["top_p=1.5"], r"top_p=1.5 must be in (0, 1]"),
    (["top_k=0"], "top_k=0 must be >= 1"),
    (["num_samples=0"], "num_samples=0 must be >= 1"),
    (["prompt=FILE:/nonexistent/prompt.txt"], "cannot read the prompt file /nonexistent/prompt.txt"),
])
def test_bad_sampling_input_is_refused_with_the_reason(ckpt, overrides, message):
    with pytest.raises((SampleError, DataError, ConfigError)) as e:
        run(ckpt, *overrides)
    assert message in str(e.value)


def test_bad_checkpoints_are_refused_with_the_reason(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        run(tmp_path / "missing.pt")
    state = torch.load(ckpt, weights_only=True)
    del state["data_meta"]
    torch.save(state, tmp_path / "no_meta.pt")
    with pytest.raises(SampleError, match="no tokenizer metadata"):
        run(tmp_path / "no_meta.pt")


def test_the_command_exits_2_with_the_message_and_no_traceback(ckpt, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(os.urandom(300))
    (tmp_path / "old_pickle.pt").write_bytes(b"\x80\x05" + os.urandom(298))  # a pickle protocol torch warns of
    for overrides, message, cwd in [([f"ckpt={tmp_path}/corrupt.pt"], "not a readable checkpoint", REPO),
                                    ([f"ckpt={tmp_path}/old_pickle.pt"], "not a readable checkpoint", REPO),
                                    ([f"ckpt={ckpt}", "prompt='héllo@'"], "not in the 61-character vocabulary", REPO),
                                    ([], "no runs under outputs/", tmp_path)]:
        r = run_cli(*overrides, cwd=cwd)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.stderr


def test_stop_strings_understand_newline_and_tab_escapes():
    assert stop_strings("\\n\\n") == ["\n\n"]
    assert stop_strings(["a\\tb", "x\\\\n", "é"]) == ["a\tb", "x\\n", "é"]
    assert stop_strings(None) == []


@pytest.mark.parametrize("typed,meant", [("a\\nb", "a\nb"), ("a\\tb", "a\tb"), ("a\\\\nb", "a\\nb"),
                                         ("back\\slash\\", "back\\slash\\"), ("\\\\", "\\")])
def test_a_typed_prompt_takes_the_escapes_of_stop(typed, meant):
    assert read_prompt(typed) == meant == stop_strings(typed)[0]


def test_escapes_in_a_typed_prompt_through_the_command_line_but_not_in_a_file(ckpt, tmp_path):
    r = run_cli(f"ckpt={ckpt}", "prompt=ROMEO:\\nJULIET", "max_new_tokens=1", "stream=false", "seed=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:\nJULIET") and "prefill: 13 tokens" in r.stderr
    (tmp_path / "p.txt").write_text("ROMEO:\\nJULIET")  # a file is read verbatim: backslash, n
    assert read_prompt(f"FILE:{tmp_path}/p.txt") == "ROMEO:\\nJULIET"


@pytest.mark.parametrize("stop", ["    ", "\\n\\n", "e", "ROMEO and JULIET", "zzzzzzzzzzzzzzzzzzzzzzzz"])
def test_streamed_and_returned_text_are_identical_for_any_stop_string(ckpt, stop):
    """Streaming holds back what could still begin a stop string, even when that is longer than the text."""
    args = ["prompt=ROMEO:", "temperature=0", "max_new_tokens=40", f"stop='{stop}'"]
    _, streamed, _ = run(ckpt, *args, stream=True)
    _, printed, _ = run(ckpt, *args, stream=False)
    assert streamed == printed


@pytest.mark.parametrize("seed", range(4))
def test_streamed_equals_printed_for_stop_strings_of_length_1_to_8_taken_from_random_samples(ckpt, seed):
    """Random texts (sampled at temperature 1.5); for each length 1-8 a stop string cut from the text (so it
    occurs) and one that starts like it but does not: the stream prints exactly what is returned."""
    texts, _, _ = run(ckpt, "prompt=", "temperature=1.5", "max_new_tokens=60", f"seed={seed}")
    rng = random.Random(seed)
    for length in range(1, 9):
        start = rng.randrange(0, len(texts[0]) - length)
        cut = texts[0][start : start + length]
        for stop in (cut, cut[:-1] + "\t"):  # \t never occurs: the vocabulary has no tab
            args = ["prompt=", "temperature=1.5", "max_new_tokens=60", f"seed={seed}",
                    f"stop='{stop.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}'"]
            streamed_texts, streamed, _ = run(ckpt, *args, stream=True)
            printed_texts, printed, _ = run(ckpt, *args, stream=False)
            assert streamed == printed and streamed_texts == printed_texts, (stop, streamed, printed)
            if stop == cut:  # the same random text, ended before the stop string's first occurrence
                assert len(printed_texts[0]) <= start and texts[0].startswith(printed_texts[0])


def test_a_prompt_longer_than_the_context_keeps_its_last_block_size_tokens(ckpt):
    long_prompt = "ROMEO: " + "a" * 30  # 37 characters, a context of 16
    texts, out, err = run(ckpt, f"prompt={long_prompt}", "temperature=0", "max_new_tokens=5")
    assert "note: the prompt is 37 tokens, longer than the model's context of 16: the model reads its last 16" in err
    assert "prefill: 16 tokens" in err
    tail, _, _ = run(ckpt, f"prompt={long_prompt[-16:]}", "temperature=0", "max_new_tokens=5")
    assert texts[0] == long_prompt + tail[0][16:]  # the same continuation as from the last 16 characters


def test_stderr_names_the_checkpoint_first_and_a_printed_fresh_seed_repeats_the_sample(ckpt):
    args = ["prompt=ROMEO:", "max_new_tokens=40", "temperature=1.0", "top_k=null"]
    first, _, err = run(ckpt, *args)
    lines = err.splitlines()
    assert lines[0] == f"checkpoint: {ckpt} (no step)"  # the fixture's checkpoint has no step or val loss
    seed = int(lines[1].split()[1])
    assert lines[1] == f"seed: {seed} (seed={seed} repeats this sample)"
    again, _, err_again = run(ckpt, *args, f"seed={seed}")
    assert again == first and err_again.splitlines()[1] == f"seed: {seed}"
    others = {run(ckpt, *args)[0][0] for _ in range(3)}
    assert len(others | {first[0]}) > 1  # fresh seeds: not the same text every run


def test_dtype_bf16_on_a_cpu_without_native_bf16_warns_once_and_still_samples(ckpt, monkeypatch):
    monkeypatch.setattr(devices, "cpu_features", lambda: set())  # an AVX2 laptop: bf16 only emulated
    texts, _, err = run(ckpt, "prompt=ROMEO:", "max_new_tokens=8", "dtype=bf16", "seed=1")
    assert [line for line in err.splitlines() if "no native bf16" in line] == [
        f"warning: dtype=bf16 on {devices.cpu_name()}: this CPU has no native bf16, so torch emulates it and bf16 "
        "products run slower than fp32 here (docs/results.md); dtype=auto (fp32 on a CPU) is faster"]
    assert texts[0].startswith("ROMEO:") and len(texts[0]) > len("ROMEO:")
    _, _, fp32_err = run(ckpt, "prompt=ROMEO:", "max_new_tokens=8", "seed=1")
    assert "no native bf16" not in fp32_err

@pytest.mark.slow
def test_compile_true_prints_the_same_text_and_its_compile_time_on_a_line_of_its_own(ckpt):
    """sample.py compile=true: the decode step compiled (inductor here), greedy and sampled text as eager,
    several samples and a window that slides past the context of 16; the compile time is said apart."""
    for controls in (["temperature=0"], ["seed=3", "num_samples=2"]):
        args = ["prompt=ROMEO:", "max_new_tokens=40", *controls]
        eager, _, _ = run(ckpt, *args)
        compiled, _, err = run(ckpt, *args, "compile=true")
        assert compiled == eager
        said = [line for line in err.splitlines() if line.startswith("compile: the decode step in ")]
        assert len(said) == 1 and said[0].endswith(" s (not in the rates below)")
