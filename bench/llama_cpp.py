"""ropegpt's exports in llama.cpp: converted as a user converts them, then tokens, greedy text and logits compared.

    python -m bench.llama_cpp RUN_OR_EXPORT --llama-cpp DIR [--outtype f32 f16] [--prompt TEXT] [--new-tokens 40]

RUN_OR_EXPORT: a run of train.py (exported first, with export.py's code, into a temporary folder) or a folder
export.py wrote, used as it is. DIR: a llama.cpp source folder, the one holding convert_hf_to_gguf.py and
gguf-py (default: $ROPEGPT_LLAMA_CPP); best the source the binding was built from (vendor/llama.cpp of
llama-cpp-python's source tarball), whose GGUF files that llama.cpp surely reads. For each --outtype the
export is converted to GGUF by llama.cpp's own script, as a subprocess, printed as a user types it; then
loaded in llama.cpp through its Python binding (pip install llama-cpp-python) and compared with ropegpt's
model of the same folder:

- the prompt's ids: llama.cpp's tokenizer (a BOS first where the GGUF's metadata asks for one) against
  ropegpt's, as sample.py makes them;
- greedy decoding of --new-tokens tokens, each side from its own prompt ids: how many are equal, and where
  the first difference is;
- the largest |logit difference| over the prompt's positions (llama.cpp fed ropegpt's ids, so that only the
  networks differ): with llama.cpp's default fp16 KV cache, as a user runs it, and with an fp32 one, which
  leaves only the arithmetic to differ (an f16 GGUF also rounds the weights);
- the ids of a long text (--text-chars characters of --text, Tiny Shakespeare by default) from each tokenizer.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

from data.config import DataConfig, data_root
from data.prompts import prompt_tokens, unescape
from data.tokenizers import HFTokenizer
from model.generate import complete
from model.llama import LlamaFormatError, is_llama_folder, load_llama
from runtime.errors import UserError, exit_on_user_error

ENV = "ROPEGPT_LLAMA_CPP"  # where a user keeps llama.cpp's source (a clone, or an unpacked llama-cpp-python)
CONVERTER = "convert_hf_to_gguf.py"
OUTTYPES = ("f32", "f16")
TINYSHAKESPEARE = data_root(DataConfig()) / DataConfig().download_name


def find_converter(llama_cpp: Optional[str]) -> Path:
    """DIR/convert_hf_to_gguf.py, DIR from --llama-cpp or $ROPEGPT_LLAMA_CPP; a UserError naming what is missing."""
    folder = llama_cpp or os.environ.get(ENV)
    if not folder:
        raise UserError(f"no llama.cpp folder: pass --llama-cpp DIR or set {ENV}=DIR, DIR a llama.cpp source folder "
                        f"(git clone https://github.com/ggml-org/llama.cpp) holding {CONVERTER}")
    converter = Path(folder).expanduser() / CONVERTER
    if not converter.is_file():
        raise UserError(f"{folder} has no {CONVERTER}: point --llama-cpp (or {ENV}) at a llama.cpp source folder, "
                        "e.g. a clone of https://github.com/ggml-org/llama.cpp")
    return converter


def import_llama_cpp():
    """The llama_cpp module (llama-cpp-python), or a UserError saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("this benchmark runs llama.cpp through its Python binding: pip install llama-cpp-python "
                        "(it compiles llama.cpp: 15 to 30 minutes on 2 cores)") from None
    return llama_cpp


def export_folder(path: Path, tmp: Path) -> Path:
    """path itself when it is a Hugging Face folder (export.py's output), else its run exported into tmp."""
    if is_llama_folder(path):
        return path
    from export import ExportConfig, export  # export.py's own code: the folder a user would convert

    return export(ExportConfig(ckpt=str(path), out=str(tmp / "export")))


def convert(converter: Path, folder: Path, outfile: Path, outtype: str) -> None:
    """Run llama.cpp's converter as a user types it (printed first); its error's last line becomes a UserError."""
    args = [str(converter), str(folder), "--outfile", str(outfile), "--outtype", outtype]
    print("$ " + shlex.join(["python", *args]), flush=True)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else "no message"
        hint = ("; install it in this Python (the converter imports torch, transformers, sentencepiece and its "
                "gguf-py)" if last.startswith("ModuleNotFoundError") else tokenizer_hint(folder))
        raise UserError(f"llama.cpp's converter failed on {folder} (exit code {done.returncode}): {last}{hint}")


def tokenizer_hint(folder: Path) -> str:
    """Why a character-level export fails to convert, where that is the case; else nothing."""
    try:
        kind = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if kind != "WordLevel":
        return ""
    return ("; this is a character-level export, whose one-token-per-character tokenizer (WordLevel) is none of "
            "the vocabularies llama.cpp's converter knows (SentencePiece, a Llama-style BPE with byte fallback, "
            "or a byte-level BPE whose pre-tokenizer it recognizes)")


def llama_cpp_side(llama_cpp, gguf: Path, prompt: str, ours: list[int], new_tokens: int, text: Optional[str],
                   n_ctx: int) -> dict:
    """llama.cpp's prompt ids, greedy ids, logits over ropegpt's prompt ids, and ids of the long text.

    Run as a user runs it, with llama.cpp's default KV cache of fp16; the logits once more with an fp32 cache,
    which leaves only the two implementations' arithmetic to differ.
    """
    result = with_llama(llama_cpp, gguf, n_ctx, {}, lambda llm: run_prompt(llama_cpp, llm, prompt, ours,
                                                                           new_tokens, text, n_ctx))
    f32 = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}
    result["logits_f32_cache"] = with_llama(llama_cpp, gguf, n_ctx, f32, lambda llm: llama_logits(llm, ours))
    return result


def with_llama(llama_cpp, gguf: Path, n_ctx: int, settings: dict, work):
    """work(llm) on the GGUF loaded with every position's logits kept, then the model closed."""
    llm = llama_cpp.Llama(model_path=str(gguf), logits_all=True, n_ctx=n_ctx, verbose=False, **settings)
    try:
        return work(llm)
    finally:
        llm.close()


def llama_logits(llm, ids: list[int]) -> torch.Tensor:
    """(T, V): llama.cpp's logits at each position of ids, from an empty cache."""
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(llm.scores[: len(ids)].copy())


def run_prompt(llama_cpp, llm, prompt: str, ours: list[int], new_tokens: int, text: Optional[str],
               n_ctx: int) -> dict:
    """llama_cpp_side's work on the model loaded with llama.cpp's defaults."""
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=False)
    if len(ids) + new_tokens > n_ctx:
        raise UserError(f"llama.cpp's {len(ids)} prompt tokens and --new-tokens {new_tokens} exceed the model's "
                        f"context of {n_ctx}: give a shorter prompt or fewer tokens")
    prompt_logits = llama_logits(llm, ours)
    llama_logits(llm, ids)
    greedy = []
    while True:  # greedy: the argmax of the last position's logits, fed back
        greedy.append(int(llm.scores[llm.n_tokens - 1].argmax()))
        if len(greedy) == new_tokens:
            break
        llm.eval([greedy[-1]])
    long_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text is not None else None
    return {"prompt_ids": ids, "greedy": greedy, "logits": prompt_logits, "text_ids": long_ids, "add_bos": add_bos}


@torch.no_grad()
def ropegpt_side(folder: Path, prompt: str, new_tokens: int, text: Optional[str]) -> dict:
    """ropegpt's prompt ids (as sample.py makes them), greedy ids, prompt logits and long-text ids."""
    tokenizer = HFTokenizer.from_folder(folder)
    try:
        model = load_llama(folder).eval()
    except LlamaFormatError as e:
        raise UserError(f"cannot read {folder}: {e}") from None
    try:
        ids = prompt_tokens(tokenizer, prompt)
        text_ids = tokenizer.encode(text) if text is not None else None
    except Exception as e:  # the Rust tokenizer raises a bare Exception, e.g. for a character outside a vocabulary
        raise UserError(f"ropegpt's tokenizer of {folder} cannot encode the prompt or the --text: "
                        f"{str(e)[:200]}") from None
    if len(ids) + new_tokens > model.config.block_size:
        raise UserError(f"the prompt's {len(ids)} tokens and --new-tokens {new_tokens} exceed the model's context "
                        f"of {model.config.block_size}: give a shorter prompt or fewer tokens")
    greedy = complete(model, torch.tensor([ids]), new_tokens, temperature=0)[0, len(ids):].tolist()
    logits = model(torch.tensor([ids]))[0][0]
    return {"prompt_ids": ids, "greedy": greedy, "logits": logits, "text_ids": text_ids,
            "n_ctx": model.config.block_size}


def first_difference(a: list[int], b: list[int]) -> Optional[int]:
    """The first index where a and b differ (a length counts when one is a prefix of the other), else None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(ours: dict, theirs: dict) -> dict:
    """The table's row: prompt ids equal, greedy tokens equal (and the first difference), max |logit diff|."""
    equal = sum(x == y for x, y in zip(ours["greedy"], theirs["greedy"]))
    text = None
    if ours["text_ids"] is not None:
        text = first_difference(ours["text_ids"], theirs["text_ids"])
    return {"prompt_equal": ours["prompt_ids"] == theirs["prompt_ids"], "greedy_equal": equal,
            "greedy_first_difference": first_difference(ours["greedy"], theirs["greedy"]),
            "max_logit_diff": (ours["logits"] - theirs["logits"]).abs().max().item(),
            "max_logit_diff_f32_cache": (ours["logits"] - theirs["logits_f32_cache"]).abs().max().item(),
            "max_logit": ours["logits"].abs().max().item(), "text_first_difference": text,
            "text_tokens": None if ours["text_ids"] is None else len(ours["text_ids"])}


def row(outtype: str, r: dict, new_tokens: int) -> str:
    greedy = f"{r['greedy_equal']} of {new_tokens}"
    if r["greedy_first_difference"] is not None:
        greedy += f" (first difference: token {r['greedy_first_difference']})"
    if r["text_tokens"] is None:
        text = "not checked"
    elif r["text_first_difference"] is None:
        text = f"yes ({r['text_tokens']:,} tokens)"
    else:
        text = f"no (first difference: token {r['text_first_difference']:,})"
    return (f"| {outtype} | {'yes' if r['prompt_equal'] else 'no'} | {greedy} | {r['max_logit_diff']:.2e} | "
            f"{r['max_logit_diff_f32_cache']:.2e} | {text} |")


def read_text(path: Optional[Path], chars: int) -> Optional[str]:
    """The first chars characters of --text; without --text, of Tiny Shakespeare if it is downloaded, else None."""
    if path is None:
        if not TINYSHAKESPEARE.is_file():
            return None
        path = TINYSHAKESPEARE
    try:
        return path.expanduser().read_text(encoding="utf-8")[:chars]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --text {path}: {e}") from None


def run(args: argparse.Namespace) -> list[dict]:
    """Export (if a run), convert and compare once per outtype; prints the commands, returns the rows."""
    if args.new_tokens < 1:
        raise UserError(f"--new-tokens {args.new_tokens} must be at least 1")
    if not args.path.exists():
        raise UserError(f"{args.path} does not exist: give a run folder of train.py or a folder export.py wrote")
    converter = find_converter(args.llama_cpp)
    llama_cpp = import_llama_cpp()
    prompt, text = unescape(args.prompt), read_text(args.text, args.text_chars)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ropegpt-llama-cpp-") as tmp:
        folder = export_folder(args.path, Path(tmp))
        ours = ropegpt_side(folder, prompt, args.new_tokens, text)
        for outtype in args.outtype:
            gguf = Path(tmp) / f"model-{outtype}.gguf"
            convert(converter, folder, gguf, outtype)
            theirs = llama_cpp_side(llama_cpp, gguf, prompt, ours["prompt_ids"], args.new_tokens, text,
                                    ours["n_ctx"])
            rows.append({"outtype": outtype, "add_bos": theirs["add_bos"], **compare(ours, theirs)})
    return rows


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder of train.py, or a folder export.py wrote")
    parser.add_argument("--llama-cpp", help=f"llama.cpp's source folder (default: ${ENV})")
    parser.add_argument("--outtype", nargs="+", choices=OUTTYPES, default=["f32"], help="GGUF weight types")
    parser.add_argument("--prompt", default="ROMEO:", help="with \\n, \\t escapes, as sample.py takes it")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--text", type=Path, help="the long text to tokenize (default: Tiny Shakespeare)")
    parser.add_argument("--text-chars", type=int, default=20_000)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        rows = run(args)
        print(f"\nprompt {args.prompt!r}, {args.new_tokens} greedy tokens, llama.cpp adds a BOS: "
              f"{'yes' if rows[0]['add_bos'] else 'no'}; logits up to {rows[0]['max_logit']:.1f}\n")
        print("| GGUF outtype | prompt ids equal | greedy tokens equal | max \\|logit difference\\| over the prompt, "
              "fp16 KV cache (llama.cpp's default) | the same, fp32 KV cache "
              f"| {args.text_chars:,} characters of text: ids equal |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(row(r["outtype"], r, args.new_tokens))


if __name__ == "__main__":
    main()
