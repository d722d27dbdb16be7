"""A byte-level BPE trained on the corpus itself: `data.tokenizer=bpe data.vocab_size=N`.

Byte-pair encoding starts from the 256 byte values as tokens, so any text, in any script, emoji included,
has an encoding: a prompt is never refused. Training counts the pairs of adjacent tokens in the text and
merges the most frequent pair into a new token, again and again, until the vocabulary holds N tokens:
the 256 bytes, N - 257 merges, and <|endoftext|> (id 0), the separator written between documents.

The text is first split the way GPT-2 splits it (the ByteLevel pre-tokenizer: words with their leading
space, numbers, punctuation runs), and no merge crosses those pieces. Hugging Face `tokenizers` trains it
(its BpeTrainer), in a second or two for Tiny Shakespeare, and writes a tokenizer.json that transformers
and lm-eval load as they are.

- Only the train split trains it: the validation text is never seen, so val loss and bits per byte
  measure text the tokenizer was not fitted to.
- The same text and vocab_size give a byte-identical tokenizer.json (the trainer breaks ties in a fixed
  order; tests/test_bpe.py checks it across processes).
- A large corpus trains it on its first TRAIN_CHARS characters of train text (nanochat does the same with
  its own cap): the counts the trainer keeps grow with the distinct words of what it reads, and the merges
  of a sample of that size are those of the whole to within a few rare tokens.
"""

from typing import Iterable, Iterator

TRAIN_CHARS = 100_000_000  # at most this many characters of the train split train the tokenizer
EOT = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """The tokenizer.json (as text) of a byte-level BPE of vocab_size tokens trained on texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(capped(texts, TRAIN_CHARS), trainer)
    return tokenizer.to_str()


def capped(texts: Iterable[str], limit: int) -> Iterator[str]:
    """texts, up to limit characters in all (the last one cut)."""
    left = limit
    for text in texts:
        if left <= 0:
            return
        yield text[:left]
        left -= len(text)
