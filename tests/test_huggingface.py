"""Hugging Face interop: export to a Llama folder, import Llama folders, fine-tune them (model/llama.py).

Every folder is built here, offline: transformers' LlamaForCausalLM with random weights, and a small
SentencePiece-style tokenizer trained on Tiny Shakespeare with the `tokenizers` library. Logits are
compared in fp32 within 1e-4 (observed: about 1e-5 for logits of size ~10).
"""

import dataclasses
import io
import json
from pathlib import Path

import pytest
import tokenizers
import torch
import transformers

from data.prompts import Completion
from data.tokenizers import CharTokenizer, GPT2Tokenizer, HFTokenizer
from export import ExportConfig, ExportError, export
from model.generate import complete
from model.llama import load_llama
from runtime.checkpoint import save_checkpoint
from runtime.config import compose
from sample import SampleConfig, sample
from tests.helpers import metrics, run_command, tiny_model
from train import TrainConfig, TrainError, train

TOLERANCE = 1e-4  # fp32 logits, ropegpt vs transformers
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET: O Romeo, Romeo!"


def spm_tokenizer(corpus: str) -> "tokenizers.Tokenizer":
    """A Llama-style tokenizer: BPE over words marked with ▁ (SentencePiece's Metaspace), <s> and </s>, <s>
    put first by the post-processor as Llama 2's tokenizer.json does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                          show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # Llama's BOS
    return tok


@pytest.fixture(scope="module")
def corpus(tinyshakespeare) -> str:
    return tinyshakespeare.read_text()[:100_000]


@pytest.fixture(scope="module")
def make_folder(tmp_path_factory, corpus):
    """make_folder(n_kv_head, tie, theta, init) -> a Hugging Face Llama folder with random weights and a tokenizer."""
    tok = spm_tokenizer(corpus)

    def make(n_kv_head: int = 2, tie: bool = False, theta: float = 10000.0, init: float = 0.3) -> Path:
        folder = tmp_path_factory.mktemp(f"llama_kv{n_kv_head}_tie{tie}_init{init}")
        config = transformers.LlamaConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=n_kv_head, max_position_embeddings=128,
            tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": theta},
            initializer_range=init)  # 0.3: wide logits, so greedy choices are far from ties
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="100KB")  # sharded
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}))
        return folder

    return make


def hf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


# ---------------------------------------------------------------------------------------------
# Import: a Llama folder -> ropegpt
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_head,tie,theta", [(4, False, 10000.0), (2, True, 10000.0), (1, False, 500000.0)],
                         ids=["MHA", "GQA-tied", "MQA-theta5e5"])
def test_an_imported_folder_gives_transformers_logits_and_greedy_tokens(make_folder, n_kv_head, tie, theta):
    folder = make_folder(n_kv_head, tie, theta)
    assert len(list(folder.glob("model-*.safetensors"))) > 1  # the sharded layout is what was read
    model = load_llama(folder).eval()
    assert (model.config.kv_heads, model.config.tie_weights, model.config.rope_base) == (n_kv_head, tie, theta)
    ids = torch.tensor([HFTokenizer.from_folder(folder).encode(TEXT)])
    ours, _ = model(ids)
    theirs = hf_logits(folder, ids)
    assert (ours - theirs).abs().max() < TOLERANCE and theirs.abs().max() > 1  # not trivially small logits

    # greedy generation: ropegpt through its KV cache, transformers through its own
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompt = ids[:, :8]
    expected = hf.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=None, min_new_tokens=40)
    got = complete(model, prompt, 40, temperature=0)
    assert got.tolist() == expected.tolist()


def test_sample_py_reads_a_folder_starts_with_bos_and_stops_at_eos(make_folder):
    folder = make_folder(2)
    cfg = compose("sample", SampleConfig, [f"ckpt={folder}", "prompt=ROMEO: how", "temperature=0",
                                           "max_new_tokens=30", "stream=false"])
    out, err = io.StringIO(), io.StringIO()
    [text] = sample(cfg, out, err)
    tok = HFTokenizer.from_folder(folder)
    prompt = [tok.bos] + tok.encode("ROMEO: how")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    generated = hf.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False)[0, len(prompt):].tolist()
    stops = 2 in generated  # transformers stops at </s> (id 2) too
    if stops:
        generated = generated[: generated.index(2)]
    assert text == "ROMEO: how" + tok.tok.decode(prompt[-4:] + generated)[len(tok.tok.decode(prompt[-4:])):]
    assert f"prefill: {len(prompt)} tokens" in err.getvalue()


def test_a_sentencepiece_decoder_keeps_the_space_after_the_prompt(make_folder):
    """Alone, a ▁word token decodes without its space; decoded after the prompt's last tokens it keeps it."""
    tok = HFTokenizer.from_folder(make_folder(2))
    prompt, more = tok.encode("ROMEO: how"), tok.encode(" the night")
    assert not tok.decode(more).startswith(" ")  # the pitfall this guards against
    completion = Completion(tok, [], context=prompt[-4:])
    for t in more:
        completion.add(t)
    assert completion.text == " the night"
    completion.add(tok.eos[0])
    assert completion.stopped and completion.text == " the night"


def test_sample_py_refuses_an_unsupported_folder_with_one_line(make_folder, tmp_path):
    folder = make_folder(2)
    bad = tmp_path / "biased"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["attention_bias"] = True
    (bad / "config.json").write_text(json.dumps(config))
    r = run_command("sample.py", f"ckpt={bad}", "max_new_tokens=3")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: cannot sample from {bad}: attention_bias=true: ropegpt's "
                                             "layers have no biases"]


# ---------------------------------------------------------------------------------------------
# Export: ropegpt -> a Llama folder
# ---------------------------------------------------------------------------------------------


def checkpoint(tmp_path: Path, tokenizer, **model) -> Path:
    net = tiny_model(vocab_size=tokenizer.vocab_size, **model)
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    save_checkpoint({"model_config": dataclasses.asdict(net.config), "model": net.state_dict(),
                     "data_meta": tokenizer.meta(), "step": 7}, path)
    return path.parent.parent


@pytest.mark.parametrize("kind,model", [("char", {}), ("char", {"tie_weights": True, "n_kv_head": 1}),
                                        ("gpt2", {"tie_weights": True}), ("gpt2", {"n_kv_head": 4}),
                                        ("gpt2", {"padded_vocab": 50304}), ("gpt2", {"tie_weights": True,
                                                                                     "padded_vocab": 50304})],
                         ids=["char-GQA", "char-tied-MQA", "gpt2-tied-GQA", "gpt2-MHA", "gpt2-padded",
                              "gpt2-padded-tied"])
def test_an_exported_model_loads_in_transformers_with_equal_logits_and_ids(tmp_path, corpus, kind, model):
    tokenizer = CharTokenizer.from_text(corpus) if kind == "char" else GPT2Tokenizer()
    run = checkpoint(tmp_path, tokenizer, **model)
    out = export(ExportConfig(ckpt=str(run), out=str(tmp_path / "exported dir")))  # a space in the path
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = corpus[:2000] + (" naïve café 🤖  x\t\n1234" if kind == "gpt2" else "")
    ids = tokenizer.encode(text)
    assert hf_tok(text)["input_ids"] == ids
    assert hf_tok.decode(ids) == text
    assert HFTokenizer.from_folder(out).encode(text) == ids  # what sample.py ckpt=FOLDER and init_from read
    ours, _ = tiny_model(vocab_size=tokenizer.vocab_size, **model)(torch.tensor([ids[:32]]))
    assert (hf_logits(out, torch.tensor([ids[:32]])) - ours).abs().max() < TOLERANCE
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] == model.get("tie_weights", False)
    assert config["eos_token_id"] == ([50256] if kind == "gpt2" else None)
    from safetensors import safe_open
    with safe_open(out / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) != model.get("tie_weights", False)  # a tied head stored once
        assert f.get_slice("model.embed_tokens.weight").get_shape()[0] == config["vocab_size"] == tokenizer.vocab_size


def test_an_exported_folder_imports_back_to_the_same_model(tmp_path, corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    run = checkpoint(tmp_path, tokenizer, rope_base=5000.0, norm_eps=1e-5, mlp_hidden=80)
    out = export(ExportConfig(ckpt=str(run), out=str(tmp_path / "x")))
    back, original = load_llama(out), tiny_model(vocab_size=tokenizer.vocab_size, rope_base=5000.0,
                                                  norm_eps=1e-5, mlp_hidden=80)
    assert back.config == original.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), original.state_dict().values(),
                                                 strict=True))


def test_export_refuses_to_overwrite_and_a_bidirectional_model(tmp_path, corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    run = checkpoint(tmp_path, tokenizer)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists and is not an empty folder"):
        export(ExportConfig(ckpt=str(run), out=str(taken)))
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    bidirectional = checkpoint(tmp_path / "b", tokenizer, causal=False)
    with pytest.raises(ExportError, match="causal=false"):
        export(ExportConfig(ckpt=str(bidirectional), out=str(tmp_path / "b_out")))
    assert not (tmp_path / "b_out").exists() and not list(tmp_path.glob(".*partial"))
    r = run_command("export.py", f"ckpt={run}")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: out=DIR is required: the folder to write the Hugging Face model to (new or empty)"]


# ---------------------------------------------------------------------------------------------
# Fine-tuning: train.py init_from=FOLDER
# ---------------------------------------------------------------------------------------------


def test_init_from_fine_tunes_an_imported_model_and_the_loss_falls(make_folder, tmp_path, corpus):
    folder = make_folder(2, init=0.02)  # a trainable start, as a pretrained model is
    (tmp_path / "book.txt").write_text(corpus[:40_000])
    args = [f"init_from={folder}", "data=text", f"data.path={tmp_path / 'book.txt'}",
            f"data.tokenizer=hf:{folder}", f"data.root={tmp_path / 'data'}", "model.block_size=64",
            "max_steps=40", "batch_size=8", "eval_interval=40", "eval_batches=2", "log_interval=1",
            "compile=false", "optim.lr=1e-2", "optim.warmup_steps=2", f"out_dir={tmp_path / 'run'}"]
    result = train(compose("train", TrainConfig, args), args)  # as the command line passes them
    losses = [e["loss"] for e in metrics(tmp_path / "run")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.25, losses  # learns the text (0.5 observed)
    assert result["step"] == 40
    # the run samples (the tokenizer travels in the checkpoint) and exports back to a Llama folder
    cfg = compose("sample", SampleConfig, [f"ckpt={tmp_path / 'run'}", "prompt=ROMEO:", "max_new_tokens=10"])
    [text] = sample(cfg, io.StringIO(), io.StringIO())
    assert text.startswith("ROMEO:")
    out = export(ExportConfig(ckpt=str(tmp_path / "run"), out=str(tmp_path / "out")))
    config = json.loads((out / "config.json").read_text())
    assert (config["max_position_embeddings"], config["bos_token_id"], config["eos_token_id"]) == (64, 1, [2])
    assert transformers.AutoTokenizer.from_pretrained(out)("ROMEO: how")["input_ids"] == \
        HFTokenizer.from_folder(folder).encode_prompt("ROMEO: how")  # BOS: the post-processor


def test_init_from_starts_from_the_folder_weights_with_a_fresh_optimizer(make_folder, tmp_path, corpus):
    """With a learning rate of 0, the run's checkpoint holds exactly the folder's weights."""
    folder = make_folder(1, tie=True)
    (tmp_path / "book.txt").write_text(corpus[:20_000])
    args = [f"init_from={folder}", "data=text", f"data.path={tmp_path / 'book.txt'}", f"data.tokenizer=hf:{folder}",
            f"data.root={tmp_path / 'data'}", "model.block_size=32", "max_steps=2", "stop_step=1", "batch_size=2",
            "eval_batches=1", "compile=false", "optim.lr=0", "optim.min_lr=0", f"out_dir={tmp_path / 'run'}"]
    train(compose("train", TrainConfig, args), args)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    imported = load_llama(folder).state_dict()
    assert state["model"].keys() == imported.keys()
    assert all(torch.equal(state["model"][k], imported[k]) for k in imported)
    assert state["config"]["init_from"] == str(folder) and state["step"] == 1
    assert state["config"]["model"]["dropout"] == 0.0  # fine-tuning's default, not the model group's 0.2
    assert len(state["optimizer"]["state"]) > 0  # a fresh AdamW that took one step

    # resuming needs the run's checkpoint only: the folder's weights are not read again
    for weights in folder.glob("*.safetensors*"):
        weights.rename(weights.with_name(weights.name + ".away"))
    try:
        resumed = [f"resume={tmp_path / 'run'}"]
        assert train(compose("train", TrainConfig, resumed), resumed)["step"] == 2
    finally:
        for weights in folder.glob("*.away"):
            weights.rename(weights.with_name(weights.name.removesuffix(".away")))


@pytest.mark.parametrize("own_data,extra,message", [
    (False, [], "reads tokens of its own tokenizer: prepare your text with it"),
    (True, ["data.name=other", "data.tokenizer=gpt2"], "reads tokens of its own tokenizer: prepare your text"),
    (True, ["model.block_size=256"], "block_size=256 is longer than the model's context of 128"),
    (True, ["model.n_layer=12", "model.dropout=0.1"], r"takes the model's shape from its config.json: drop "
                                                     r"model.n_layer \(model.block_size, model.dropout, "),
])
def test_init_from_refuses_a_mismatch(make_folder, tmp_path, data_root, corpus, own_data, extra, message):
    folder = make_folder(2)
    (tmp_path / "book.txt").write_text(corpus[:20_000])
    data = ["data=text", f"data.path={tmp_path / 'book.txt'}", f"data.tokenizer=hf:{folder}"] if own_data else []
    args = [f"init_from={folder}", *data, f"data.root={data_root}", "max_steps=1", "compile=false",
            f"out_dir={tmp_path / 'run'}", *extra]
    with pytest.raises(TrainError, match=message):
        train(compose("train", TrainConfig, args), args)
    assert not (tmp_path / "run").exists()


def test_init_from_refuses_a_folder_that_is_not_a_model(tmp_path, data_root):
    with pytest.raises(TrainError, match="not a Hugging Face model folder"):
        train(compose("train", TrainConfig, [f"init_from={tmp_path}", f"data.root={data_root}", "max_steps=1",
                                             "compile=false", f"out_dir={tmp_path / 'run'}"]))


def test_sampling_stops_at_any_of_a_list_of_eos_ids(make_folder, tmp_path):
    """With the final norm's scale at zero every logit is 0 and greedy picks token 0; id 0 is one of the EOS."""
    folder = copy_folder(make_folder(2), tmp_path / "eos")
    config = json.loads((folder / "config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "bos_token_id": 1}))
    model = transformers.LlamaForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": [2, 0]}))
    cfg = compose("sample", SampleConfig, [f"ckpt={folder}", "prompt=ROMEO:", "temperature=0", "stream=false"])
    err = io.StringIO()
    assert sample(cfg, io.StringIO(), err) == ["ROMEO:"]
    assert "decode: 0 tokens" in err.getvalue()


def copy_folder(folder: Path, to: Path) -> Path:
    to.mkdir()
    for f in folder.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def test_an_exported_character_model_samples_from_an_empty_prompt(tmp_path, corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    out = export(ExportConfig(ckpt=str(checkpoint(tmp_path, tokenizer)), out=str(tmp_path / "x")))
    cfg = compose("sample", SampleConfig, [f"ckpt={out}", "max_new_tokens=5", "stream=false"])
    [text] = sample(cfg, io.StringIO(), io.StringIO())
    assert len(text) == 5 and set(text) <= set(tokenizer.chars)  # from a newline, one character per token


def test_export_leaves_a_users_folder_of_the_temporary_name_alone(tmp_path, corpus):
    mine = tmp_path / ".x.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    export(ExportConfig(ckpt=str(checkpoint(tmp_path, CharTokenizer.from_text(corpus))), out=str(tmp_path / "x")))
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.partial", "run", "x"]


@pytest.mark.parametrize("damage,message", [
    ("tokenizer.json", "is not a usable tokenizer"),
    ("model.safetensors.index.json", "is not a usable index of shards"),
])
def test_a_damaged_folder_is_one_line_and_exit_2(make_folder, tmp_path, damage, message):
    folder = copy_folder(make_folder(2), tmp_path / "damaged")
    (folder / damage).write_text("{not json")
    r = run_command("sample.py", f"ckpt={folder}", "max_new_tokens=3")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.slow
def test_a_folder_samples_with_int8_weights_and_a_compiled_decode_step(make_folder):
    """sample.py ckpt=FOLDER (a tied head, two samples): compile=true writes what eager decoding does
    (fp32: the same greedy text), and dtype=bf16 quantize=int8 compile=true compiles (no fallback) and
    says how long that took. (bf16 kernels fused otherwise round otherwise: near-ties may go either
    way, so its text is not compared.)"""
    folder = make_folder(2, tie=True)
    args = [f"ckpt={folder}", "prompt=ROMEO: how", "temperature=0", "max_new_tokens=20", "num_samples=2"]

    def run(*extra: str) -> tuple[list[str], str]:
        err = io.StringIO()
        return sample(compose("sample", SampleConfig, args + list(extra)), io.StringIO(), err), err.getvalue()

    eager, _ = run()
    compiled, err = run("compile=true")
    assert compiled == eager and len(eager) == 2 and "compile: the decode step in " in err
    fast, err = run("dtype=bf16", "quantize=int8", "compile=true")
    assert "compile: the decode step in " in err and "warning" not in err
    assert len(fast) == 2 and all(t.startswith("ROMEO: how") and len(t) > len("ROMEO: how") for t in fast)
