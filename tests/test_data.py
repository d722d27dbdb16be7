"""The data pipeline: tokenizers, preparation, batches, downloads, and clear errors for bad input."""

import http.server
import os
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from data.config import DataConfig, DataError
from data.download import download
from data.loader import BatchSampler, fixed_batches
from data.prepare import prepare
from data.shards import ShardWriter, load_meta, split_shards, write_meta
from data.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_meta
from tests.helpers import run_command


def shakespeare(root: Path, tokenizer: str = "char") -> DataConfig:
    return DataConfig(name=f"shakespeare_{tokenizer}", tokenizer=tokenizer, root=str(root))


def text_config(root: Path, path: Path, tokenizer: str = "char", name: str = "mytext") -> DataConfig:
    return DataConfig(name=name, tokenizer=tokenizer, path=str(path), url=None, sha256=None, root=str(root))


def write_tokens(out_dir: Path, train: np.ndarray, val: np.ndarray, tokenizer: str = "char",
                 shard_tokens: int = 10**9) -> Path:
    """A prepared dataset with the given token ids, written the way `prepare` writes one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = {}
    for split, ids in (("train", train), ("val", val)):
        writer = ShardWriter(out_dir, split, np.uint16, shard_tokens)
        writer.write(ids)
        shards[split] = writer.close()
    write_meta(out_dir, {"format_version": 2, "tokenizer": tokenizer, "vocab_size": 65536, "dtype": "uint16",
                         "shards": shards, "train_tokens": len(train), "val_tokens": len(val)})
    return out_dir


def tokens_of(out_dir: Path, split: str) -> np.ndarray:
    """All the token ids of a prepared split, its shards in order."""
    meta = load_meta(out_dir)
    return np.concatenate([np.fromfile(p, dtype=meta["dtype"]) for p, _ in split_shards(out_dir, split, meta)])


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trips_the_whole_corpus(tinyshakespeare):
    text = tinyshakespeare.read_text()
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65 and tok.eot is None
    ids = tok.encode(text)
    assert len(ids) == len(text) == 1_115_394
    assert tok.decode(ids) == text


def test_char_tokenizer_names_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(DataError, match=r"2 character\(s\) not in the 8-character vocabulary: 'X', 'é'"):
        tok.encode("hello Xé")


def test_bpe_tokenizer_agrees_with_tiktoken_called_directly(tinyshakespeare):
    text = tinyshakespeare.read_text()[:100_000] + " <|endoftext|> is plain text here"
    tok, enc = GPT2Tokenizer(), tiktoken.get_encoding("gpt2")
    ids = tok.encode(text)
    assert ids == enc.encode_ordinary(text)
    assert tok.decode(ids) == enc.decode(ids) == text
    assert (tok.vocab_size, tok.eot) == (50257, 50256)


def test_tokenizer_is_rebuilt_from_meta(tinyshakespeare):
    tok = CharTokenizer.from_text(tinyshakespeare.read_text())
    again = tokenizer_from_meta(tok.meta())
    assert again.chars == tok.chars
    assert isinstance(tokenizer_from_meta({"tokenizer": "gpt2"}), GPT2Tokenizer)
    with pytest.raises(DataError, match="no usable tokenizer"):
        tokenizer_from_meta({"vocab_size": 65})


# ---------------------------------------------------------------------------------------------
# Preparation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer,train,val", [("char", 1_003_854, 111_540), ("gpt2", 301_966, 36_059)])
def test_prepared_token_counts_match_nanogpt(data_root, tokenizer, train, val):
    out = prepare(shakespeare(data_root, tokenizer))
    meta = load_meta(out, tokenizer)
    assert (meta["train_tokens"], meta["val_tokens"]) == (train, val)
    assert meta["dtype"] == "uint16" and meta["split"] == "characters"  # one document: nanoGPT's split
    assert (out / "train_00000.bin").stat().st_size == 2 * train
    ids = tokens_of(out, "val")
    text = (data_root / "tinyshakespeare/input.txt").read_text()
    assert tokenizer_from_meta(meta).decode(ids.tolist()) == text[int(len(text) * 0.9) :]


def test_prepare_is_skipped_when_the_files_match_and_redone_when_the_source_changes(tmp_path):
    src = tmp_path / "book.txt"
    src.write_text("to be or not to be, that is the question\n" * 50)
    cfg = text_config(tmp_path, src)
    out = prepare(cfg)
    stamp = (out / "train_00000.bin").stat().st_mtime_ns
    prepare(cfg)
    assert (out / "train_00000.bin").stat().st_mtime_ns == stamp  # nothing rewritten
    src.write_text("something else entirely\n" * 100)
    prepare(cfg)
    meta = load_meta(out)
    assert meta["train_tokens"] + meta["val_tokens"] == len("something else entirely\n" * 100)


def test_prepare_reads_a_folder_of_files_in_sorted_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bbbb" * 20)
    (folder / "sub" / "c.txt").write_text("cccc" * 20)
    (folder / "a.txt").write_text("aaaa" * 20)
    out = prepare(text_config(tmp_path, folder))
    meta = load_meta(out)
    ids = np.concatenate([tokens_of(out, s) for s in ("train", "val")])
    text = tokenizer_from_meta(meta).decode(ids.tolist())
    assert text == "\n".join(["aaaa" * 20, "bbbb" * 20, "cccc" * 20])


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def counting(tmp_path) -> Path:
    """A dataset whose tokens are 0, 1, 2, ...: every window is a run of consecutive integers."""
    return write_tokens(tmp_path / "counting", np.arange(5000), np.arange(1000))


def test_targets_are_inputs_shifted_by_one(counting):
    x, y = BatchSampler(counting, "train", block_size=16, batch_size=8, seed=0).next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # a contiguous window of the file
    assert torch.equal(y, x + 1)  # the next token at every position


def test_windows_cover_the_whole_file_and_never_run_past_it(counting):
    sampler = BatchSampler(counting, "val", block_size=10, batch_size=500, seed=0)
    starts = torch.cat([sampler.next_batch()[0][:, 0] for _ in range(20)])
    assert starts.min() == 0 and starts.max() == 1000 - 11  # last window ends on the last token


def test_the_same_seed_gives_the_same_batches(counting):
    a = [BatchSampler(counting, "train", 16, 4, seed=7).next_batch()[0] for _ in range(2)]
    b = BatchSampler(counting, "train", 16, 4, seed=8).next_batch()[0]
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], b)


def test_a_restored_sampler_state_continues_the_same_sequence(counting):
    straight = BatchSampler(counting, "train", 16, 4, seed=3)
    expected = [straight.next_batch()[0] for _ in range(6)]
    first = BatchSampler(counting, "train", 16, 4, seed=3)
    got = [first.next_batch()[0] for _ in range(3)]
    state = first.state_dict()
    resumed = BatchSampler(counting, "train", 16, 4, seed=999)
    resumed.load_state_dict(state)
    got += [resumed.next_batch()[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_fixed_evaluation_batches_are_the_same_every_time(counting):
    a = fixed_batches(counting, "val", 16, 4, n_batches=3)
    b = fixed_batches(counting, "val", 16, 4, n_batches=3)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], a[1][0])  # three different batches, not one repeated


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_sampler_memory_does_not_grow_with_the_pages_it_reads(tmp_path):
    """Reading random windows all over a 64 MiB file leaves resident memory where it was (< 4 MiB more).

    With one long-lived memory map instead, resident memory grows by about 12 MiB here.
    """
    n = 32 * 2**20  # 64 MiB of uint16 tokens
    out = write_tokens(tmp_path / "big", np.zeros(n, dtype=np.uint16), np.zeros(100, dtype=np.uint16))
    sampler = BatchSampler(out, "train", block_size=256, batch_size=64, seed=0)
    sampler.next_batch()
    before = resident_bytes()
    for _ in range(400):  # 25,600 windows: most of the file's 16,384 pages
        sampler.next_batch()
    assert resident_bytes() - before < 4 * 2**20


# ---------------------------------------------------------------------------------------------
# Downloads, against a server on 127.0.0.1
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def http_server():
    """Serves BODY at /input.txt and 404 elsewhere; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/input.txt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


BODY = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100
BODY_SHA256 = __import__("hashlib").sha256(BODY).hexdigest()


def test_download_succeeds_and_verifies_the_checksum(tmp_path, http_server):
    dest = tmp_path / "ts" / "input.txt"
    assert download(f"{http_server}/input.txt", dest, BODY_SHA256) == dest
    assert dest.read_bytes() == BODY
    assert os.listdir(dest.parent) == ["input.txt"]  # no temporary file left


def test_a_checksum_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path, http_server):
    dest = tmp_path / "ts" / "input.txt"
    with pytest.raises(DataError, match=rf"sha256 {BODY_SHA256}, expected 0000.*put it at {dest}"):
        download(f"{http_server}/input.txt", dest, "0" * 64)
    assert os.listdir(tmp_path) == []


def test_an_unreachable_server_is_a_clear_error_and_leaves_nothing(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "ts" / "input.txt"
    with pytest.raises(DataError, match=rf"could not download .*put it at {dest}"):
        download(f"http://127.0.0.1:{port}/input.txt", dest, BODY_SHA256, timeout=5)
    assert os.listdir(tmp_path) == []


def test_a_missing_remote_file_is_a_clear_error(tmp_path, http_server):
    with pytest.raises(DataError, match="could not download .*404"):
        download(f"{http_server}/nope.txt", tmp_path / "input.txt", BODY_SHA256)
    assert os.listdir(tmp_path) == []


def test_a_wrong_file_already_in_place_is_reported_and_kept(tmp_path, http_server):
    dest = tmp_path / "input.txt"
    dest.write_text("my own notes")
    with pytest.raises(DataError, match="not the right file"):
        download(f"{http_server}/input.txt", dest, BODY_SHA256)
    assert dest.read_text() == "my own notes"


def test_shakespeare_is_downloaded_by_prepare_when_missing(tmp_path, http_server):
    cfg = DataConfig(name="tiny", root=str(tmp_path), url=f"{http_server}/input.txt", sha256=BODY_SHA256)
    out = prepare(cfg)
    assert (tmp_path / "tinyshakespeare/input.txt").read_bytes() == BODY
    meta = load_meta(out, "char")
    assert meta["train_tokens"] + meta["val_tokens"] == len(BODY)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear message
# ---------------------------------------------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt is empty"):
        prepare(text_config(tmp_path, tmp_path / "empty.txt"))


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such file or folder: .*nothere.txt"):
        prepare(text_config(tmp_path, tmp_path / "nothere.txt"))


def test_a_non_utf8_file_is_refused(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt is not UTF-8"):
        prepare(text_config(tmp_path, tmp_path / "latin1.txt"))


def test_a_text_shorter_than_block_size_plus_one_is_refused(tmp_path):
    (tmp_path / "short.txt").write_text("abcdefghij" * 10)  # 100 characters: 10 in val
    out = prepare(text_config(tmp_path, tmp_path / "short.txt"))
    BatchSampler(out, "val", block_size=9, batch_size=2, seed=0).next_batch()  # 10 tokens are enough
    with pytest.raises(DataError, match=r"holds 10 tokens, fewer than block_size \+ 1 = 11"):
        BatchSampler(out, "val", block_size=10, batch_size=2, seed=0)


def test_a_corrupt_bin_is_refused(counting):
    with open(counting / "train_00000.bin", "ab") as f:
        f.write(b"\x00")  # 10,001 bytes: not a whole number of uint16 tokens
    with pytest.raises(DataError, match="corrupt: 10001 bytes is not a whole number of uint16 tokens"):
        BatchSampler(counting, "train", 16, 4, seed=0)


def test_a_truncated_bin_is_refused(counting):
    data = (counting / "train_00000.bin").read_bytes()
    (counting / "train_00000.bin").write_bytes(data[:4000])
    with pytest.raises(DataError, match="holds 2000 tokens but meta.json says 5000"):
        BatchSampler(counting, "train", 16, 4, seed=0)


def test_a_truncated_bin_is_reported_even_when_preparation_is_skipped(tmp_path):
    (tmp_path / "t.txt").write_text("some text to learn from. " * 40)
    cfg = text_config(tmp_path, tmp_path / "t.txt")
    out = prepare(cfg)
    (out / "val_00000.bin").write_bytes((out / "val_00000.bin").read_bytes()[:-2])
    with pytest.raises(DataError, match="val_00000.bin holds .* tokens but meta.json says"):
        prepare(cfg)


def test_a_meta_json_from_another_tokenizer_is_refused(counting):
    with pytest.raises(DataError, match="written for tokenizer 'char', but tokenizer 'gpt2' was asked for"):
        load_meta(counting, "gpt2")


@pytest.mark.parametrize("bad,message", [(dict(tokenizer="bytes"), "tokenizer='bytes' must be one of char, gpt2, bpe"),
                                         (dict(val_fraction=1.0), "val_fraction=1.0 must be between 0 and 1"),
                                         (dict(name="a/b"), "name='a/b' must be a folder name")])
def test_a_bad_data_setting_is_refused_where_it_is_defined(bad, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**bad)


def run_prepare(*overrides: str) -> subprocess.CompletedProcess:
    return run_command("-m", "data.prepare", *overrides)


def test_prepare_command_exits_2_with_the_message_and_no_traceback(tmp_path):
    r = run_prepare("data=text", f"data.path={tmp_path}/missing.txt", f"data.root={tmp_path}")
    assert r.returncode == 2
    assert f"error: no such file or folder: {tmp_path}/missing.txt" in r.stderr
    assert "Traceback" not in r.stderr


def test_prepare_command_rejects_a_wrong_type_at_compose_time(tmp_path):
    r = run_prepare("data.val_fraction=abc", f"data.root={tmp_path}")
    assert r.returncode != 0
    assert "data.val_fraction" in r.stderr and "could not be converted to Float" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_prepare_command_prepares_a_text_file(tmp_path):
    (tmp_path / "poem.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 30)
    r = run_prepare("data=text", f"data.path={tmp_path}/poem.txt", "data.name=poem", f"data.root={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "poem: 1,215 train and 135 val tokens, char tokenizer, vocabulary 30" in r.stdout
    r = run_prepare("data=text", f"data.path={tmp_path}/poem.txt", "data.name=poem", f"data.root={tmp_path}")
    assert "poem is prepared already: 1,215 train" in r.stdout


def test_a_refused_download_makes_no_folder(tmp_path):
    """Port 9 refuses on 127.0.0.1: the folders dest would need are not made (data.root=NEW leaves no empty
    NEW/tinyshakespeare/)."""
    dest = tmp_path / "new" / "tinyshakespeare" / "input.txt"
    with pytest.raises(DataError, match=rf"could not download http://127.0.0.1:9/x: .*put it at {dest}"):
        download("http://127.0.0.1:9/x", dest, None, timeout=5)
    assert os.listdir(tmp_path) == []  # neither new/ nor a temporary file


def test_a_refused_first_preparation_creates_nothing(tmp_path):
    """data.root=NEW with no network: one line, exit 2, and no NEW/ (no empty folder, no lock file)."""
    r = run_command("-m", "data.prepare", f"data.root={tmp_path / 'new'}", "data.url=http://127.0.0.1:9/input.txt",
                    "data.sha256=null")
    assert r.returncode == 2 and "could not download http://127.0.0.1:9/input.txt" in r.stderr
    assert "Traceback" not in r.stderr and os.listdir(tmp_path) == []
