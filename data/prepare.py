"""Turn a text into train.bin, val.bin and meta.json under data/<name>/, once.

    python -m data.prepare                                   # Tiny Shakespeare, characters
    python -m data.prepare data=shakespeare                  # Tiny Shakespeare, GPT-2 BPE
    python -m data.prepare data=text data.path=book.txt data.tokenizer=char data.name=book

Training calls `prepare` itself, which does nothing when the prepared files already match the source.
The split is nanoGPT's: the first 90% of the characters train, the last 10% validate.
"""

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.config import DataConfig, DataError, data_root, dataset_dir
from data.download import download
from data.tokenizers import tokenizer_for_corpus

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class PrepareConfig:
    """The settings of `python -m data.prepare`: which dataset (configs/data/*.yaml) to prepare."""

    data: DataConfig = field(default_factory=DataConfig)


def source_files(cfg: DataConfig) -> list[Path]:
    """The file(s) the dataset is made from, downloading Tiny Shakespeare if it is the source."""
    if cfg.path is None:
        if not cfg.url:
            raise DataError(f"data '{cfg.name}' has no source: set data.path=FILE_OR_FOLDER")
        return [download(cfg.url, data_root(cfg) / cfg.download_name, cfg.sha256)]
    path = Path(cfg.path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))
        if not files:
            raise DataError(f"the folder {path} holds no files: put UTF-8 text files in it")
        return files
    raise DataError(f"no such file or folder: {path} (data.path). Give an existing UTF-8 text file or folder.")


def read_corpus(files: list[Path]) -> str:
    """The text of the files, in order, joined by a newline."""
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{f} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    text = "\n".join(texts)
    if not text:
        raise DataError(f"{files[0] if len(files) == 1 else 'the source folder'} is empty: there is nothing to train on")
    return text


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_meta(out_dir: Path, tokenizer: str | None = None) -> dict:
    """meta.json of a prepared dataset; with `tokenizer`, check that it was made with that one."""
    meta_path = out_dir / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path} is missing: prepare the dataset first (python -m data.prepare ...)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path} is not valid JSON ({e}); delete {out_dir} and prepare again") from None
    if tokenizer is not None and meta.get("tokenizer") != tokenizer:
        raise DataError(f"{meta_path} was written for tokenizer {meta.get('tokenizer')!r}, but tokenizer "
                        f"{tokenizer!r} was asked for; prepare under another data.name, or delete {out_dir}")
    return meta


def split_file(out_dir: Path, split: str, meta: dict) -> tuple[Path, np.dtype, int]:
    """(path, dtype, number of tokens) of train.bin or val.bin, after checking it against meta.json."""
    path = out_dir / f"{split}.bin"
    dtype = np.dtype(meta["dtype"])
    if not path.exists():
        raise DataError(f"{path} is missing; delete {out_dir} and prepare again")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(f"{path} is corrupt: {size} bytes is not a whole number of {dtype.name} tokens; "
                        f"delete {out_dir} and prepare again")
    n = size // dtype.itemsize
    if n != meta[f"{split}_tokens"]:
        raise DataError(f"{path} holds {n} tokens but meta.json says {meta[f'{split}_tokens']} (truncated?); "
                        f"delete {out_dir} and prepare again")
    return path, dtype, n


def prepare(cfg: DataConfig) -> Path:
    """Prepare cfg's dataset unless its files already match the source; return its folder."""
    out_dir = dataset_dir(cfg)
    text = read_corpus(source_files(cfg))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if (out_dir / "meta.json").exists():
        meta = load_meta(out_dir)
        if meta.get("source_sha256") == digest and meta.get("tokenizer") == cfg.tokenizer:
            for split in ("train", "val"):
                split_file(out_dir, split, meta)  # matching meta but broken files: say so, don't hide it
            log.info("%s is prepared already: %s", out_dir, summary(meta))
            return out_dir
        log.info("%s was prepared from another source or tokenizer: preparing it again", out_dir)

    tok = tokenizer_for_corpus(cfg.tokenizer, text)
    n_train_chars = int(len(text) * (1 - cfg.val_fraction))
    ids = {"train": tok.encode(text[:n_train_chars]), "val": tok.encode(text[n_train_chars:])}
    for split, split_ids in ids.items():
        if not split_ids:
            raise DataError(f"the {split} split of {cfg.name} is empty: the text has only {len(text)} characters")
    dtype = token_dtype(tok.vocab_size)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # written last: without it the folder reads as unprepared
    for split, split_ids in ids.items():
        write_atomically(out_dir / f"{split}.bin", np.array(split_ids, dtype=dtype).tobytes())
    meta = {"format_version": FORMAT_VERSION, **tok.meta(), "dtype": np.dtype(dtype).name,
            "train_tokens": len(ids["train"]), "val_tokens": len(ids["val"]),
            "source": str(cfg.path or cfg.url), "source_sha256": digest, "val_fraction": cfg.val_fraction}
    write_atomically(out_dir / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))
    log.info("prepared %s: %s", out_dir, summary(meta))
    return out_dir


def summary(meta: dict) -> str:
    return (f"{meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens, "
            f"{meta['tokenizer']} tokenizer, vocabulary {meta['vocab_size']:,}")


def main() -> None:
    from runtime.config import run_command

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # what prepare did
    run_command("prepare", PrepareConfig, lambda cfg, overrides: prepare(cfg.data))


if __name__ == "__main__":
    main()
