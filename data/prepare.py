"""Turn a corpus into token shards and meta.json under data/<name>/, once, in bounded memory.

    python -m data.prepare                                   # Tiny Shakespeare, characters
    python -m data.prepare data=shakespeare                  # Tiny Shakespeare, GPT-2 BPE
    python -m data.prepare data=text data.path=book.txt data.tokenizer=char data.name=book
    python -m data.prepare data=text data.path=book.txt data.tokenizer=bpe data.vocab_size=1024   # its own BPE
    python -m data.prepare data=fineweb_edu                  # 10B tokens of FineWeb-Edu, streamed from the Hub

The corpus is read a piece at a time (data/sources.py), tokenized by `workers` processes, and appended
to shards on disk (data/shards.py), so peak memory depends on the piece size, not on the corpus.
The validation split holds out `val_fraction` of the documents (of the pieces of a big text file), spread evenly,
with an end-of-text token (a newline at character level) between documents. A corpus of fewer than
MIN_DOCUMENTS documents that fits in SMALL_CHARS characters (Tiny Shakespeare: one document) is split
as nanoGPT splits it instead: the first 90% of its characters train, the last 10% validate.

Everything is written into a hidden .partial folder of the process's own that replaces data/<name> only
when complete: an interrupted preparation leaves the previous dataset (or nothing) and restarts cleanly
next time (killed between the two renames of the swap, the previous dataset is put back at the next
start). Processes that need one corpus at the same time (runs started together, torchrun jobs) take
turns on a lock file beside it: one prepares, the others wait and then find it prepared.
Training calls `prepare` itself, which does nothing while meta.json's fingerprint of the source matches.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import numpy as np

from data.config import DataConfig, DataError, dataset_dir, tokenizer_kind
from data.shards import FORMAT_VERSION, ShardWriter, load_meta, split_shards, token_dtype, write_meta
from data.sources import pieces, source_files
from data.bpe import train_bpe
from data.tokenizers import (BPETokenizer, CharTokenizer, GPT2Tokenizer, HFTokenizer, document_separator,
                             tokenizer_from_meta)
from runtime.runlog import Progress, duration
from runtime.threads import cores, free_cores

log = logging.getLogger(__name__)
SMALL_CHARS = 32_000_000  # a corpus up to this size is looked at whole before choosing how to split it
MIN_DOCUMENTS = 100  # fewer documents than this: hold out the last val_fraction of the text instead
TASK_CHARS = 4_000_000  # text per task handed to a tokenizer process


@dataclass
class PrepareConfig:
    """The settings of `python -m data.prepare`: which dataset (configs/data/*.yaml) to prepare."""

    data: DataConfig = field(default_factory=DataConfig)


# ----------------------------------------------------------------------------------------------
# Tokenizing in worker processes
# ----------------------------------------------------------------------------------------------

_tokenizer, _dtype = None, None  # each worker process's own tokenizer and token dtype, set by _start_worker
PARENT_CHECK_S = 0.5  # how often a worker looks whether the process that started it is still there


def _load_tokenizer(tokenizer_meta: dict) -> None:
    global _tokenizer, _dtype
    _tokenizer = tokenizer_from_meta(tokenizer_meta)
    _dtype = token_dtype(_tokenizer.vocab_size)


def _start_worker(tokenizer_meta: dict, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _load_tokenizer(tokenizer_meta)


def _exit_with_parent(parent: int) -> None:
    """A worker's watch: when the preparing process is gone (SIGKILL, the OOM killer, a scheduler), end this
    worker too. Nothing else would: it waits for work on a queue that no one writes to any more, and while
    it lives, so does multiprocessing's resource tracker, which waits for every user of its pipe to end."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _encode(texts: list[str]) -> list[np.ndarray]:
    return [_tokenizer.encode_array(t).astype(_dtype) for t in texts]  # the shards' dtype: less to send back


def encoded(tasks: Iterator[list[str]], tokenizer_meta: dict, workers: int) -> Iterator[list[np.ndarray]]:
    """Each task's token arrays, in order. At most 2 tasks per worker are in flight, so memory stays bounded."""
    if workers <= 1:
        _load_tokenizer(tokenizer_meta)
        yield from map(_encode, tasks)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(tokenizer_meta, os.getpid())) as pool:
        pending = deque()
        for task in tasks:
            pending.append(pool.submit(_encode, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def tokenizer_processes() -> int:
    """One per core that other programs leave free, at most 16 (runtime/threads.py), announced in a line."""
    workers, measured, _ = free_cores(min(16, len(cores())))
    log.info("tokenizer processes: %d (%s); data.workers=N sets them", workers, measured)
    return workers


# ----------------------------------------------------------------------------------------------
# The split: held-out documents, or nanoGPT's split by characters for a few documents
# ----------------------------------------------------------------------------------------------


def held_out(document: int, fraction: float) -> bool:
    """Document i is a validation document when round((i + 1) f) > round(i f): a fraction f of the
    documents, spread evenly, the first one early (with f = 0.1: documents 4, 14, 24, ...)."""
    return int((document + 1) * fraction + 0.5) > int(document * fraction + 0.5)


def by_documents(stream: Iterator[tuple[str, bool]], fraction: float) -> Iterator[tuple[str, str, bool]]:
    """(text, split, joins_previous): every piece is held out or not as a whole. A record is one piece,
    so this holds out documents; a big text file is many pieces, and its held-out pieces validate.
    A piece joins the text before it in its split only if it continues the very piece written before."""
    previous = None
    for i, (text, starts) in enumerate(stream):
        split = "val" if held_out(i, fraction) else "train"
        yield text, split, not starts and previous == split
        previous = split


def by_characters(documents: list[str], fraction: float) -> Iterator[tuple[str, str, bool]]:
    """nanoGPT's split of the documents joined by one separator each: the first 1 - f of the characters
    train, the rest validate. (text, split, joins_previous), as by_documents."""
    cut = int((sum(map(len, documents)) + len(documents) - 1) * (1 - fraction))
    position = 0
    for doc in documents:
        here = max(0, min(len(doc), cut - position))  # how much of this document falls before the cut
        if here:
            yield doc[:here], "train", False
        if here < len(doc):
            yield doc[here:], "val", False  # the first val text: nothing before it to separate from
        position += len(doc) + 1


def tasks_of(segments: Iterator[tuple[str, str, bool]], plan: deque) -> Iterator[list[str]]:
    """Group segments into tasks of about TASK_CHARS characters; plan gets (split, joins_previous,
    characters) of each segment, in order, for whoever writes the tasks' tokens."""
    task, size = [], 0
    for text, split, joins in segments:
        task.append(text)
        plan.append((split, joins, len(text)))
        size += len(text)
        if size >= TASK_CHARS:
            yield task
            task, size = [], 0
    if task:
        yield task


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------


def fingerprint(cfg: DataConfig, files: list[Path]) -> str:
    """What the prepared files depend on: the source files (name, size, modification time) or the Hub
    dataset, and the settings that change the tokens."""
    if cfg.tokenizer.startswith("hf:"):  # the tokenizer is a source file too
        tokenizer_file = Path(cfg.tokenizer[3:]).expanduser() / "tokenizer.json"
        files = [*files, tokenizer_file] if tokenizer_file.is_file() else files
    what = {"files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
            **{k: getattr(cfg, k) for k in ("tokenizer", "val_fraction", "text_field", "max_documents",
                                             "hf_dataset", "hf_config", "hf_split", "shard_tokens")},
            **({"vocab_size": cfg.vocab_size} if cfg.tokenizer == "bpe" else {})}  # other corpora keep their digest
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def check_shards(out_dir: Path, meta: dict) -> None:
    """Every shard meta.json lists is there with its size: matching meta but broken files say so."""
    for split in ("train", "val"):
        split_shards(out_dir, split, meta)


def has_source(cfg: DataConfig) -> bool:
    return bool(cfg.hf_dataset or cfg.path or cfg.url)


def source_of(cfg: DataConfig) -> str:
    """Which corpus a dataset is made of: the Hub dataset, the resolved file or folder, or the URL."""
    return cfg.hf_dataset or (str(Path(cfg.path).expanduser().resolve()) if cfg.path else cfg.url)


def prepared_corpora(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/meta.json") if not p.parent.name.startswith("."))


def already_prepared(cfg: DataConfig, out_dir: Path, digest: str) -> bool:
    """Whether out_dir holds this dataset already. A folder holding another corpus is never replaced:
    each corpus has its own name, and a run's data stays what it trained on."""
    if not (out_dir / "meta.json").exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise DataError(f"{out_dir} exists and is not a prepared dataset: choose another data.name (nothing "
                            "there was changed)")
        return False
    meta = load_meta(out_dir)
    theirs = meta.get("source_id", meta.get("source"))
    if theirs not in (source_of(cfg), cfg.path):
        raise DataError(f"{out_dir} holds another corpus, prepared from {theirs}: give {source_of(cfg)} its own "
                        f"name with data.name=NAME (nothing there was changed)")
    made, asked = tokens_of(meta.get("tokenizer"), meta.get("vocab_size")), tokens_of(tokenizer_kind(cfg.tokenizer),
                                                                                   cfg.vocab_size)
    if made != asked:  # another tokenizer's tokens of this corpus: its own folder, never this one replaced
        raise DataError(f"{out_dir} holds this corpus in {made} tokens; {asked} tokens get a folder of their own: "
                        f"add data.name={cfg.name}_{asked} (nothing there was changed)")
    if meta.get("fingerprint") == digest and meta.get("format_version") == FORMAT_VERSION:
        check_shards(out_dir, meta)
        log.info("%s is prepared already: %s", out_dir, summary(meta))
        return True
    log.info("%s was prepared from an older version of %s or with other settings: preparing it again", out_dir,
             theirs)
    return False


def tokens_of(kind: str, vocab_size) -> str:
    """char, gpt2, hf, or bpe with its size (bpe1024): which tokens a prepared corpus holds."""
    return f"bpe{vocab_size}" if kind == "bpe" else str(kind)


def prepared_before(cfg: DataConfig, out_dir: Path) -> Path:
    """A corpus named without its source (data=text data.name=NAME): what was prepared under that name."""
    if not (out_dir / "meta.json").exists():
        known = prepared_corpora(out_dir.parent)
        raise DataError(f"data.name={cfg.name} is not prepared yet under {out_dir.parent}: prepare it once with "
                        f"data.path=FILE_OR_FOLDER" + (f" (prepared: {', '.join(known)})" if known else ""))
    meta = load_meta(out_dir)
    check_shards(out_dir, meta)
    log.info("%s: prepared before from %s: %s", out_dir, meta.get("source"), summary(meta))
    return out_dir


def is_prepared(cfg: DataConfig) -> bool:
    """Whether data/<name> holds this dataset already (its fingerprint matches), without preparing it."""
    try:
        meta = load_meta(dataset_dir(cfg))
    except DataError:
        return False
    if not has_source(cfg):
        return True
    return meta.get("format_version") == FORMAT_VERSION and meta.get("fingerprint") == \
        fingerprint(cfg, source_files(cfg))


def prepare(cfg: DataConfig) -> Path:
    """Prepare cfg's dataset unless its files already match the source; return its folder. Without a
    source (data=text data.name=NAME), the dataset prepared under that name. One process at a time
    per corpus (`corpus_lock`): another that needs it meanwhile waits, then finds it prepared."""
    out_dir = dataset_dir(cfg)
    with corpus_lock(out_dir):
        old = out_dir.with_name(f".{out_dir.name}.old")
        if not out_dir.exists() and (old / "meta.json").exists():
            old.rename(out_dir)  # killed between the two renames below: the previous dataset comes back
        if not has_source(cfg):
            return prepared_before(cfg, out_dir)
        files = source_files(cfg)
        digest = fingerprint(cfg, files)
        if already_prepared(cfg, out_dir, digest):
            return out_dir
        for left in out_dir.parent.glob(f".{out_dir.name}.partial-{socket.gethostname()}*"):
            shutil.rmtree(left, ignore_errors=True)  # what a killed preparation on this machine left
        partial = out_dir.with_name(f".{out_dir.name}.partial-{socket.gethostname()}-{os.getpid()}")  # ours
        partial.mkdir(parents=True)
        try:
            meta = write_dataset(cfg, files, partial)
            write_meta(partial, {**meta, "fingerprint": digest})
            shutil.rmtree(old, ignore_errors=True)
            if out_dir.exists():
                out_dir.rename(old)
            partial.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    log.info("prepared %s: %s", out_dir, summary(meta))
    return out_dir


@contextmanager
def corpus_lock(out_dir: Path):
    """Hold data/.<name>.lock while checking or preparing data/<name>: an exclusive lock on that file
    (flock), which the operating system releases when its process ends, however it ends. A process
    killed while preparing leaves the file but not the lock: the next one takes it at once. Another
    process waits here, saying so once, while the lock is held."""
    import fcntl

    root, path = out_dir.parent, out_dir.with_name(f".{out_dir.name}.lock")
    made_root, made_lock = not root.exists(), not path.exists()
    root.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process preparing %s", out_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)  # blocks until that process is done (or dies)
        try:
            yield
        except BaseException:
            if made_lock:  # a refused first preparation (no network, a bad path) leaves no file, no folder
                path.unlink(missing_ok=True)
                if made_root and not any(root.iterdir()):
                    root.rmdir()
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_dataset(cfg: DataConfig, files: list[Path], out: Path) -> dict:
    """Tokenize the corpus into out/ (shards); return meta.json's content."""
    source = cfg.hf_dataset or str(cfg.path or cfg.url)
    stream = pieces(cfg, files)
    head, size = [], 0  # the start of the corpus, up to SMALL_CHARS characters
    for piece in stream:
        head.append(piece)
        size += len(piece[0])
        if size > SMALL_CHARS:
            break
    if size == 0:
        where = files[0] if len(files) == 1 else cfg.hf_dataset or "the source folder"
        raise DataError(f"{where} is empty: there is nothing to train on")
    whole = size <= SMALL_CHARS and sum(starts for _, starts in head) < MIN_DOCUMENTS
    if whole:  # few documents: nanoGPT's split by characters
        documents = []
        for text, starts in head:
            if starts or not documents:
                documents.append(text)
            else:
                documents[-1] += text
        segments = by_characters(documents, cfg.val_fraction)
    else:
        segments = by_documents(chain(head, stream), cfg.val_fraction)

    if cfg.tokenizer == "char":  # the vocabulary is the corpus's characters: one more pass to find them
        chars = set()
        for text, _ in (head if whole else pieces(cfg, files)):
            chars.update(text)
        several = not whole or len(documents) > 1
        tokenizer = CharTokenizer("".join(sorted(chars | {"\n"} if several else chars)))  # "\n": the separator
    elif cfg.tokenizer == "gpt2":
        tokenizer = GPT2Tokenizer()
    elif cfg.tokenizer == "bpe":  # trained on the train split only: a second pass over a large corpus
        train_texts = by_characters(documents, cfg.val_fraction) if whole else \
            by_documents(pieces(cfg, files), cfg.val_fraction)
        tokenizer = trained_bpe((text for text, split, _ in train_texts if split == "train"), cfg)
    else:
        tokenizer = HFTokenizer.from_folder(cfg.tokenizer.removeprefix("hf:"))
    separator = np.array(document_separator(tokenizer), dtype=np.int64)
    lengths, n_bytes = tokenizer.byte_lengths(), {"train": 0, "val": 0}  # each split's UTF-8 bytes, for bits per byte
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {split: ShardWriter(out, split, dtype, cfg.shard_tokens) for split in ("train", "val")}
    # a small corpus is tokenized in this process: starting workers would cost more than it saves
    workers = 1 if whole else cfg.workers or tokenizer_processes()
    plan, total_bytes = deque(), sum(f.stat().st_size for f in files) or None
    progress, started, chars = Progress(total_bytes), time.perf_counter(), 0
    for arrays in encoded(tasks_of(segments, plan), tokenizer.meta(), workers):
        for ids in arrays:
            split, joins, n_chars = plan.popleft()
            writer = writers[split]
            if not joins and writer.tokens and separator.size:
                writer.write(separator)
                n_bytes[split] += int(lengths[separator].sum())
            writer.write(ids)
            n_bytes[split] += int(lengths[ids].sum())
            chars += n_chars
        tokens, seconds = writers["train"].tokens + writers["val"].tokens, time.perf_counter() - started
        eta = f", ETA {duration(seconds * (total_bytes - chars) / chars)}" if total_bytes and chars else ""
        progress.update(chars, f"{tokens:,} tokens, {tokens / seconds:,.0f} tokens/s{eta}")
    progress.clear()
    shards = {split: w.close() for split, w in writers.items()}
    for split, w in writers.items():
        if not w.tokens:
            raise DataError(f"the {split} split of {cfg.name} is empty: the corpus has too few documents (or "
                            f"1M-character pieces) for val_fraction={cfg.val_fraction}; raise it")
    return {"format_version": FORMAT_VERSION, **tokenizer.meta(), "dtype": dtype.name, "shards": shards,
            "train_tokens": writers["train"].tokens, "val_tokens": writers["val"].tokens,
            "train_bytes": n_bytes["train"], "val_bytes": n_bytes["val"],
            "split": "characters" if whole else "documents", "val_fraction": cfg.val_fraction, "source": source,
            "source_id": source_of(cfg)}


def trained_bpe(train_texts: Iterator[str], cfg: DataConfig) -> BPETokenizer:
    """A byte-level BPE of cfg.vocab_size tokens trained on the train split's text (data/bpe.py), said in a line."""
    started = time.perf_counter()
    tokenizer = BPETokenizer(train_bpe(train_texts, cfg.vocab_size), source=f"trained on {source_of(cfg)}")
    if tokenizer.vocab_size < cfg.vocab_size:  # the trainer ran out of pairs seen twice or more
        raise DataError(f"data.vocab_size={cfg.vocab_size} is more than this text allows: its train split gives "
                        f"{tokenizer.vocab_size} tokens (the 256 bytes, a merge for each pair seen at least twice, "
                        f"<|endoftext|>); use data.vocab_size={tokenizer.vocab_size} or less, or more text")
    log.info("trained a %d-token BPE on the train split in %.1f s", tokenizer.vocab_size, time.perf_counter() - started)
    return tokenizer


def summary(meta: dict) -> str:
    per_token = f", {meta['val_bytes'] / meta['val_tokens']:.2f} bytes per val token" if meta.get("val_bytes") else ""
    return (f"{meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens, "
            f"{meta['tokenizer']} tokenizer, vocabulary {meta['vocab_size']:,}{per_token}")


def main() -> None:
    from runtime.config import run_command

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # what prepare did
    run_command("prepare", PrepareConfig, lambda cfg, overrides: prepare(cfg.data))


if __name__ == "__main__":
    main()
