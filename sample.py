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

import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

import torch

from data import prompts
from data.tokenizers import HFTokenizer, tokenizer_from_meta
from model.generate import CompiledDecode, check_sampling_args, generate_tokens
from model.gpt import GPT
from model.llama import LlamaFormatError, is_llama_folder, load_llama
from model.quantize import quantize_int8
from runtime.checkpoint import find_checkpoint, load_checkpoint
from runtime.config import FREE_TEXT, require, run_command
from runtime.devices import DEVICE, DTYPE_NAMES, emulated_bf16_warning, resolve_device, resolve_dtype
from runtime.errors import UserError
from runtime.threads import Threads


QUANTIZE = ("none", "int8")


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
    dtype: str = "auto"  # the weights' dtype: auto is bf16 on CUDA (fp16 where bf16 is not native), fp32 elsewhere
    stream: bool = True  # print tokens as they come (with num_samples=1)
    stop: Any = None  # a string or a list of strings: a sample ends before the first one
    use_cache: bool = True
    quantize: str = "none"  # int8: weight-only int8 linear layers, a quarter of fp32's bytes (docs/sampling.md)
    compile: bool = False  # torch.compile the decode step alone (static KV cache; CUDA graphs on a GPU)
    threads: Optional[int] = None  # CPU threads; None: as many as other programs leave cores free
    attention_plot: Optional[str] = None  # a .png path: heatmaps of the attention weights of sample 0
    attention_layer: Optional[int] = None  # only this layer in the picture; None: every layer
    attention_tokens: int = 48  # the picture shows the first this many tokens (prompt, then generated)

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        require([(self.num_samples >= 1, f"num_samples={self.num_samples} must be >= 1"),
                  (self.max_new_tokens >= 0, f"max_new_tokens={self.max_new_tokens} must be >= 0"),
                  (self.threads is None or self.threads >= 1, f"threads={self.threads} must be >= 1"),
                  (self.attention_tokens >= 1, f"attention_tokens={self.attention_tokens} must be >= 1"),
                  (self.attention_layer is None or self.attention_layer >= 0,
                   f"attention_layer={self.attention_layer} must be >= 0"),
                  (self.seed is None or 0 <= self.seed < 2**63, f"seed={self.seed} must be in [0, 2^63)"),
                  (DEVICE.fullmatch(self.device) is not None,
                   f"device={self.device!r} must be auto, cpu, cuda, cuda:N or mps"),
                  (self.dtype in DTYPE_NAMES, f"dtype={self.dtype!r} must be one of {', '.join(DTYPE_NAMES)}"),
                  (self.quantize in QUANTIZE, f"quantize={self.quantize!r} must be one of {', '.join(QUANTIZE)}"),
                  (stops is None or isinstance(stops, list) and all(isinstance(s, str) and s for s in stops),
                   f"stop={self.stop!r} must be a non-empty string or a list of them (e.g. 'stop=[a,b]')")])


class SampleError(UserError):
    """Bad input to sample.py. The message says what to do; sample.py exits with code 2."""


def sample(cfg: SampleConfig, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> list[str]:
    """Generate cfg.num_samples texts (prompt + continuation); print them to out, speeds to err
    (by default the standard output and error of the moment)."""
    out, err = out or sys.stdout, err or sys.stderr
    stops = prompts.stop_strings(cfg.stop)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if (slow := emulated_bf16_warning(dtype, device)) is not None:
        err.write(f"warning: {slow}\n")
    check_plot_folder(cfg.attention_plot)  # before the model loads: it may take long
    model, tokenizer, loaded = load_model(cfg.ckpt, cfg.runs_dir, device)
    model.to(dtype)  # the weights in the sampling dtype: bf16 reads half of fp32's bytes per token
    if cfg.quantize == "int8":
        quantize_int8(model)  # a quarter of them
    check_plot_layer(cfg.attention_layer, model.config.n_layer)
    prompt = prompts.read_prompt(cfg.prompt)
    ids = prompts.prompt_tokens(tokenizer, prompt)  # the last check of the input: what follows is written out
    seed = secrets.randbelow(2**63) if cfg.seed is None else cfg.seed
    err.write(f"checkpoint: {loaded}\n")
    err.write(f"seed: {seed}\n" if cfg.seed is not None else f"seed: {seed} (seed={seed} repeats this sample)\n")
    use_cache = cfg.use_cache and cache_is_exact(model, err)
    ids = last_block(ids, model.config.block_size, err)
    # the prompt's last 4 tokens: context enough for a tokenizer to decode the first new one as in the text
    completions = prompts.Completions(tokenizer, prompt, stops, cfg.num_samples, out, cfg.stream, context=ids[-4:])
    generator = torch.Generator(device).manual_seed(seed)
    compiled = TimedCompile(model) if cfg.compile and use_cache else None
    with Threads(device, cfg.threads, lambda line: err.write(line + "\n")).chosen():  # the cores left free
        steps, prefill_s, decode_s = stream_samples(model, ids, cfg, use_cache, generator, completions, compiled)
    texts = completions.close()
    if compiled is not None and compiled.error:
        err.write(f"warning: torch.compile failed ({compiled.error}): decoded eagerly; compile=false skips it\n")
    elif compiled is not None and compiled.seconds:
        err.write(f"compile: the decode step in {compiled.seconds:.1f} s (not in the rates below)\n")
    if steps:
        err.write(speed_line(len(ids), cfg.num_samples, steps, prefill_s, decode_s, use_cache))
    if cfg.attention_plot:
        save_attention_plot(model, ids + completions.samples[0].ids, tokenizer, cfg, err)
    return texts


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python sample.py key=value ...` (argv: those items; None reads sys.argv)."""
    run_command("sample", SampleConfig, lambda cfg, args: sample(cfg), argv)


def stream_samples(model: GPT, ids: list[int], cfg: SampleConfig, use_cache: bool, generator: torch.Generator,
                   completions: prompts.Completions, compiled: Optional["TimedCompile"]) -> tuple[int, float, float]:
    """Give completions each new token until max_new_tokens or until every sample has stopped.

    Returns the steps taken, the seconds to the first token (the prefill, less any compiling) and those
    of the steps after it.
    """
    idx = torch.tensor([ids], dtype=torch.long, device=generator.device)  # (1, T0)
    t0 = time.perf_counter()
    t_first, steps = t0, 0
    for token in generate_tokens(model, idx, cfg.max_new_tokens, cfg.num_samples, temperature=cfg.temperature,
                                 top_k=cfg.top_k, top_p=cfg.top_p, generator=generator, use_cache=use_cache,
                                 compiled=compiled):
        steps += 1
        new = token[:, 0].tolist()  # (num_samples,): waits for the device, so the timings are real on a GPU too
        if steps == 1:
            t_first = time.perf_counter()  # prefill done (and any compiling), first token sampled
        completions.add(new)
        if completions.stopped:
            break
    return steps, t_first - t0 - (compiled.seconds if compiled else 0.0), time.perf_counter() - t_first


class TimedCompile(CompiledDecode):
    """CompiledDecode, and how long compiling took (printed apart from the decode rate)."""

    seconds = 0.0

    def prepare(self, caches: list) -> None:
        started = time.perf_counter()
        super().prepare(caches)
        self.seconds = time.perf_counter() - started


def speed_line(prompt_len: int, num_samples: int, steps: int, prefill_s: float, decode_s: float,
               use_cache: bool) -> str:
    """Tokens per second of the prefill (of the prompt: with a cache, generate_tokens prefills it once for
    all samples) and of the decode steps after the first token (of every sample)."""
    decoded = (steps - 1) * num_samples
    shared = f", once for {num_samples} samples" if use_cache and num_samples > 1 else ""
    return (f"prefill: {prompt_len} tokens in {prefill_s * 1e3:.1f} ms "
            f"({prompt_len / prefill_s:,.0f} tokens/s{shared}); "
            f"decode: {decoded} tokens in {decode_s:.2f} s ({decoded / max(decode_s, 1e-9):,.0f} tokens/s)"
            f"{'' if use_cache else ' without the KV cache'}\n")


def cache_is_exact(model: GPT, err: TextIO) -> bool:
    """Whether a KV cache gives the model's own outputs: only under the causal mask (a note says when not)."""
    if not model.config.causal:
        err.write("note: this model attends both ways (causal=false), so a KV cache would go stale: "
                  "sampling without it\n")
    return model.config.causal


def last_block(ids: list[int], block_size: int, err: TextIO) -> list[int]:
    """The prompt's last block_size tokens: as in nanoGPT, the model reads no more (a note says when it cuts)."""
    if len(ids) > block_size:
        err.write(f"note: the prompt is {len(ids)} tokens, longer than the model's context of "
                  f"{block_size}: the model reads its last {block_size}\n")
    return ids[-block_size:]


def check_plot_folder(path: Optional[str]) -> None:
    if path and not Path(path).expanduser().parent.is_dir():
        raise SampleError(f"attention_plot={path}: the folder {Path(path).parent} does not exist")


def check_plot_layer(layer: Optional[int], n_layer: int) -> None:
    if layer is not None and not 0 <= layer < n_layer:
        raise SampleError(f"attention_layer={layer}: the model has layers 0..{n_layer - 1}")


def save_attention_plot(model: GPT, tokens: list[int], tokenizer, cfg: SampleConfig, err: TextIO) -> None:
    """Heatmaps of every head's attention over the first tokens of sample 0 (prompt, then generated)."""
    from runtime.plots import plot_attention

    tokens = tokens[: min(cfg.attention_tokens, model.config.block_size)]
    idx = torch.tensor([tokens], device=next(model.parameters()).device)
    maps = model.attention_maps(idx)[:, 0].float()  # (n_layer, H, T, T)
    kind = "causal" if model.config.causal else "bidirectional (causal=false)"
    plot_attention(maps, [tokenizer.decode([t]) for t in tokens], cfg.attention_plot, cfg.attention_layer,
                   title=f"{kind} attention over {len(tokens)} tokens: row = query, column = key")
    err.write(f"attention weights of the first {len(tokens)} tokens saved to {cfg.attention_plot}\n")


def load_model(where: Optional[str], runs_dir: str, device: torch.device) -> tuple[GPT, Any, str]:
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


if __name__ == "__main__":
    main()
