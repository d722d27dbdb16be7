"""The `data` config group's schema, and the one error type of the data pipeline."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from runtime.config import require
from runtime.errors import UserError

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TOKENIZERS = ("char", "gpt2", "bpe")
BPE_VOCAB = 1024  # data.tokenizer=bpe without data.vocab_size
BPE_MIN_VOCAB = 257  # the 256 bytes and <|endoftext|>: a BPE without merges


class DataError(UserError):
    """Bad or missing data. The message says what is wrong and what to do; scripts exit with code 2."""


@dataclass
class DataConfig:
    name: Optional[str] = "shakespeare_char"  # prepared files go to <root>/<name>/; None: named after `path`
    tokenizer: str = "char"  # char (the corpus's characters), gpt2 (tiktoken's GPT-2 BPE), bpe (a BPE trained on the
    #                          corpus's train split, data/bpe.py), hf:MODEL_DIR (that folder's tokenizer.json)
    vocab_size: Optional[int] = None  # with tokenizer=bpe: its tokens (256 bytes, merges, <|endoftext|>); None: 1024
    path: Optional[str] = None  # a UTF-8 text file, or a folder of .txt/.jsonl/.parquet files; None: `url`
    url: Optional[str] = TINYSHAKESPEARE_URL  # downloaded to <root>/<download_name> when path is None
    sha256: Optional[str] = TINYSHAKESPEARE_SHA256  # checksum the download must have
    download_name: str = "tinyshakespeare/input.txt"
    hf_dataset: Optional[str] = None  # a Hugging Face dataset, streamed, e.g. HuggingFaceFW/fineweb-edu
    hf_config: Optional[str] = None  # its configuration, e.g. sample-10BT
    hf_split: str = "train"
    text_field: str = "text"  # the field of each .jsonl / .parquet / Hugging Face record that holds the text
    max_documents: Optional[int] = None  # read only the first this many documents (a sample of a big corpus)
    root: Optional[str] = None  # None: the data/ folder of this repository
    val_fraction: float = 0.1  # held out for validation: this fraction of the documents (of the text, if few)
    workers: int = 0  # tokenizer processes for a large corpus; 0: one per core other programs leave free, at most 16
    shard_tokens: int = 100_000_000  # tokens per .bin shard (200 MB in uint16)

    def __post_init__(self):
        require([(self.path is None or bool(str(self.path).strip()), "data.path is empty: give a text file or a "
                   "folder of .txt/.jsonl/.parquet files")])
        require([(self.vocab_size is None or self.tokenizer == "bpe", f"data.vocab_size={self.vocab_size} is the size "
                  "of a BPE trained on the corpus: give it with data.tokenizer=bpe"),
                 (self.vocab_size is None or self.vocab_size >= BPE_MIN_VOCAB, f"data.vocab_size={self.vocab_size} "
                  f"must be at least {BPE_MIN_VOCAB}: the 256 bytes and <|endoftext|>")])
        if self.tokenizer == "bpe" and self.vocab_size is None:
            self.vocab_size = BPE_VOCAB
        if self.name is None and self.path is not None:
            self.name = corpus_name(self.path, self.tokenizer, self.vocab_size)
        require([(self.name is not None, "your own text needs data.path=FILE_OR_FOLDER, or data.name=NAME of a "
                  "corpus prepared before"),
                 (self.tokenizer in TOKENIZERS or self.tokenizer.startswith("hf:") and len(self.tokenizer) > 3,
                  f"tokenizer={self.tokenizer!r} must be one of {', '.join(TOKENIZERS)}, or hf:MODEL_DIR (a Hugging "
                  "Face model folder with a tokenizer.json)"),
                 (0 < self.val_fraction < 1, f"val_fraction={self.val_fraction} must be between 0 and 1"),
                 (self.workers >= 0, f"workers={self.workers} must be >= 0 (0: one per CPU core)"),
                 (self.shard_tokens >= 1, f"shard_tokens={self.shard_tokens} must be >= 1"),
                 (self.max_documents is None or self.max_documents >= 1,
                  f"max_documents={self.max_documents} must be >= 1"),
                 (self.name is None or bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
                  f"name={self.name!r} must be a folder name (no '/')")])


def folder_name(text: str) -> str:
    """text with every character but letters, digits and -_. replaced by _."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def corpus_name(path: str, tokenizer: str, vocab_size: Optional[int] = None) -> str:
    """The folder an own corpus prepares into when data.name is not given: the file's name without its
    suffix (or the folder's name), then the tokenizer. `python -m data.prepare data=text data.path=~/War and
    Peace.txt` prepares data/War_and_Peace_char; with data.tokenizer=hf:models/SmolLM2-135M, War_and_Peace_hf_SmolLM2-135M;
    with data.tokenizer=bpe (data.vocab_size=1024), War_and_Peace_bpe1024."""
    source = Path(path).expanduser().resolve()
    stem = source.stem if source.suffix.lower() in (".txt", ".jsonl", ".parquet", ".md", ".text") else source.name
    kind = f"hf_{folder_name(Path(tokenizer[3:].rstrip('/')).name)}" if tokenizer.startswith("hf:") else tokenizer
    kind += str(vocab_size) if tokenizer == "bpe" else ""
    return f"{folder_name(stem).lstrip('.') or 'text'}_{kind}"  # never a hidden folder


def tokenizer_kind(tokenizer: str) -> str:
    """char, gpt2, bpe or hf: what a prepared dataset's meta.json records of a data.tokenizer setting."""
    return "hf" if tokenizer.startswith("hf:") else tokenizer


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else Path(__file__).resolve().parent


def dataset_dir(cfg: DataConfig) -> Path:
    return data_root(cfg) / cfg.name
