"""Llama 3.x folders (RoPE scaling "llama3" and "linear"), and one tokenization of a prompt everywhere.

Every folder is built here with transformers and random weights, at Llama-3.2-1B's settings (its
rope_theta, RoPE scaling, grouped-query ratio, head width 64, tied embeddings, <|begin_of_text|> added
by the tokenizer's post-processor) and a small width. Logits are compared in fp32 within 1e-4.
"""

import io
import json
import math
import os
from pathlib import Path

import pytest
import torch
import transformers

from data.tokenizers import HFTokenizer
from export import ExportConfig, export
from model.attention import rope_frequencies
from model.generate import complete
from model.llama import LlamaFormatError, gpt_config, llama_config, load_llama
from runtime.config import compose
from sample import SampleConfig, sample
from tests.helpers import run_command, tiny_model
from train import TrainConfig, train

TOLERANCE = 1e-4
# Llama-3.2-1B's config.json: its RoPE (theta and scaling), its heads' ratio and width; smaller elsewhere.
LLAMA_3_2 = {"rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
LONG = {**LLAMA_3_2, "factor": 8.0, "original_max_position_embeddings": 32}  # scaled within 256 positions


def llama3_tokenizer(corpus: str):
    """Byte-level BPE with <|begin_of_text|> put first by the post-processor, as Llama 3's tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([corpus], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    return tok


@pytest.fixture(scope="module")
def corpus(tinyshakespeare) -> str:
    return tinyshakespeare.read_text()[:100_000]


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory, corpus):
    """llama3_folder(rope, max_positions) -> a Llama-3.2-shaped folder with random weights and a tokenizer."""
    tok = llama3_tokenizer(corpus)

    def make(rope: dict, max_positions: int = 131072) -> Path:
        folder = tmp_path_factory.mktemp(f"llama3_{rope['rope_type']}")
        config = transformers.LlamaConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=64, max_position_embeddings=max_positions,
            rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=None,
            rope_parameters=rope, initializer_range=0.1)  # wide logits: greedy choices far from ties
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(folder)
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
             "eos_token": "<|end_of_text|>"}))
        return folder

    return make


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("rope", [LLAMA_3_2, {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
                                  {**LLAMA_3_2, "low_freq_factor": 2.0, "high_freq_factor": 8.0}],
                         ids=["llama3", "linear", "llama3-other-factors"])
def test_rope_frequencies_equal_transformers(rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64,
                                      max_position_embeddings=131072, rope_parameters=rope)
    theirs, attention_factor = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, "cpu")
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    ours = rope_frequencies(64, rope["rope_theta"], scaling)
    plain = rope_frequencies(64, rope["rope_theta"])
    assert attention_factor == 1.0  # neither type rescales the scores
    assert torch.allclose(ours, theirs.float(), rtol=1e-6, atol=0)
    assert (ours < plain * 0.99).any()  # the scaling slowed some pairs: the comparison is not plain RoPE's


@pytest.mark.parametrize("rope,max_positions,length", [(LLAMA_3_2, 131072, 48), (LONG, 256, 200)],
                         ids=["llama-3.2-1B-rope", "past-the-original-context"])
def test_a_llama_3_2_folder_gives_transformers_logits_and_greedy_tokens(llama3_folder, rope, max_positions, length,
                                                                        corpus):
    folder = llama3_folder(rope, max_positions)
    model = load_llama(folder).eval()
    assert model.config.rope_scaling == {k: v for k, v in rope.items() if k != "rope_theta"}
    ids = torch.tensor([HFTokenizer.from_folder(folder).encode_prompt(corpus[:2000])[:length]])
    assert ids.shape[1] == length and ids[0, 0] == 0  # <|begin_of_text|> first, from the post-processor
    ours, _ = model(ids)
    theirs = hf_model(folder)(ids).logits
    assert (ours - theirs).abs().max() < TOLERANCE and theirs.abs().max() > 1
    plain = load_llama(folder).eval()
    plain.config.rope_scaling = None
    assert (plain(ids)[0] - theirs).abs().max() > 100 * TOLERANCE  # the scaling is what makes them equal

    # greedy: ropegpt through its KV cache, transformers through its own, past the original context
    prompt = ids[:, : length - 40]
    expected = hf_model(folder).generate(prompt, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                                         eos_token_id=None)
    assert complete(model, prompt, 40, temperature=0).tolist() == expected.tolist()


def test_sample_py_continues_a_llama_3_prompt_as_transformers_does(llama3_folder):
    folder = llama3_folder(LLAMA_3_2)
    cfg = compose("sample", SampleConfig, [f"ckpt={folder}", "prompt=ROMEO: how", "temperature=0",
                                           "max_new_tokens=30", "stream=false"])
    err = io.StringIO()
    [text] = sample(cfg, io.StringIO(), err)
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    prompt = hf_tok("ROMEO: how")["input_ids"]
    assert prompt[0] == hf_tok.bos_token_id == 0  # the post-processor's BOS, in transformers too
    new = hf_model(folder).generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False)[0, len(prompt):]
    new = new.tolist()
    if 1 in new:  # both stop at <|end_of_text|>
        new = new[: new.index(1)]
    assert text == hf_tok.decode(prompt + new, skip_special_tokens=True)
    assert f"prefill: {len(prompt)} tokens" in err.getvalue()


def test_init_from_a_llama_3_folder_keeps_its_rope_and_export_writes_it_back(llama3_folder, tmp_path, corpus):
    """Fine-tuning with a learning rate of 0 keeps the folder's weights: the export is the folder again."""
    folder = llama3_folder(LONG, 256)
    (tmp_path / "book.txt").write_text(corpus[:20_000])
    args = [f"init_from={folder}", "data=text", f"data.path={tmp_path / 'book.txt'}", f"data.tokenizer=hf:{folder}",
            f"data.root={tmp_path / 'data'}", "model.block_size=128", "max_steps=1", "batch_size=2",
            "eval_batches=1", "compile=false", "optim.lr=0", "optim.min_lr=0", f"out_dir={tmp_path / 'run'}"]
    train(compose("train", TrainConfig, args), args)
    out = export(ExportConfig(ckpt=str(tmp_path / "run"), out=str(tmp_path / "out")))
    theirs, ours = json.loads((folder / "config.json").read_text()), json.loads((out / "config.json").read_text())
    assert ours["rope_parameters"] == theirs["rope_parameters"] == LONG  # transformers 5.x reads this one
    assert ours["rope_scaling"] == {k: v for k, v in LONG.items() if k != "rope_theta"}  # 4.x and llama.cpp
    ids = torch.tensor([HFTokenizer.from_folder(folder).encode_prompt(corpus[:1500])[:120]])
    assert (hf_model(out)(ids).logits - hf_model(folder)(ids).logits).abs().max() < TOLERANCE


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}},
     "RoPE scaling 'yarn' (YaRN, as in long-context Qwen2.5 and DeepSeek models): ropegpt implements 'llama3' "
     "(Llama 3.1-3.3) and 'linear' only"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "'dynamic' (dynamic NTK"),
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}, "'longrope' (LongRoPE, as in Phi-3"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}},
     "rope_scaling.low_freq_factor=None must be a number > 0"),
    ({"model_type": "mistral"}, "model_type='mistral' (Mistral: sliding-window attention)"),
    ({"model_type": "qwen2"}, "model_type='qwen2' (Qwen2, Qwen2.5: biases in W_Q, W_K, W_V)"),
    ({"model_type": "gemma"}, "(Gemma: GeGLU, a head width of its own"),
    ({"attention_bias": True}, "attention_bias=true: ropegpt's layers have no biases"),
    ({"head_dim": 32}, "head_dim=32 with 4 heads of width 64"),
])
def test_what_ropegpt_does_not_implement_is_refused_naming_its_models(change, message):
    config = {**llama_config(tiny_model().config), **change}
    with pytest.raises(LlamaFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gpt_config(config)


def test_a_refused_folder_is_one_line_in_sample_py(llama3_folder, tmp_path):
    folder = tmp_path / "yarn"
    folder.mkdir()
    for f in llama3_folder(LLAMA_3_2).iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (folder / "config.json").write_text(json.dumps(config))
    r = run_command("sample.py", f"ckpt={folder}", "max_new_tokens=3")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: cannot sample from {folder}: RoPE scaling 'yarn' (YaRN, as in long-context Qwen2.5 and DeepSeek "
        "models): ropegpt implements 'llama3' (Llama 3.1-3.3) and 'linear' only"]


def test_rope_scaling_is_a_model_setting_checked_like_the_others():
    config = tiny_model().config
    for bad, message in [({"rope_type": "yarn", "factor": 2}, "rope_scaling.rope_type='yarn' must be one of"),
                         ({"rope_type": "linear", "factor": 0}, "rope_scaling.factor=0 must be a number > 0"),
                         ({**LLAMA_3_2, "high_freq_factor": 1.0}, "high_freq_factor must be larger than")]:
        with pytest.raises(ValueError, match=message):
            type(config)(**{**config.__dict__, "rope_scaling": bad})
    linear = type(config)(**{**config.__dict__, "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    assert math.isclose(float(rope_frequencies(16, 10000.0, linear.rope_scaling)[0]), 0.5)


# ---------------------------------------------------------------------------------------------
# A run and its export continue a prompt alike; an export's files are the user's
# ---------------------------------------------------------------------------------------------


def bpe_run(tmp_path: Path, corpus: str, data_root: Path) -> Path:
    (tmp_path / "book.txt").write_text(corpus[:30_000])
    args = ["data=text", f"data.path={tmp_path / 'book.txt'}", "data.tokenizer=gpt2", f"data.root={data_root}",
            "model=mini", "model.block_size=32", "max_steps=30", "batch_size=8", "eval_interval=30",
            "eval_batches=1", "compile=false", "optim.lr=3e-3", f"out_dir={tmp_path / 'run'}"]
    train(compose("train", TrainConfig, args), args)
    return tmp_path / "run"


def test_a_bpe_run_its_export_and_transformers_continue_a_prompt_identically(tmp_path, corpus, data_root):
    run = bpe_run(tmp_path, corpus, data_root)
    out = export(ExportConfig(ckpt=str(run), out=str(tmp_path / "out")))
    assert json.loads((out / "config.json").read_text())["bos_token_id"] == 50256  # named, as in Hugging Face's gpt2

    def greedy(ckpt: Path) -> str:
        cfg = compose("sample", SampleConfig, [f"ckpt={ckpt}", "prompt=ROMEO:", "temperature=0",
                                               "max_new_tokens=24", "stream=false"])
        return sample(cfg, io.StringIO(), io.StringIO())[0]

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = hf_tok("ROMEO:")["input_ids"]
    assert 50256 not in prompt  # no BOS: the tokenizer adds none, in transformers as in ropegpt
    new = hf_model(out).generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                                 eos_token_id=None)[0].tolist()
    assert greedy(run) == greedy(out) == hf_tok.decode(new)


def test_an_export_is_readable_as_the_users_other_files_and_a_char_export_names_a_bos(tmp_path, tinyshakespeare,
                                                                                        capsys):
    from data.tokenizers import CharTokenizer
    from tests.test_huggingface import checkpoint

    tokenizer = CharTokenizer.from_text(tinyshakespeare.read_text()[:20_000])
    run = checkpoint(tmp_path, tokenizer)
    old = os.umask(0o022)
    try:
        out = export(ExportConfig(ckpt=str(run), out=str(tmp_path / "out")))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {
        name: 0o644 for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                 "tokenizer_config.json")}
    # lm-eval starts a rolling log-likelihood from the BOS (else the EOS): the newline, here as in sample.py
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.bos_token == hf_tok.pad_token == "\n" and hf_tok.bos_token_id == tokenizer.stoi["\n"]
    assert json.loads((out / "config.json").read_text())["bos_token_id"] == tokenizer.stoi["\n"]
    assert hf_tok("ROMEO:")["input_ids"] == tokenizer.encode("ROMEO:")  # and a prompt gets no BOS
    # llama.cpp's converter cannot read a character vocabulary (bench/llama_cpp.py shows it): export says so
    assert "note: llama.cpp cannot convert this export" in capsys.readouterr().out
