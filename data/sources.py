"""Where a corpus's text comes from, read a piece at a time so that no corpus is ever held in memory.

`pieces(cfg)` yields (text, starts_document) pairs:
  * a text file (.txt, or any file named on its own that is not .jsonl or .parquet) is one document,
    read in pieces of about PIECE_CHARS characters cut after a newline;
  * each record of a .jsonl or .parquet file is a document (its `text_field`), read through Hugging Face
    `datasets` in streaming mode: the same code path as a named corpus on the Hub (`hf_dataset`, e.g.
    FineWeb-Edu or OpenWebText), whose records have the same shape;
  * a folder: its .txt, .jsonl and .parquet files in sorted order (hidden files skipped).
"""

from pathlib import Path
from typing import Iterator

from data.config import DataConfig, DataError, data_root
from data.download import download

PIECE_CHARS = 1_000_000  # a text file is read this many characters at a time (about 1 MB of text)
KINDS = (".txt", ".jsonl", ".parquet")  # what a folder's files may be; a file named on its own is text
RECORDS = (".jsonl", ".parquet")  # unless it is one of these


def source_files(cfg: DataConfig) -> list[Path]:
    """The local files a dataset is made from (downloading Tiny Shakespeare if it is the source)."""
    if cfg.hf_dataset:
        return []
    if cfg.path is None:
        if not cfg.url:
            raise DataError(f"data '{cfg.name}' has no source: set data.path=FILE_OR_FOLDER or data.hf_dataset=NAME")
        return [download(cfg.url, data_root(cfg) / cfg.download_name, cfg.sha256)]
    path = Path(cfg.path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in KINDS
                       and not any(s.startswith(".") for s in p.relative_to(path).parts))
        if not files:
            raise DataError(f"the folder {path} holds no .txt, .jsonl or .parquet files")
        return files
    raise DataError(f"no such file or folder: {path} (data.path). Give an existing UTF-8 text file or folder.")


def text_pieces(path: Path) -> Iterator[tuple[str, bool]]:
    """A UTF-8 text file as one document, PIECE_CHARS characters at a time, each piece ending after a newline."""
    carry, first = "", True
    try:
        with open(path, encoding="utf-8") as f:
            while block := f.read(PIECE_CHARS):
                block = carry + block
                cut = block.rfind("\n") + 1  # 0: no newline in the block; it goes as it is
                carry, block = (block[cut:], block[:cut]) if cut else ("", block)
                if block:
                    yield block, first
                    first = False
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start} of a block); convert it to UTF-8") \
            from None
    if carry:
        yield carry, first


def record_pieces(records, field: str, where: str) -> Iterator[tuple[str, bool]]:
    for record in records:
        text = record.get(field)
        if not isinstance(text, str):
            raise DataError(f"a record of {where} has no text field {field!r} (it has {sorted(record)}): "
                            "set data.text_field")
        if text:  # an empty record is no document
            yield text, True


def hf_records(cfg: DataConfig, files: list[Path] = ()):
    """Records streamed by Hugging Face datasets: from the Hub (cfg.hf_dataset) or from local files."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError(".jsonl, .parquet and Hugging Face corpora need the datasets library: "
                        "pip install datasets") from None
    if cfg.hf_dataset:
        return load_dataset(cfg.hf_dataset, cfg.hf_config, split=cfg.hf_split, streaming=True)
    builder = "json" if files[0].suffix == ".jsonl" else "parquet"
    return load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)


def pieces(cfg: DataConfig, files: list[Path]) -> Iterator[tuple[str, bool]]:
    """(text, starts_document) for the whole corpus, in order; at most cfg.max_documents documents."""
    def all_pieces():
        if cfg.hf_dataset:
            yield from record_pieces(hf_records(cfg), cfg.text_field, cfg.hf_dataset)
            return
        i = 0
        while i < len(files):
            if files[i].suffix not in RECORDS:
                yield from text_pieces(files[i])
                i += 1
            else:  # a run of files of one kind goes through one streaming dataset
                j = i
                while j < len(files) and files[j].suffix == files[i].suffix:
                    j += 1
                yield from record_pieces(hf_records(cfg, files[i:j]), cfg.text_field, str(files[i].parent))
                i = j

    documents = 0
    for text, starts in all_pieces():
        documents += starts
        if cfg.max_documents is not None and documents > cfg.max_documents:
            return
        yield text, starts
