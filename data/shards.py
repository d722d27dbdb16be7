"""The prepared format: token shards on disk, and meta.json that lists them.

data/<name>/ holds train_00000.bin, train_00001.bin, ..., val_00000.bin, ...: token ids as raw
little-endian uint16 (uint32 for vocabularies over 65,536), at most `shard_tokens` per file, and
meta.json with the tokenizer, the dtype, and for each split its shards' names, token counts and
sha256 checksums. No pickle anywhere.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from data.config import DataError, tokenizer_kind

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
        self.finish_shard()
        return self.shards


def write_meta(out_dir: Path, meta: dict) -> None:
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


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
