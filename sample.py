"""Sample text from a checkpoint of train.py.

    python sample.py                                           # the newest run under outputs/
    python sample.py ckpt=outputs/2026-11-22/06-00-00 prompt="ROMEO:" num_samples=3
    python sample.py ckpt=run/checkpoints/last.pt prompt=FILE:prompt.txt temperature=0 'stop=\\n\\n'
    python sample.py ckpt=models/SmolLM2-135M prompt="The meaning of life is"  # a Hugging Face Llama folder
    echo "any text" | python sample.py prompt=-                # the prompt from standard input

`prompt=` takes the rest of its argument as typed: quotes, commas, `=`, brackets, any Unicode; like `stop=`,
it reads \\n as a newline, \\t as a tab and \\\\ as one backslash (a file or stdin is read verbatim).
`sample(cfg)` does the work and returns the texts; `main()` is the entry point. The model's
architecture and tokenizer come from the checkpoint. The prompt is prefilled once for all samples,
which then decode together, one token per step, through the KV cache.
"""

import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

import torch

from data.tokenizers import HFTokenizer, document_separator, tokenizer_from_meta
from model.generate import check_sampling_args, generate_tokens
from model.gpt import GPT
from model.llama import LlamaFormatError, is_llama_folder, load_llama
from runtime.checkpoint import find_checkpoint, load_checkpoint
from runtime.config import FREE_TEXT, require, run_command
from runtime.devices import DEVICE, DTYPE_NAMES, autocast, resolve_device, resolve_dtype
from runtime.errors import UserError


@dataclass
class SampleConfig:
    ckpt: Optional[str] = None  # a run folder (best.pt), a .pt file or a Hugging Face Llama folder; None: newest run
    runs_dir: str = "outputs"  # where train.py's run folders are, to find the newest one
    prompt: str = field(default="", metadata=FREE_TEXT)  # the text to continue (\n: newline); FILE:path; - (stdin)
    num_samples: int = 1  # samples of the prompt: one prefill, then decoded together
    max_new_tokens: int = 500
    temperature: float = 0.8  # 0 is greedy
    top_k: Optional[int] = 200
    top_p: Optional[float] = None
    seed: Optional[int] = None  # None: a fresh seed, printed on stderr, so that seed=N repeats a sample
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA (fp16 where bf16 is not native), fp32 elsewhere
    stream: bool = True  # print tokens as they come (with num_samples=1)
    stop: Any = None  # a string or a list of strings: a sample ends before the first one
    use_cache: bool = True
    attention_plot: Optional[str] = None  # a .png path: heatmaps of the attention weights of sample 0
    attention_layer: Optional[int] = None  # only this layer in the picture; None: every layer
    attention_tokens: int = 48  # the picture shows the first this many tokens (prompt, then generated)

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        require([(self.num_samples >= 1, f"num_samples={self.num_samples} must be >= 1"),
                  (self.max_new_tokens >= 0, f"max_new_tokens={self.max_new_tokens} must be >= 0"),
                  (self.attention_tokens >= 1, f"attention_tokens={self.attention_tokens} must be >= 1"),
                  (self.attention_layer is None or self.attention_layer >= 0,
                   f"attention_layer={self.attention_layer} must be >= 0"),
                  (self.seed is None or 0 <= self.seed < 2**63, f"seed={self.seed} must be in [0, 2^63)"),
                  (DEVICE.fullmatch(self.device) is not None,
                   f"device={self.device!r} must be auto, cpu, cuda, cuda:N or mps"),
                  (self.dtype in DTYPE_NAMES, f"dtype={self.dtype!r} must be one of {', '.join(DTYPE_NAMES)}"),
                  (stops is None or isinstance(stops, list) and all(isinstance(s, str) and s for s in stops),
                   f"stop={self.stop!r} must be a non-empty string or a list of them (e.g. 'stop=[a,b]')")])


class SampleError(UserError):
    """Bad input to sample.py. The message says what to do; sample.py exits with code 2."""


def load_model(where: Optional[str], runs_dir: str, device: torch.device) -> tuple[GPT, object, str]:
    """The model and tokenizer of a checkpoint of train.py (trained on any device) or a Hugging Face Llama
    folder, and a line saying which; `where` as for `ckpt=`."""
    if where is not None and is_llama_folder(Path(where).expanduser()):
        try:
            tokenizer = HFTokenizer.from_folder(where)  # first: it is the quick check
            model = load_llama(where)
        except LlamaFormatError as e:
            raise SampleError(f"cannot sample from {where}: {e}") from None
        return model.to(device).eval(), tokenizer, f"{where} (a Hugging Face Llama folder)"
    path = find_checkpoint(where, prefer="best.pt", runs_dir=runs_dir)
    state = load_checkpoint(path)
    meta = state.get("data_meta")
    if not meta:
        raise SampleError(f"{path} has no tokenizer metadata (data_meta); it cannot turn tokens into text")
    try:
        model = GPT.from_state(state["model_config"], state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise SampleError(f"{path} does not hold a usable model ({type(e).__name__}: {str(e)[:200]})") from None
    val = state.get("val_loss")
    facts = [f"step {state['step']}" if "step" in state else "", f"val loss {val:.4f}" if val is not None else ""]
    return model.to(device).eval(), tokenizer_from_meta(meta), f"{path} ({', '.join(filter(None, facts)) or 'no step'})"


def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """The prompt's tokens, after the beginning-of-text token where the model has one (Llama's <s>).
    An empty prompt starts from end-of-text (GPT-2's <|endoftext|>), else a newline, else token 0."""
    if tokenizer.bos is not None:
        return [tokenizer.bos] + tokenizer.encode(prompt)
    if prompt:
        return tokenizer.encode(prompt)
    if tokenizer.eot is not None:
        return [tokenizer.eot]
    return document_separator(tokenizer) or [0]


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
            raise SampleError(f"cannot read the prompt file {path}: {e}") from None
    return unescape(prompt)


def stop_strings(stop) -> list[str]:
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


def sample(cfg: SampleConfig, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> list[str]:
    """Generate cfg.num_samples texts (prompt + continuation); print them to out, speeds to err
    (by default the standard output and error of the moment)."""
    out, err = out or sys.stdout, err or sys.stderr
    stops = stop_strings(cfg.stop)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.attention_plot and not Path(cfg.attention_plot).expanduser().parent.is_dir():
        raise SampleError(f"attention_plot={cfg.attention_plot}: the folder {Path(cfg.attention_plot).parent} does "
                          "not exist")
    model, tokenizer, loaded = load_model(cfg.ckpt, cfg.runs_dir, device)
    if cfg.attention_layer is not None and not 0 <= cfg.attention_layer < model.config.n_layer:
        raise SampleError(f"attention_layer={cfg.attention_layer}: the model has layers 0..{model.config.n_layer - 1}")
    prompt = read_prompt(cfg.prompt)
    ids = prompt_tokens(tokenizer, prompt)  # the last check of the input: what follows is written out
    seed = secrets.randbelow(2**63) if cfg.seed is None else cfg.seed
    err.write(f"checkpoint: {loaded}\n")
    err.write(f"seed: {seed}\n" if cfg.seed is not None else f"seed: {seed} (seed={seed} repeats this sample)\n")
    use_cache = cfg.use_cache
    if use_cache and not model.config.causal:
        err.write("note: this model attends both ways (causal=false), so a KV cache would go stale: "
                  "sampling without it\n")
        use_cache = False
    if len(ids) > model.config.block_size:  # as nanoGPT: the model reads the prompt's last block_size tokens
        err.write(f"note: the prompt is {len(ids)} tokens, longer than the model's context of "
                  f"{model.config.block_size}: the model reads its last {model.config.block_size}\n")
        ids = ids[-model.config.block_size :]
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    generator = torch.Generator(device).manual_seed(seed)
    completions = [Completion(tokenizer, stops, context=ids[-4:]) for _ in range(cfg.num_samples)]
    streaming = cfg.stream and cfg.num_samples == 1
    printed = 0
    if streaming:
        out.write(prompt)
        out.flush()

    t0 = time.perf_counter()
    t_first, steps = None, 0
    with autocast(device, dtype):
        for token in generate_tokens(model, idx, cfg.max_new_tokens, cfg.num_samples, temperature=cfg.temperature,
                                     top_k=cfg.top_k, top_p=cfg.top_p, generator=generator, use_cache=use_cache):
            steps += 1
            new = token[:, 0].tolist()  # waits for the device: timings below are real on a GPU too
            if t_first is None:
                t_first = time.perf_counter()  # prefill done, first token sampled
            for completion, t in zip(completions, new):
                completion.add(t)
            if streaming:
                settled = completions[0].settled()
                out.write(settled[printed:])
                out.flush()
                printed = len(settled)
            if all(c.stopped for c in completions):
                break
    t_end = time.perf_counter()

    texts = [prompt + c.text for c in completions]
    if streaming:
        out.write(completions[0].text[printed:] + "\n")
    else:
        for i, text in enumerate(texts):
            out.write(text + "\n" + ("-" * 40 + "\n" if i + 1 < len(texts) else ""))
    out.flush()
    if t_first is not None:
        B = cfg.num_samples
        prefill_s, decode_s = t_first - t0, t_end - t_first
        shared = f", once for {B} samples" if use_cache and B > 1 else ""  # generate_tokens shares it
        err.write(f"prefill: {len(ids)} tokens in {prefill_s * 1e3:.1f} ms ({len(ids) / prefill_s:,.0f} tokens/s{shared}); "
                  f"decode: {(steps - 1) * B} tokens in {decode_s:.2f} s "
                  f"({(steps - 1) * B / max(decode_s, 1e-9):,.0f} tokens/s){'' if use_cache else ' without the KV cache'}\n")
    if cfg.attention_plot:
        save_attention_plot(model, ids + completions[0].ids, tokenizer, cfg, err)
    return texts


def save_attention_plot(model: GPT, tokens: list[int], tokenizer, cfg: SampleConfig, err: TextIO) -> None:
    """Heatmaps of every head's attention over the first tokens of sample 0 (prompt, then generated)."""
    from runtime.plots import plot_attention

    tokens = tokens[: min(cfg.attention_tokens, model.config.block_size)]
    idx = torch.tensor([tokens], device=next(model.parameters()).device)
    maps = model.attention_maps(idx)[:, 0]  # (n_layer, H, T, T)
    kind = "causal" if model.config.causal else "bidirectional (causal=false)"
    plot_attention(maps, [tokenizer.decode([t]) for t in tokens], cfg.attention_plot, cfg.attention_layer,
                   title=f"{kind} attention over {len(tokens)} tokens: row = query, column = key")
    err.write(f"attention weights of the first {len(tokens)} tokens saved to {cfg.attention_plot}\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python sample.py key=value ...` (argv: those items; None reads sys.argv)."""
    run_command("sample", SampleConfig, lambda cfg, args: sample(cfg), argv)


if __name__ == "__main__":
    main()
