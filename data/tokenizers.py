"""Two tokenizers behind one small interface: encode, decode, vocab_size, eot."""

from typing import Optional

import numpy as np

from data.config import TOKENIZERS, DataError


class CharTokenizer:
    """One token per character of a fixed vocabulary (the sorted characters of the corpus)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.eot: Optional[int] = None  # no end-of-text token at character level
        self._table = None  # code point -> id, built on the first encode_array

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.stoi})
            raise DataError(f"{len(unknown)} character(s) not in the {self.vocab_size}-character vocabulary: "
                            f"{', '.join(map(repr, unknown))}. Remove them from the text.") from None

    def encode_array(self, text: str) -> np.ndarray:
        """encode, vectorised for corpora: a lookup table indexed by code point, (len(text),) int64."""
        if self._table is None:
            self._table = np.full(max(map(ord, self.chars)) + 1, -1, dtype=np.int64)
            self._table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._table[np.minimum(codes, len(self._table) - 1)]
        if (ids < 0).any() or (codes >= len(self._table)).any():
            self.encode(text)  # raises, naming the characters
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def meta(self) -> dict:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "chars": self.chars, "eot": self.eot}


class GPT2Tokenizer:
    """GPT-2's byte-pair encoding through tiktoken (50257 tokens, <|endoftext|> = 50256)."""

    kind = "gpt2"

    def __init__(self):
        import tiktoken  # here, so that character-level users never need its files

        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken fetches its files once, with requests; any network error
            raise DataError(f"could not load tiktoken's GPT-2 encoding ({type(e).__name__}): it downloads its "
                            "files on first use, so connect once, or point TIKTOKEN_CACHE_DIR at a folder "
                            "that holds them") from e
        self.vocab_size = self.enc.n_vocab
        self.eot: Optional[int] = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        # Special-token strings in the text are encoded as ordinary text, never as control tokens.
        return self.enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        return np.array(self.enc.encode_ordinary(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))

    def meta(self) -> dict:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "eot": self.eot}


def tokenizer_for_corpus(kind: str, text: str):
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise DataError(f"unknown tokenizer {kind!r}: use one of {', '.join(TOKENIZERS)}")


def tokenizer_from_meta(meta: dict):
    """The tokenizer a prepared dataset (or a checkpoint carrying its meta.json) was made with."""
    if meta.get("tokenizer") == "char" and isinstance(meta.get("chars"), str):
        return CharTokenizer(meta["chars"])
    if meta.get("tokenizer") == "gpt2":
        return GPT2Tokenizer()
    raise DataError(f"no usable tokenizer description in meta {sorted(meta)}: expected 'tokenizer' = "
                    f"'char' (with 'chars') or 'gpt2'. Re-prepare the dataset.")
