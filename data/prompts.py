"""Prompts and completions: text in and text out around a tokenizer.

Text in: the prompt as typed (with \\n, \\t and \\\\ escapes), from a file or from standard input, and its
tokens. Text out: each sample's text, cut before a stop string or an end-of-text token, printed as it
settles (one sample streamed) or all at the end. sample.py runs the model in between.
"""

import re
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from data.config import DataError
from data.tokenizers import document_separator

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ turned into a newline, a tab, a backslash (a shell and Hydra make real newlines
    awkward to type); any other backslash stays as typed."""
    return re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], text)


def read_prompt(prompt: str) -> str:
    """The prompt's text: as typed (with the escapes of `unescape`), from a file (FILE:path, verbatim), or
    from standard input (-, verbatim)."""
    if prompt == "-":
        return sys.stdin.read()
    if prompt.startswith("FILE:"):
        path = Path(prompt[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the prompt file {path}: {e}") from None
    return unescape(prompt)


def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """The prompt's tokens as the model's own tokenizer makes them. A Hugging Face tokenizer's post-processor
    decides whether a beginning-of-text token comes first (Llama's <s>, <|begin_of_text|>: yes; GPT-2's,
    SmolLM2's: no), as transformers' tokenizer(prompt) and llama.cpp decide; so a run and its export read
    a prompt alike. A prompt of no tokens starts from end-of-text (GPT-2's <|endoftext|>), else from the
    document separator (a character model's newline), else from token 0."""
    ids = tokenizer.encode_prompt(prompt)
    if ids:
        return ids
    if tokenizer.eot is not None:
        return [tokenizer.eot]
    return document_separator(tokenizer) or [0]


def stop_strings(stop: Optional[str | list[str]]) -> list[str]:
    """The stop strings, with the escapes of `unescape`."""
    if stop is None:
        return []
    return [unescape(s) for s in ([stop] if isinstance(stop, str) else stop)]


class Completion:
    """The text one sample has produced so far, cut before the first stop string or end-of-text token.

    context: the prompt's last tokens. The new tokens are decoded after them and the context's own text
    removed, because some decoders (SentencePiece's) treat a text's first token differently: alone,
    "▁world" would lose the space that follows the prompt "Hello".
    """

    def __init__(self, tokenizer, stops: list[str], context: Sequence[int] = ()):
        self.tokenizer, self.stops, self.ids, self.stopped = tokenizer, stops, [], False
        self.context = list(context)
        self.skip = len(tokenizer.decode(self.context))
        self.text = ""

    def add(self, token: int) -> None:
        if self.stopped:
            return
        if token in self.tokenizer.eos:
            self.stopped = True
            return
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.context + self.ids)[self.skip :]
        cuts = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.text, self.stopped = self.text[: min(cuts)], True

    def settled(self) -> str:
        """The part of the text that later tokens cannot change: not a possible start of a stop
        string, nor an incomplete UTF-8 character (decoded as U+FFFD for now)."""
        if self.stopped:
            return self.text
        hold = max((len(s) - 1 for s in self.stops), default=0)
        text = self.text[: max(0, len(self.text) - hold)]
        return text.rstrip("\ufffd")


class Completions:
    """The samples of one prompt, printed to out: a single sample streamed as its text settles (the prompt
    first), several all at the end, one after another between lines of dashes. context: as for Completion."""

    def __init__(self, tokenizer, prompt: str, stops: list[str], num_samples: int, out: TextIO, stream: bool,
                 context: Sequence[int] = ()):
        self.prompt, self.out = prompt, out
        self.samples = [Completion(tokenizer, stops, context) for _ in range(num_samples)]
        self.stream = stream and num_samples == 1
        self.printed = 0  # characters of sample 0's text streamed so far
        if self.stream:
            self.write(prompt)

    @property
    def stopped(self) -> bool:
        return all(c.stopped for c in self.samples)

    def add(self, tokens: list[int]) -> None:
        """One new token for each sample."""
        for completion, token in zip(self.samples, tokens):
            completion.add(token)
        if self.stream:
            settled = self.samples[0].settled()
            self.write(settled[self.printed :])
            self.printed = len(settled)

    def close(self) -> list[str]:
        """Print what is left; return every sample's text, prompt included."""
        texts = [self.prompt + c.text for c in self.samples]
        if self.stream:
            self.write(self.samples[0].text[self.printed :] + "\n")
        else:
            self.write(("-" * 40 + "\n").join(text + "\n" for text in texts))
        return texts

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
