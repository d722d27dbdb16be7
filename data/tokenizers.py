"""The tokenizers behind one small interface: encode, encode_prompt, decode, vocab_size, eot, bos, eos, meta,
and byte_lengths (each token's UTF-8 bytes, what bits per byte divides by).

- `CharTokenizer`: one token per character of the corpus.
- `GPT2Tokenizer`: GPT-2's byte-pair encoding, through tiktoken.
- `HFTokenizer`: a Hugging Face `tokenizer.json` (the file a model folder carries), through `tokenizers`.
- `BPETokenizer`: a byte-level BPE trained on the corpus's train split (data/bpe.py), kept as a tokenizer.json.

Each can also be written as a Hugging Face tokenizer (`hf_tokenizer` + `save_hf_tokenizer`), so an
exported model's folder loads with `AutoTokenizer.from_pretrained` and gives the same ids.
"""

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from data.config import DataError


class CharTokenizer:
    """One token per character of a fixed vocabulary (the sorted characters of the corpus)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)
        self.eot: Optional[int] = None  # no end-of-text token at character level
        self.bos: Optional[int] = None
        self.eos: list[int] = []
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

    encode_prompt = encode  # a prompt is text like any other: no special token

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

    def byte_lengths(self) -> np.ndarray:
        """(vocab_size,) int64: each character's UTF-8 bytes."""
        return np.array([len(c.encode("utf-8")) for c in self.chars], dtype=np.int64)

    def hf_tokenizer(self):
        """The same mapping as a Hugging Face tokenizer: every character its own word of a WordLevel
        vocabulary, and a decoder that joins them without spaces. A character outside the vocabulary is
        an error there too."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        tokenizer = Tokenizer(models.WordLevel(self.stoi, unk_token=None))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # each character
        tokenizer.decoder = decoders.Fuse()
        return tokenizer


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
        self.bos: Optional[int] = None  # an empty prompt starts from eot (see sample.py); text never does
        self.eos: list[int] = []  # eot separates documents in training; sampling runs through it

    def encode(self, text: str) -> list[int]:
        # Special-token strings in the text are encoded as ordinary text, never as control tokens.
        return self.enc.encode_ordinary(text)

    encode_prompt = encode  # no BOS: GPT-2 starts a text with none

    def encode_array(self, text: str) -> np.ndarray:
        return np.array(self.enc.encode_ordinary(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))

    def meta(self) -> dict:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "eot": self.eot}

    def byte_lengths(self) -> np.ndarray:
        """(vocab_size,) int64: each token's bytes; <|endoftext|> has none (it stands for no text)."""
        lengths = [len(self.enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)]
        lengths[self.eot] = 0
        return np.array(lengths, dtype=np.int64)

    def hf_tokenizer(self):
        """The same encoding as a Hugging Face byte-level BPE, built from tiktoken's ranks.

        tiktoken stores each token's bytes and rank; a Hugging Face BPE stores the vocabulary as strings
        (each byte shown as a printable character, `byte_characters`) and the merges in rank order. Each
        token of two or more bytes was made by one merge: the two parts that byte-pair encoding with the
        lower ranks only leaves. Both then split text with the same GPT-2 pattern (the ByteLevel
        pre-tokenizer) and give the same ids.
        """
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        ranks = self.enc._mergeable_ranks  # bytes -> rank (= id); tiktoken offers no public accessor
        shown = byte_characters()

        def as_string(token: bytes) -> str:
            return "".join(shown[b] for b in token)

        def halves(token: bytes, rank: int) -> list[bytes]:
            parts = [bytes([b]) for b in token]
            while len(parts) > 2:
                pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
                best, i = min(pairs)
                if best >= rank:
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            return parts

        vocab = {as_string(token): rank for token, rank in ranks.items()}
        merges = []
        for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
            if len(token) > 1:
                left, right = halves(token, rank)
                merges.append((as_string(left), as_string(right)))
        tokenizer = Tokenizer(models.BPE(vocab, merges))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([AddedToken("<|endoftext|>", special=True)])  # id 50256, after the ranks
        return tokenizer


def byte_characters() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: itself when printable Latin-1, else chr(256 + n)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b], n = chr(256 + n), n + 1
    return table


class HFTokenizer:
    """A Hugging Face tokenizer.json, with the model folder's BOS and EOS tokens.

    The JSON text itself travels in `meta()` (into a prepared dataset's meta.json and every checkpoint),
    so a fine-tuned run samples and exports without the folder it started from.
    """

    kind = "hf"

    def __init__(self, tokenizer_json: str, bos: Optional[int] = None, eos: Optional[list[int]] = None,
                 source: str = ""):
        from tokenizers import Tokenizer

        self.tokenizer_json, self.source = tokenizer_json, source
        try:
            self.tok = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust library raises a bare Exception for a malformed file
            raise DataError(f"the tokenizer.json of {source or 'this model'} is not a usable tokenizer "
                            f"({str(e)[:200]})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.bos: Optional[int] = bos
        self.eos: list[int] = list(eos or [])
        self.eot: Optional[int] = self.eos[0] if self.eos else bos  # between documents of a prepared corpus

    @classmethod
    def from_folder(cls, folder: str | Path) -> "HFTokenizer":
        """The tokenizer of a model folder: tokenizer.json, and the BOS/EOS ids of its generation_config.json
        (else config.json)."""
        folder = Path(folder).expanduser()
        if not (folder / "tokenizer.json").is_file():
            raise DataError(f"{folder} has no tokenizer.json (a fast tokenizer). Write one once with transformers: "
                            "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)")
        ids = {}
        for name in ("config.json", "generation_config.json"):  # the second wins
            try:
                found = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            ids.update({k: found[k] for k in ("bos_token_id", "eos_token_id") if found.get(k) is not None})
        eos = ids.get("eos_token_id")
        return cls((folder / "tokenizer.json").read_text(encoding="utf-8"), ids.get("bos_token_id"),
                   [eos] if isinstance(eos, int) else eos, source=str(folder))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids  # a corpus's text: no BOS, no EOS

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: with the special tokens the post-processor adds (BOS, for Llama), as transformers'
        tokenizer(text) gives them. Corpora are encoded without: prepare writes its own separators."""
        return self.tok.encode(text, add_special_tokens=True).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.array(self.encode(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))  # special tokens (BOS, EOS) are left out

    def meta(self) -> dict:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "eot": self.eot, "bos": self.bos,
                "eos": self.eos, "tokenizer_source": self.source, "tokenizer_json": self.tokenizer_json}

    def byte_lengths(self) -> np.ndarray:
        """(vocab_size,) int64: each token's UTF-8 bytes; special tokens (BOS, EOS, padding) have none.
        A byte-level vocabulary (GPT-2's, Llama 3's, SmolLM2's: a ByteLevel decoder) shows each byte as one
        character (byte_characters); a SentencePiece one (Llama 2's) shows a space as "▁" and a byte it
        has no token for as <0xNN>."""
        shown = {c: b for b, c in byte_characters().items()}
        byte_level = '"ByteLevel"' in json.dumps(json.loads(self.tokenizer_json).get("decoder"))
        special = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in self.tok.get_vocab(with_added_tokens=True).items():
            if token in special:
                continue
            if byte_level and all(c in shown for c in token):
                lengths[i] = len(token)
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                lengths[i] = 1
            else:
                lengths[i] = len(token.replace("▁", " ").encode("utf-8"))
        return lengths

    def hf_tokenizer(self):
        return self.tok


class BPETokenizer(HFTokenizer):
    """A byte-level BPE trained on the corpus (data/bpe.py): a Hugging Face tokenizer.json whose
    <|endoftext|> separates documents, as GPT-2's does. No BOS: an empty prompt starts from <|endoftext|>."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str, source: str = ""):
        super().__init__(tokenizer_json, source=source)
        self.eot = self.tok.token_to_id("<|endoftext|>")
        self.eos = []  # eot separates documents in training; sampling runs through it, as with GPT-2

    def meta(self) -> dict:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "eot": self.eot,
                "tokenizer_source": self.source, "tokenizer_json": self.tokenizer_json}


def special_ids(tokenizer) -> tuple[Optional[int], Optional[list[int]]]:
    """(BOS id, EOS ids) for a Hugging Face folder: a Hugging Face tokenizer's own; GPT-2's <|endoftext|>
    is both, as in Hugging Face's gpt2. A character vocabulary has no special token: its newline (the
    separator its documents follow, where sample.py starts an empty prompt) serves as BOS, so that clients
    which condition the first token on a BOS (lm-eval's rolling log-likelihood) have one; no EOS."""
    if tokenizer.kind in ("gpt2", "bpe"):
        return tokenizer.eot, [tokenizer.eot]
    if tokenizer.kind == "char":
        separator = document_separator(tokenizer)
        return (separator[0] if separator else None), None
    return tokenizer.bos, tokenizer.eos or None


def document_separator(tokenizer) -> list[int]:
    """The tokens written between two documents of a prepared corpus: end-of-text (then BOS, where a
    model starts its texts with one, as sample.py starts its prompts), else a newline of one token."""
    if tokenizer.eot is not None:
        bos = [tokenizer.bos] if tokenizer.bos is not None and tokenizer.bos != tokenizer.eot else []
        return [tokenizer.eot, *bos]
    newline = tokenizer.encode("\n") if tokenizer.kind != "char" or "\n" in tokenizer.stoi else []
    return newline if len(newline) == 1 else []


def save_hf_tokenizer(tokenizer, folder: Path, model_max_length: int) -> None:
    """tokenizer.json and tokenizer_config.json, for transformers' AutoTokenizer.from_pretrained(folder)."""
    hf = tokenizer.hf_tokenizer()
    hf.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False}  # decoding must give the text back, spaces and all
    bos, eos = special_ids(tokenizer)
    special = {"bos_token": bos, "eos_token": eos[0] if eos else None}
    if tokenizer.kind == "char":  # a pad token inside the vocabulary, else a client (lm-eval) adds one outside it
        special["pad_token"] = bos
    config.update({k: hf.id_to_token(i) for k, i in special.items() if i is not None})
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def tokenizer_from_meta(meta: dict):
    """The tokenizer a prepared dataset (or a checkpoint carrying its meta.json) was made with."""
    if meta.get("tokenizer") == "char" and isinstance(meta.get("chars"), str):
        return CharTokenizer(meta["chars"])
    if meta.get("tokenizer") == "gpt2":
        return GPT2Tokenizer()
    if meta.get("tokenizer") == "bpe" and isinstance(meta.get("tokenizer_json"), str):
        return BPETokenizer(meta["tokenizer_json"], meta.get("tokenizer_source", ""))
    if meta.get("tokenizer") == "hf" and isinstance(meta.get("tokenizer_json"), str):
        return HFTokenizer(meta["tokenizer_json"], meta.get("bos"), meta.get("eos"), meta.get("tokenizer_source", ""))
    raise DataError(f"no usable tokenizer description in meta {sorted(meta)}: expected 'tokenizer' = "
                    f"'char' (with 'chars'), 'gpt2', or 'hf' or 'bpe' (with 'tokenizer_json'). Re-prepare the dataset.")
