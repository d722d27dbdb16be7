"""Corpora larger than memory: streamed preparation, held-out documents, shards, workers, and a loader
whose index arithmetic holds past 2^31 tokens. Small local files stand in for the Hub's corpora."""

import json
import os
import random

import numpy as np
import pytest

import data.prepare as prepare_module
import data.sources as sources_module
from data.config import DataConfig, DataError
from data.loader import BatchSampler
from data.prepare import held_out, prepare
from data.shards import load_meta, split_shards, write_meta
from data.tokenizers import GPT2Tokenizer, tokenizer_from_meta
from runtime.config import compose

WORDS = "the of and to in is was for that with as his on by at from he it an are were which this be or".split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))).capitalize() + "." for _ in range(n)]


def fineweb_like(folder, docs: list[str], per_file: int = 60) -> None:
    """.jsonl files of records shaped like FineWeb-Edu's (text plus metadata fields)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(docs), per_file):
        with open(folder / f"part-{i // per_file:03d}.jsonl", "w") as f:
            for j, text in enumerate(docs[i : i + per_file]):
                f.write(json.dumps({"text": text, "id": f"<urn:{i + j}>", "url": "https://example.org", "score": 3.1}) + "\n")


def openwebtext_like(path, docs: list[str]) -> None:
    """A .parquet file of {"text": ...} records, as the Hub's OpenWebText."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs}), path)


def config(tmp_path, **kw) -> DataConfig:
    return DataConfig(**{"name": "corpus", "url": None, "sha256": None, "root": str(tmp_path / "prepared"), "workers": 1,
                         **kw})


def tokens(out, split: str) -> np.ndarray:
    meta = load_meta(out)
    return np.concatenate([np.fromfile(p, dtype=meta["dtype"]) for p, _ in split_shards(out, split, meta)])


def test_held_out_documents_are_exactly_the_fraction_and_spread_evenly():
    for fraction in (0.1, 0.05, 0.3):
        val = [i for i in range(1000) if held_out(i, fraction)]
        assert len(val) == round(1000 * fraction)
        assert max(np.diff(val)) <= int(1 / fraction) + 1  # no long run without a validation document


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_folder_of_records_holds_out_documents_with_end_of_text_between_them(tmp_path, kind):
    docs = documents(250)
    if kind == "jsonl":
        fineweb_like(tmp_path / "src", docs)
    else:
        (tmp_path / "src").mkdir()
        openwebtext_like(tmp_path / "src" / "train.parquet", docs)
    out = prepare(config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src")))
    meta = load_meta(out)
    assert meta["split"] == "documents"
    tok, eot = GPT2Tokenizer(), GPT2Tokenizer().eot
    for split, chosen in (("train", [d for i, d in enumerate(docs) if not held_out(i, 0.1)]),
                          ("val", [d for i, d in enumerate(docs) if held_out(i, 0.1)])):
        expected = []
        for d in chosen:
            expected += ([eot] if expected else []) + tok.encode(d)
        assert tokens(out, split).tolist() == expected, split  # every document, whole, in order, EOT between
    assert len([i for i in range(250) if held_out(i, 0.1)]) == 25


def test_two_workers_write_exactly_the_shards_of_one(tmp_path):
    fineweb_like(tmp_path / "src", documents(300))
    one = load_meta(prepare(config(tmp_path / "a", tokenizer="gpt2", path=str(tmp_path / "src"), workers=1)))
    two = load_meta(prepare(config(tmp_path / "b", tokenizer="gpt2", path=str(tmp_path / "src"), workers=2)))
    assert one["shards"] == two["shards"]  # names, counts and sha256 of every shard


def test_shards_split_at_shard_tokens_and_their_checksums_are_the_files(tmp_path):
    import hashlib

    fineweb_like(tmp_path / "src", documents(300))
    out = prepare(config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src"), shard_tokens=1000))
    meta = load_meta(out)
    train = meta["shards"]["train"]
    assert len(train) > 3 and all(s["tokens"] == 1000 for s in train[:-1]) and 0 < train[-1]["tokens"] <= 1000
    assert sum(s["tokens"] for s in train) == meta["train_tokens"]
    for s in train + meta["shards"]["val"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]


def test_a_big_text_file_is_read_in_pieces_and_each_piece_is_a_document(tmp_path, monkeypatch):
    """With the size limits scaled down 10,000 times: a 'large' .txt is streamed in pieces cut after a newline."""
    monkeypatch.setattr(prepare_module, "SMALL_CHARS", 3200)
    monkeypatch.setattr(sources_module, "PIECE_CHARS", 400)
    text = "\n".join(documents(400, seed=1)) + "\n"
    (tmp_path / "big.txt").write_text(text)
    out = prepare(config(tmp_path, path=str(tmp_path / "big.txt")))
    meta = load_meta(out)
    assert meta["split"] == "documents"
    pieces = list(sources_module.text_pieces(tmp_path / "big.txt"))
    assert "".join(p for p, _ in pieces) == text and all(p.endswith("\n") for p, _ in pieces)
    assert [starts for _, starts in pieces] == [True] + [False] * (len(pieces) - 1)  # one document
    tok = tokenizer_from_meta(meta)
    # pieces of one document are contiguous: no separator; the held-out pieces make the validation text
    held = [p for i, (p, _) in enumerate(pieces) if held_out(i, 0.1)]
    assert len(held) >= 2
    assert tok.decode(tokens(out, "val").tolist()) == "\n".join(held)  # pieces not contiguous: a separator
    train = [p for i, (p, _) in enumerate(pieces) if not held_out(i, 0.1)]
    assert len(tokens(out, "train")) == sum(map(len, train)) + len(held)  # one separator per gap


def test_a_single_file_of_any_name_is_text_and_empty_records_are_no_documents(tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\nSome text, with more text.\n" * 20)
    out = prepare(config(tmp_path, path=str(tmp_path / "notes.md")))
    assert load_meta(out)["train_tokens"] + load_meta(out)["val_tokens"] == 20 * len("# Notes\nSome text, with more text.\n")
    docs = documents(150)
    fineweb_like(tmp_path / "src", [d if i % 3 else "" for i, d in enumerate(docs)])  # a third of them empty
    meta = load_meta(prepare(config(tmp_path, name="c2", tokenizer="gpt2", path=str(tmp_path / "src"))))
    kept = [d for i, d in enumerate(docs) if i % 3]
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(GPT2Tokenizer().encode(d)) for d in kept) + len(kept) - 2


def test_max_documents_reads_only_the_first_documents(tmp_path):
    docs = documents(500)
    fineweb_like(tmp_path / "src", docs)
    out = prepare(config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src"), max_documents=200))
    eot = GPT2Tokenizer().eot
    n_train_docs = len([i for i in range(200) if not held_out(i, 0.1)])
    assert (tokens(out, "train") == eot).sum() == n_train_docs - 1


def test_an_interrupted_preparation_leaves_the_previous_dataset_and_restarts_cleanly(tmp_path, monkeypatch):
    fineweb_like(tmp_path / "src", documents(300))
    cfg = config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src"), shard_tokens=500)
    out = prepare(cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fineweb_like(tmp_path / "src", documents(300, seed=7))  # the source changes: preparing again

    calls = {"n": 0}
    original = prepare_module.ShardWriter.write

    def dies_midway(self, ids):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt  # Ctrl-C, a kill: halfway through writing
        original(self, ids)

    monkeypatch.setattr(prepare_module.ShardWriter, "write", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous dataset, untouched
    assert sorted(p.name for p in out.parent.iterdir() if p.suffix != ".lock") == ["corpus"]  # no partial folder left
    monkeypatch.undo()
    again = load_meta(prepare(cfg))
    assert again["train_tokens"] != json.loads(before["meta.json"])["train_tokens"] or again["shards"] != \
        json.loads(before["meta.json"])["shards"]


def test_a_folder_that_is_not_a_prepared_dataset_is_never_replaced(tmp_path):
    fineweb_like(tmp_path / "src", documents(150))
    mine = tmp_path / "prepared" / "corpus"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(DataError, match="exists and is not a prepared dataset: choose another data.name"):
        prepare(config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src")))
    assert (mine / "notes.txt").read_text() == "my notes"


def test_a_record_without_the_text_field_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text(json.dumps({"content": "hello"}) + "\n")
    with pytest.raises(DataError, match="has no text field 'text' .*'content'.*: set data.text_field"):
        prepare(config(tmp_path, tokenizer="gpt2", path=str(tmp_path / "src")))


@pytest.mark.parametrize("name,dataset,subset", [("fineweb_edu", "HuggingFaceFW/fineweb-edu", "sample-10BT"),
                                                  ("openwebtext", "Skylion007/openwebtext", None)])
def test_a_named_corpus_streams_from_the_hub_through_the_same_path(tmp_path, monkeypatch, name, dataset, subset):
    """The Hub cannot be reached here: load_dataset is handed a local parquet file of the same shape."""
    import datasets

    original = datasets.load_dataset
    docs = documents(120)
    openwebtext_like(tmp_path / "local.parquet", docs)
    asked = {}

    def load_dataset(path, name=None, split=None, streaming=False, **kw):
        asked.update(path=path, name=name, split=split, streaming=streaming)
        return original("parquet", data_files=str(tmp_path / "local.parquet"), split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    from train import TrainConfig

    cfg = compose("train", TrainConfig, [f"data={name}", f"data.root={tmp_path / 'prepared'}", "data.val_fraction=0.1"]).data
    out = prepare(cfg)
    assert asked == {"path": dataset, "name": subset, "split": "train", "streaming": True}
    meta = load_meta(out)
    assert meta["tokenizer"] == "gpt2" and meta["split"] == "documents"
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(GPT2Tokenizer().encode(d)) for d in docs) + 118


# ---------------------------------------------------------------------------------------------
# The loader over shards
# ---------------------------------------------------------------------------------------------


def counting_shards(tmp_path, sizes: list[int]):
    """Shards whose tokens count up globally (shard 1 starts where shard 0 ended), mod 65,536."""
    out = tmp_path / "shards"
    out.mkdir()
    shards, start = [], 0
    for i, n in enumerate(sizes):
        (np.arange(start, start + n) % 65536).astype(np.uint16).tofile(out / f"train_{i:05d}.bin")
        shards.append({"file": f"train_{i:05d}.bin", "tokens": n, "sha256": ""})
        start += n
    write_meta(out, {"format_version": 2, "tokenizer": "char", "vocab_size": 65536, "dtype": "uint16",
                     "shards": {"train": shards, "val": shards}, "train_tokens": start, "val_tokens": start})
    return out


def test_windows_stay_inside_one_shard_and_every_shard_is_drawn(tmp_path):
    out = counting_shards(tmp_path, [100, 5, 300, 50])  # the 5-token shard is too short for a window of 9
    sampler = BatchSampler(out, "train", block_size=8, batch_size=64, seed=0)
    firsts = set()
    for _ in range(50):
        x, y = sampler.next_batch()
        assert (y[:, :-1] == x[:, 1:]).all()
        assert ((x[:, 1:] - x[:, :-1]) == 1).all()  # consecutive: never across a shard boundary
        firsts |= {int(v) for v in x[:, 0]}
    shard_of = lambda t: 0 if t < 100 else 1 if t < 105 else 2 if t < 405 else 3  # noqa: E731
    assert {shard_of(t) for t in firsts} == {0, 2, 3}
    assert max(firsts) <= 455 - 9 and min(firsts) >= 0


def test_the_loader_reads_windows_past_two_to_the_31_tokens_of_a_sparse_file(tmp_path):
    """A 5 GiB shard (2.7 billion uint16 tokens, on disk as a sparse file): starts above 2^31 and 2^32
    bytes index the right tokens, and the draws reach the end of the file."""
    out = tmp_path / "huge"
    out.mkdir()
    n = 5 * 2**30 // 2  # tokens
    path = out / "train_00000.bin"
    with open(path, "wb") as f:
        f.truncate(2 * n)  # sparse: zeros that take no disk space
        for at in (2**31 + 7, n - 1000):  # a known run of tokens at two far positions
            f.seek(2 * at)
            f.write((np.arange(1000) + 1).astype(np.uint16).tobytes())
    shards = [{"file": path.name, "tokens": n, "sha256": ""}]
    write_meta(out, {"format_version": 2, "tokenizer": "char", "vocab_size": 65536, "dtype": "uint16",
                     "shards": {"train": shards, "val": shards}, "train_tokens": n, "val_tokens": n})
    sampler = BatchSampler(out, "train", block_size=16, batch_size=4, seed=0)
    windows = sampler.windows(np.array([2**31 + 7, n - 1000, n - 17, 0], dtype=np.int64))
    assert windows[0].tolist() == list(range(1, 18)) and windows[1].tolist() == list(range(1, 18))
    assert windows[2].tolist() == list(range(984, 1001)) and windows[3].tolist() == [0] * 17
    assert sampler.first_start[-1] == n - 16  # every start, as one int64 range
    for _ in range(20):
        x, _ = sampler.next_batch()
        assert x.shape == (4, 16)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_the_loader_stays_flat_in_memory_over_many_shards(tmp_path):
    out = counting_shards(tmp_path, [2**22] * 8)  # 8 shards of 8 MiB
    sampler = BatchSampler(out, "train", block_size=256, batch_size=64, seed=0)
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page  # noqa: E731
    sampler.next_batch()
    before = rss()
    for _ in range(300):
        sampler.next_batch()
    assert rss() - before < 8 * 2**20  # far less than the 64 MiB of shards it read from
