"""The prepared format: token shards on disk, and meta.json that lists them.

data/<name>/ holds train_00000.bin, train_00001.bin, ..., val_00000.bin, ...: token ids as raw
little-endian uint16 (uint32 for vocabularies over 65,536), at most `shard_tokens` per file, and
meta.json with the tokenizer, the dtype, and for each split its shards' names, token counts and
sha256 checksums. No pickle anywhere.

A disk that fills while writing them stops with one line (runtime.files.DiskFullError) that names the
dataset's folder and the space it needs; data/prepare.py then removes its partial folder, and a
dataset prepared before is left as it was.
"""

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from data.config import DataError, tokenizer_kind
from runtime.files import disk_full, disk_full_error, free_space

FORMAT_VERSION = 2


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class ShardWriter:
    """Appends token arrays to <split>_NNNNN.bin files of at most shard_tokens tokens, hashing as it goes."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.split, self.dtype, self.shard_tokens = out_dir, split, np.dtype(dtype), shard_tokens
        self.shards: list[dict] = []  # {"file", "tokens", "sha256"} of the finished ones
        self.file, self.hash, self.count = None, None, 0

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards) + self.count

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        with unless_disk_full(self.out_dir, ids.nbytes, on_full=self.abandon):
            self.append(ids)

    def append(self, ids: np.ndarray) -> None:
        while len(ids):
            if self.file is None:
                name = f"{self.split}_{len(self.shards):05d}.bin"
                self.file, self.hash, self.count, self.name = open(self.out_dir / name, "wb"), hashlib.sha256(), 0, name
            take = ids[: self.shard_tokens - self.count]
            data = take.tobytes()
            self.file.write(data)
            self.hash.update(data)
            self.count += len(take)
            ids = ids[len(take):]
            if self.count == self.shard_tokens:
                self.finish_shard()

    def finish_shard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.shards.append({"file": self.name, "tokens": self.count, "sha256": self.hash.hexdigest()})
            self.file, self.count = None, 0

    def close(self) -> list[dict]:
        with unless_disk_full(self.out_dir, 0, on_full=self.abandon):
            self.finish_shard()  # closing writes what the file still buffers
        return self.shards

    def abandon(self) -> None:
        """Close the open shard without writing more (the disk refused it); its file is left to the caller."""
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:  # the bytes it still held: the disk refuses them again
                pass


@contextmanager
def unless_disk_full(out_dir: Path, pending: int, on_full=lambda: None) -> Iterator[None]:
    """Run the body, which writes `pending` bytes into out_dir; a full disk calls on_full() and becomes a
    DiskFullError naming the dataset's folder, more than the bytes out_dir holds already (or pending) as
    the space needed, and the space free once data/prepare.py has removed its partial folder. Other
    errors pass unchanged."""
    try:
        yield
    except OSError as e:
        if not disk_full(e):
            raise
        on_full()
        folder, written = shown_folder(out_dir), sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
        removed = written if folder != out_dir else 0  # prepare's partial folder goes, with its bytes
        free = free_space(out_dir)
        then = ("free some space, or give data.root= on another disk, and prepare again; nothing prepared before "
                "was changed")
        raise disk_full_error(folder, "preparing its token shards", max(written, pending), then, e,
                              free=free + removed if free is not None else None, at_least=True) from e


def shown_folder(out_dir: Path) -> Path:
    """The folder the user knows: data/NAME for data/prepare.py's partial folder data/.NAME.partial-HOST-PID."""
    name = out_dir.name
    if name.startswith(".") and ".partial-" in name:
        return out_dir.with_name(name[1:name.index(".partial-")])
    return out_dir


def write_meta(out_dir: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=1, ensure_ascii=False)
    with unless_disk_full(out_dir, len(text.encode("utf-8"))):
        (out_dir / "meta.json").write_text(text, encoding="utf-8")


def load_meta(out_dir: Path, tokenizer: str | None = None) -> dict:
    """meta.json of a prepared dataset; with `tokenizer`, check that it was made with that one."""
    meta_path = out_dir / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path} is missing: prepare the dataset first (python -m data.prepare ...)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path} is not valid JSON ({e}); delete {out_dir} and prepare again") from None
    if tokenizer is not None and meta.get("tokenizer") != tokenizer_kind(tokenizer):
        raise DataError(f"{meta_path} was written for tokenizer {meta.get('tokenizer')!r}, but tokenizer "
                        f"{tokenizer!r} was asked for; prepare under another data.name, or delete {out_dir}")
    return meta


def split_shards(out_dir: Path, split: str, meta: dict) -> list[tuple[Path, int]]:
    """(path, number of tokens) of each shard of a split, after checking each file's size against meta.json."""
    if meta.get("format_version") != FORMAT_VERSION or split not in meta.get("shards", {}):
        raise DataError(f"{out_dir / 'meta.json'} is from another version of ropegpt's data format; delete "
                        f"{out_dir} and prepare again")
    dtype = np.dtype(meta["dtype"])
    shards = []
    for shard in meta["shards"][split]:
        path = out_dir / shard["file"]
        if not path.exists():
            raise DataError(f"{path} is missing; delete {out_dir} and prepare again")
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise DataError(f"{path} is corrupt: {size} bytes is not a whole number of {dtype.name} tokens; "
                            f"delete {out_dir} and prepare again")
        if size // dtype.itemsize != shard["tokens"]:
            raise DataError(f"{path} holds {size // dtype.itemsize} tokens but meta.json says {shard['tokens']} "
                            f"(truncated?); delete {out_dir} and prepare again")
        shards.append((path, shard["tokens"]))
    return shards
