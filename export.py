"""Export a model trained here as a Hugging Face Llama folder.

    python export.py ckpt=outputs/2026-11-22/06-00-00 out=exported/shakespeare
    python -c "import transformers as t; print(t.AutoModelForCausalLM.from_pretrained('exported/shakespeare'))"

The folder holds config.json (a LlamaConfig), generation_config.json, model.safetensors and the
tokenizer (tokenizer.json, tokenizer_config.json), the layout of any Llama model on the Hugging Face
Hub; transformers loads it (tested). ropegpt's GPT is Llama's network (model/llama.py), so nothing is
converted but names. The character vocabulary becomes a Hugging Face tokenizer with one token per character,
GPT-2's BPE one that gives tiktoken's ids, and a BPE trained on the corpus (data.tokenizer=bpe) is its own
tokenizer.json already.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from data.tokenizers import save_hf_tokenizer, special_ids, tokenizer_from_meta
from model.gpt import GPT
from model.llama import LlamaFormatError, llama_config, save_llama
from runtime.checkpoint import find_checkpoint, load_checkpoint
from runtime.config import run_command
from runtime.errors import UserError
from runtime.files import as_created


@dataclass
class ExportConfig:
    ckpt: Optional[str] = None  # a run folder (its best.pt, else last.pt) or a .pt file; None: the newest run
    runs_dir: str = "outputs"  # where train.py's run folders are, to find the newest one
    out: Optional[str] = None  # required: the folder to write, new or empty (nothing is ever overwritten)


class ExportError(UserError):
    """Bad input to export.py. The message says what to do; export.py exits with code 2."""


def export(cfg: ExportConfig) -> Path:
    """Write the checkpoint's model and tokenizer to cfg.out; returns that folder."""
    if not cfg.out:
        raise ExportError("out=DIR is required: the folder to write the Hugging Face model to (new or empty)")
    out = Path(cfg.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"out={out} already exists and is not an empty folder: choose a new one (nothing was "
                          "written)")
    path = find_checkpoint(cfg.ckpt, prefer="best.pt", runs_dir=cfg.runs_dir)
    state = load_checkpoint(path)
    try:
        model = GPT.from_state(state["model_config"], state["model"])
        tokenizer = tokenizer_from_meta(state["data_meta"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ExportError(f"{path} does not hold a usable model and tokenizer ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None
    try:
        llama_config(model.config)  # refuses what Llama cannot express, before anything is written
    except LlamaFormatError as e:
        raise ExportError(f"cannot export {path}: {e}") from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))  # ours alone
    except OSError as e:
        raise ExportError(f"cannot write beside out={out}: {e.strerror or e}") from None
    try:  # written fully, then renamed: never half a folder at out
        bos, eos = special_ids(tokenizer)
        save_llama(model, partial, bos, eos)
        save_hf_tokenizer(tokenizer, partial, model.config.block_size)
        as_created(partial)  # mkdtemp's folder is private (0o700): the export gets the user's usual permissions
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"exported {path} (step {state.get('step')}, {model.num_params():,} parameters, "
          f"{tokenizer.kind} tokenizer) to {out}/:")
    for file in sorted(out.iterdir()):
        print(f"  {file.name}  {file.stat().st_size:,} bytes")
    print(f"load it with transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}), "
          f"AutoTokenizer.from_pretrained({str(out)!r})")
    if tokenizer.kind == "char":
        print("note: llama.cpp cannot convert this export: its converter reads SentencePiece models and the byte-level "
              "BPEs of known models, not a vocabulary of characters; for llama.cpp, train on GPT-2 BPE tokens "
              "(data=shakespeare, or data.tokenizer=gpt2) and export that run (docs/huggingface.md)")
    elif tokenizer.kind == "bpe":
        print("note: llama.cpp's converter may refuse this export (\"BPE pre-tokenizer was not recognized\"): it "
              "knows a byte-level BPE by a hash of the ids it gives a test text, and a BPE trained on your corpus "
              "is none it knows; transformers and lm-eval load it; for llama.cpp, train on GPT-2 BPE tokens "
              "(data.tokenizer=gpt2) and export that run (docs/huggingface.md)")
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python export.py ckpt=RUN out=DIR` (argv: those items; None reads sys.argv)."""
    run_command("export", ExportConfig, lambda cfg, args: export(cfg), argv)


if __name__ == "__main__":
    main()
