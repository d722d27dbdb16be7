"""A BPE trained on the corpus (data.tokenizer=bpe, data/bpe.py), and bits per byte: the measure that
compares runs whatever their tokenizers (training/validator.py)."""

import json
import math
import shutil

import pytest
import torch

import plot as plot_command
from data.config import DataConfig
from data.loader import fixed_batches
from data.prepare import prepare
from data.shards import load_meta
from data.tokenizers import CharTokenizer, GPT2Tokenizer, HFTokenizer, tokenizer_from_meta
from runtime.config import compose
from runtime.processes import Processes
from tests.conftest import copy_tinyshakespeare
from tests.helpers import fingerprint, metrics, run_command
from train import TrainConfig, train
from training.corpus import prepare_data

TINY = ["model=tiny", "batch_size=4", "eval_batches=2", "log_interval=1", "eval_interval=2", "progress=false",
        "compile=false", "suggest_cpu_recipe=false", "plot=false"]
ODD = "Ünïcödé, 中文, tabs\tand 🙂 emoji\n"  # characters Tiny Shakespeare never has


def own_text(tmp_path, text: str, tokenizer: str = "bpe", **settings) -> tuple[DataConfig, dict]:
    """text prepared as data=text with this tokenizer under tmp_path/data: (its config, its meta.json)."""
    path = tmp_path / "text.txt"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    cfg = DataConfig(name=None, path=str(path), tokenizer=tokenizer, url=None, sha256=None,
                     root=str(tmp_path / "data"), **settings)
    return cfg, load_meta(prepare(cfg))


@pytest.fixture(scope="module")
def shakespeare_runs(tmp_path_factory):
    """Two tiny runs on Tiny Shakespeare's text: characters, and a 512-token BPE trained on it."""
    base = tmp_path_factory.mktemp("bpe")
    root = copy_tinyshakespeare(base / "data")
    text = root / "tinyshakespeare" / "input.txt"
    runs = {}
    for tokenizer in ("char", "bpe"):
        runs[tokenizer] = base / tokenizer
        extra = ["data.vocab_size=512"] if tokenizer == "bpe" else []
        train(compose("train", TrainConfig, [*TINY, "max_steps=4", "data=text", f"data.path={text}",
                                             f"data.tokenizer={tokenizer}", *extra, f"data.root={root}",
                                             f"out_dir={runs[tokenizer]}"]))
    return runs, root


def test_the_same_text_and_size_give_a_byte_identical_tokenizer_in_any_process(tinyshakespeare):
    script = ("import hashlib, sys; from data.bpe import train_bpe; "
              "text = open(sys.argv[1], encoding='utf-8').read()[:300_000]; "
              "print(hashlib.sha256(train_bpe([text], int(sys.argv[2])).encode()).hexdigest())")
    digests = [run_command("-c", script, str(tinyshakespeare), size).stdout.strip() for size in ("700", "700", "800")]
    assert len(digests[0]) == 64 and digests[0] == digests[1]  # two processes: the same bytes
    assert digests[2] != digests[0]  # another size: another tokenizer


def test_the_val_split_never_trains_the_tokenizer(tmp_path, tinyshakespeare):
    """A word that only the held-out text has is no merge; the same word in the train text is."""
    head = tinyshakespeare.read_text(encoding="utf-8")[:90_000]
    rare = "zyzzyva " * 1_250  # 10,000 characters: the last 10% of the text, the val split
    _, held_out = own_text(tmp_path / "a", head + rare, vocab_size=600)
    _, trained = own_text(tmp_path / "b", rare + head, vocab_size=600)

    def pieces(meta):
        tok = tokenizer_from_meta(meta)
        return {tok.decode([i]) for i in range(tok.vocab_size)}

    assert not any("zyz" in p for p in pieces(held_out))
    assert any("zyzz" in p for p in pieces(trained))  # the test can fail: seen in training, it is merged
    assert held_out["vocab_size"] == trained["vocab_size"] == 600


def test_any_text_encodes_and_decodes_back_even_characters_the_corpus_never_had(tmp_path, tinyshakespeare):
    _, meta = own_text(tmp_path, tinyshakespeare.read_text(encoding="utf-8")[:200_000], vocab_size=512)
    tok = tokenizer_from_meta(meta)
    assert tok.kind == "bpe" and tok.vocab_size == 512 and tok.eot == 0
    for text in (ODD, "ROMEO: But soft!", "", " \n\n  "):
        assert tok.decode(tok.encode(text)) == text
    common = "and the king, my lord, that I have"
    assert len(tok.encode(common)) < len(common) / 2  # merges learned from the text


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe", "hf"])
def test_each_tokens_bytes_add_up_to_the_texts_utf8_bytes(tmp_path, kind, tinyshakespeare):
    text = tinyshakespeare.read_text(encoding="utf-8")[:50_000] + ODD
    if kind == "char":
        tok = CharTokenizer.from_text(text)
    elif kind == "gpt2":
        tok = GPT2Tokenizer()
    elif kind == "bpe":
        tok = tokenizer_from_meta(own_text(tmp_path, text, vocab_size=400)[1])
    else:  # a Hugging Face byte-level tokenizer.json: GPT-2's, as export.py writes it
        tok = HFTokenizer(GPT2Tokenizer().hf_tokenizer().to_str())
    lengths = tok.byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert int(lengths[tok.encode(text)].sum()) == len(text.encode("utf-8"))
    if tok.eot is not None:
        assert lengths[tok.eot] == 0  # <|endoftext|> stands for no text


def test_bits_per_byte_is_the_loss_times_tokens_per_byte_over_ln2(shakespeare_runs):
    runs, root = shakespeare_runs
    for kind, run in runs.items():
        evals = metrics(run, "eval")
        assert len(evals) == 2  # steps 2 and 4
        folder = root / ("input_bpe512" if kind == "bpe" else "input_char")
        tok = tokenizer_from_meta(load_meta(folder))
        batches = fixed_batches(folder, "val", 32, 4, 2)  # the run's val batches: model=tiny's context 32
        tokens = sum(y.numel() for _, y in batches)
        n_bytes = sum(len(tok.decode(row.tolist()).encode("utf-8")) for _, y in batches for row in y)
        for e in evals:
            assert e["val_bpb"] == pytest.approx(e["val_loss"] * tokens / n_bytes / math.log(2), rel=1e-9)
        if kind == "char":  # Tiny Shakespeare is ASCII: a byte per character, bpb = nats / ln 2
            assert tokens == n_bytes
        else:
            assert n_bytes / tokens > 1.5  # a BPE token stands for several bytes
        log = (run / "train.log").read_text()
        assert f"val {evals[-1]['val_bpb']:.3f} (best " in log and "bits per byte" in log.splitlines()[-1]


def test_bits_per_byte_by_hand_on_a_tiny_text_of_many_bytes_per_character(tmp_path):
    """A text of 2- to 4-byte characters: bpb divides by its UTF-8 bytes, not by its characters."""
    text = "".join(f"café {i % 7} naïve 🙂 ÄÖÜ ß\n" for i in range(2000))
    cfg, meta = own_text(tmp_path, text, tokenizer="char")
    run = tmp_path / "run"
    train(compose("train", TrainConfig, [*TINY, "max_steps=2", "data=text", f"data.name={cfg.name}",
                                         f"data.root={tmp_path / 'data'}", f"out_dir={run}"]))
    tok = CharTokenizer(meta["chars"])
    batches = fixed_batches(tmp_path / "data" / cfg.name, "val", 32, 4, 2)
    chars = sum(y.numel() for _, y in batches)
    n_bytes = sum(len(tok.decode(row.tolist()).encode("utf-8")) for _, y in batches for row in y)
    assert n_bytes > 1.2 * chars  # many characters of two bytes or more
    last = metrics(run, "eval")[-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] * chars / n_bytes / math.log(2), rel=1e-9)
    assert meta["val_bytes"] > meta["val_tokens"]


def test_runs_of_two_tokenizers_are_plotted_in_bits_per_byte(shakespeare_runs, tmp_path):
    runs, _ = shakespeare_runs
    folders = [runs["char"], runs["bpe"]]
    drawn = [(str(f), plot_command.read_metrics(f)) for f in folders]
    converted = plot_command.in_bpb(drawn, folders, asked=False)
    assert converted is not None
    for (_, entries), folder in zip(converted, folders):
        val = [e["val_loss"] for e in entries if e["kind"] == "eval"]
        assert val == [e["val_bpb"] for e in metrics(folder, "eval")]
    assert plot_command.in_bpb(drawn[:1], folders[:1], asked=False) is None  # one tokenizer: losses
    out = plot_command.main([*map(str, folders), "--out", str(tmp_path / "compare.png")])
    assert out.is_file()


def test_a_bpe_run_samples_resumes_and_exports_with_its_tokenizer_and_no_argument(shakespeare_runs, tmp_path):
    runs, root = shakespeare_runs
    run = tmp_path / "run"
    shutil.copytree(runs["bpe"], run)
    sampled = run_command("sample.py", f"ckpt={run}", f"prompt=ROMEO {ODD.strip()}", "max_new_tokens=5", "seed=1")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith(f"ROMEO {ODD.strip()}")  # a prompt no character model could take
    resumed = run_command("train.py", f"resume={run}", "max_steps=6", "progress=false", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(run, "eval")[-1]["step"] == 6
    out = tmp_path / "export"
    exported = run_command("export.py", f"ckpt={run}", f"out={out}")
    assert exported.returncode == 0, exported.stderr
    assert "note: llama.cpp" in exported.stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(out))
    ours = tokenizer_from_meta(load_meta(root / "input_bpe512"))
    text = "ROMEO: But soft! " + ODD
    assert theirs(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
    assert theirs.decode(ours.encode(text)) == text
    # the model too: transformers' greedy continuation of a prompt is ropegpt's
    import io

    from sample import SampleConfig, sample

    greedy = sample(compose("sample", SampleConfig, [f"ckpt={run}", "prompt=ROMEO:", "temperature=0",
                                                     "max_new_tokens=12", "stream=false"]), io.StringIO(), io.StringIO())
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    prompt = theirs("ROMEO:")["input_ids"]
    new = model.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                         eos_token_id=None)[0].tolist()
    assert greedy[0] == theirs.decode(new)


def test_a_bpe_corpus_is_found_again_by_name_and_keeps_its_size(shakespeare_runs):
    _, root = shakespeare_runs
    cfg = compose("train", TrainConfig, ["data=text", "data.name=input_bpe512", f"data.root={root}"])
    found, _, meta = prepare_data(cfg.data, Processes())  # one process
    assert (found.tokenizer, found.vocab_size, meta["tokenizer"]) == ("bpe", 512, "bpe")


def test_a_corpus_prepared_before_bytes_were_counted_still_gets_bits_per_byte(tmp_path, tinyshakespeare):
    cfg, meta = own_text(tmp_path, tinyshakespeare.read_text(encoding="utf-8")[:100_000], tokenizer="char")
    assert meta["val_bytes"] == 10_000 and meta["train_bytes"] == 90_000  # ASCII: one byte a character
    folder = tmp_path / "data" / cfg.name
    old = {k: v for k, v in meta.items() if k not in ("train_bytes", "val_bytes")}
    (folder / "meta.json").write_text(json.dumps(old), encoding="utf-8")  # as an older ropegpt wrote it
    run = tmp_path / "run"
    train(compose("train", TrainConfig, [*TINY, "max_steps=2", "data=text", f"data.name={cfg.name}",
                                         f"data.root={tmp_path / 'data'}", f"out_dir={run}"]))
    last = metrics(run, "eval")[-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2), rel=1e-9)


@pytest.mark.parametrize("overrides,message", [
    (["data.vocab_size=512"], "data.vocab_size=512 is the size of a BPE trained on the corpus: give it with "
                              "data.tokenizer=bpe"),
    (["data.tokenizer=bpe", "data.vocab_size=10"], "data.vocab_size=10 must be at least 257"),
    # "some", " text", "\n": 3 + 4 merges make every word one token; 256 bytes + 7 + <|endoftext|> = 264
    (["data.tokenizer=bpe", "data.vocab_size=5000"], "data.vocab_size=5000 is more than this text allows: its "
                                                     "train split gives 264 tokens"),
])
def test_a_bad_vocabulary_size_is_one_line_and_exit_2_before_anything_is_written(tmp_path, overrides, message):
    text = tmp_path / "book.txt"
    text.write_text("some text\n" * 100, encoding="utf-8")
    before = fingerprint(tmp_path)
    r = run_command("-m", "data.prepare", "data=text", f"data.path={text}", f"data.root={tmp_path / 'data'}",
                    *overrides)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert fingerprint(tmp_path) == before and not (tmp_path / "data").exists()


def test_the_sha_of_a_prepared_bpe_corpus_repeats(tmp_path, tinyshakespeare):
    """Preparing the same text twice, in two folders, gives the same tokenizer and the same tokens."""
    text = tinyshakespeare.read_text(encoding="utf-8")[:100_000]
    _, first = own_text(tmp_path / "a", text, vocab_size=300)
    _, second = own_text(tmp_path / "b", text, vocab_size=300)
    assert first["tokenizer_json"] == second["tokenizer_json"]
    digest = lambda meta: [s["sha256"] for s in meta["shards"]["train"]]  # noqa: E731
    assert digest(first) == digest(second)


def test_another_tokenizer_of_a_prepared_corpus_never_replaces_it(tmp_path, tinyshakespeare):
    """data.tokenizer=bpe (or another size) on a corpus prepared in characters: one line naming a folder of
    its own, exit 2; the prepared tokens stay as they were."""
    cfg, _ = own_text(tmp_path, tinyshakespeare.read_text(encoding="utf-8")[:50_000], tokenizer="char")
    cfg_bpe, _ = own_text(tmp_path / "b", tinyshakespeare.read_text(encoding="utf-8")[:50_000], vocab_size=300)
    for folder, name, overrides, made, asked in [(tmp_path, cfg.name, ["data.tokenizer=bpe"], "char", "bpe1024"),
                                                 (tmp_path / "b", cfg_bpe.name, ["data.tokenizer=bpe",
                                                  "data.vocab_size=400"], "bpe300", "bpe400")]:
        before = fingerprint(folder / "data")
        r = run_command("-m", "data.prepare", "data=text", f"data.path={folder / 'text.txt'}", f"data.name={name}",
                        f"data.root={folder / 'data'}", *overrides)
        assert r.returncode == 2 and r.stderr.strip() == (
            f"error: {folder / 'data' / name} holds this corpus in {made} tokens; {asked} tokens get a folder of "
            f"their own: add data.name={name}_{asked} (nothing there was changed)")
        assert fingerprint(folder / "data") == before
