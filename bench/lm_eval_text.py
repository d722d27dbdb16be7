"""lm-evaluation-harness on an export of a train.py run: bits per byte of its val text, against ropegpt's own.

    python -m bench.lm_eval_text RUN [--export DIR] [--chars N] [--task-dir DIR]

Needs lm-eval with its Hugging Face backend, a benchmark-only extra (not in requirements.txt):
pip install "lm-eval[hf]".

RUN is a run folder of train.py (its best.pt, else last.pt) or a checkpoint file. The run is exported to a
temporary Hugging Face Llama folder (export.py), unless --export names one already made from it. Its val
split is decoded to text (the first N characters with --chars) and written as a jsonl file, beside a copy of
bench/lm_eval_task/ropegpt_text.yaml that points at it (kept in --task-dir, else temporary). lm-eval then
runs as a user types it (the command is printed), and three figures of the same text are compared:

1. lm-eval's bits_per_byte: the export through transformers, scored as lm-eval scores a perplexity task.
2. ropegpt's on the same windows: the checkpoint's GPT in fp32 on the windows lm-eval makes
   (`rolling_windows`). The same network, tokens and positions: equal to the first up to float rounding.
3. The run's own val loss (nats per token, on the fixed random val batches of the evaluation at the
   checkpoint's step), converted: val_loss / ln 2 x tokens / bytes of this text. Other windows, and fewer
   of them: close to the first, not equal.
"""

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from data.config import DataConfig, dataset_dir
from data.shards import load_meta, split_shards
from data.tokenizers import special_ids, tokenizer_from_meta
from export import ExportConfig, export
from model.gpt import GPT
from runtime.checkpoint import find_checkpoint, load_checkpoint, run_dir_of
from runtime.errors import UserError, exit_on_user_error

TASK = "ropegpt_text"
TASK_YAML = Path(__file__).resolve().parent / "lm_eval_task" / f"{TASK}.yaml"


# ---------------------------------------------------------------------------------------------
# The windows: how lm-eval's loglikelihood_rolling scores a long text with a short context
# ---------------------------------------------------------------------------------------------


def rolling_windows(ids: list[int], prefix: int, context: int) -> Iterator[tuple[list[int], list[int]]]:
    """(inputs, targets) pairs that score every token of ids exactly once, as lm-eval's rolling log-likelihood
    does (lm_eval.utils.get_rolling_token_windows with context_len=1, then make_disjoint_window).

    The tokens are cut into consecutive chunks of `context` tokens, the targets of one forward pass each.
    The logits at the last len(targets) positions of inputs predict the targets. The first chunk has no
    token before it: `prefix` (the BOS, else the EOS) stands there. Every later chunk's inputs are the
    `context` tokens just before its last target, so a chunk's first target sees one token of the chunk
    before (the last, shorter chunk sees more); no window is longer than the model's context.
    """
    if not ids:
        return
    first = ids[:context]
    yield [prefix] + first[:-1], first
    for start in range(context, len(ids), context):
        end = min(start + context, len(ids))
        yield ids[end - context - 1:end - 1], ids[start:end]


@torch.no_grad()
def rolling_nats(model: GPT, ids: list[int], prefix: int) -> float:
    """-log p(ids) in nats, summed over the rolling windows: the model's fp32 log-softmax, summed in fp64."""
    total = 0.0
    for inputs, targets in rolling_windows(ids, prefix, model.config.block_size):
        logits, _ = model(torch.tensor([inputs]))
        logp = torch.log_softmax(logits[0, -len(targets):].float(), dim=-1)
        total -= logp.gather(1, torch.tensor(targets)[:, None]).double().sum().item()
    return total


# ---------------------------------------------------------------------------------------------
# The text: the run's val split, as documents
# ---------------------------------------------------------------------------------------------


def val_documents(state: dict, chars: Optional[int] = None) -> list[str]:
    """The run's val split decoded to text (its first `chars` characters), one string per document.

    At character level the whole split is one text (documents are separated by a newline, itself a
    character). With an end-of-text token the split is cut there, and each document's BOS dropped.
    """
    tok = tokenizer_from_meta(state["data_meta"])
    data_dir = dataset_dir(DataConfig(**state["config"]["data"]))
    meta = load_meta(data_dir)  # a DataError (a UserError) says how to prepare a missing dataset
    ids = np.concatenate([np.fromfile(path, dtype=meta["dtype"]) for path, _ in split_shards(data_dir, "val", meta)])
    if tok.eot is None:
        pieces = [ids]
    else:
        pieces = np.split(ids, np.flatnonzero(ids == tok.eot) + 1)  # each piece ends with its end-of-text
        drop = {tok.eot} | ({tok.bos} if tok.bos is not None else set())
        pieces = [p[np.isin(p, list(drop), invert=True)] for p in pieces]
    documents = []
    for piece in pieces:
        left = None if chars is None else chars - sum(map(len, documents))  # None: all
        if left is not None and left <= 0:
            break
        text = tok.decode(piece[:left].tolist())  # a token is a character or more: these are enough, mostly
        if left is not None and len(text) < left < len(piece):  # byte-level tokens of one character each
            text = tok.decode(piece.tolist())
        if text[:left]:
            documents.append(text[:left])
    if not documents:
        raise UserError(f"the val split of {data_dir} holds no text to score")
    return documents


def write_task(documents: list[str], folder: Path) -> Path:
    """folder/ropegpt_text.jsonl ({"text": ...} a line) and a copy of the task's YAML that names it by its
    full path, so lm-eval finds it from any folder; returns folder (lm-eval's --include_path)."""
    import yaml  # lm-eval's own dependency

    folder.mkdir(parents=True, exist_ok=True)
    data = (folder / f"{TASK}.jsonl").resolve()
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents), encoding="utf-8")
    task = yaml.safe_load(TASK_YAML.read_text(encoding="utf-8"))
    task["dataset_kwargs"]["data_files"]["test"] = str(data)
    (folder / TASK_YAML.name).write_text(f"# {TASK_YAML} with this folder's data file (bench/lm_eval_text.py)\n"
                                         + yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------
# lm-eval, run as a user runs it
# ---------------------------------------------------------------------------------------------


def lm_eval_command(export: Path, task_dir: Path, out_dir: Path) -> list[str]:
    return ["lm_eval", "--model", "hf", "--model_args", f"pretrained={export},dtype=float32", "--tasks", TASK,
            "--include_path", str(task_dir), "--device", "cpu", "--batch_size", "1", "--output_path", str(out_dir)]


def find_lm_eval() -> str:
    """The lm_eval command of this Python's environment (else of PATH), after checking what its hf model needs."""
    import importlib.util

    for module in ("lm_eval", "accelerate"):  # lm-eval's hf model imports accelerate (the [hf] extra)
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{module} is not installed: pip install \"lm-eval[hf]\" (a benchmark-only extra)")
    here = Path(sys.executable).parent
    found = shutil.which("lm_eval", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise UserError(f"lm-eval is installed but its lm_eval command is not in {here} or on PATH")
    return found


def run_lm_eval(export: Path, task_dir: Path, out_dir: Path) -> dict:
    """Run lm_eval on the task, print its results table, return its results JSON."""
    command = lm_eval_command(export, task_dir, out_dir)
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run([find_lm_eval(), *command[1:]], capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        print("\n".join(output[-30:]), file=sys.stderr)
        raise UserError(f"lm_eval exited with code {done.returncode} (its last lines are above)")
    print("\n".join(line for line in output if line.startswith("|")) + "\n")  # its table, not its progress bars
    files = sorted(out_dir.rglob("results_*.json"))
    if not files:
        raise UserError(f"lm_eval wrote no results_*.json under {out_dir}")
    return json.loads(files[-1].read_text(encoding="utf-8"))


def check_same_setup(results: dict, prefix: int, context: int) -> None:
    """lm-eval must have used the context and prefix token that ropegpt's windows assume."""
    bos = results.get("tokenizer_bos_token") or [None, "None"]
    used = int(bos[1]) if bos[1] != "None" else results.get("eot_token_id")
    if results.get("max_length") != context or used != prefix:
        raise UserError(f"lm-eval used a context of {results.get('max_length')} tokens and prefix token {used}, "
                        f"ropegpt's windows {context} and {prefix}: is the export made from this run? Export it "
                        "again (python export.py ckpt=RUN out=DIR)")


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


def prefix_token(tokenizer) -> int:
    """The token lm-eval puts before a text: the export's BOS, else its EOS (special_ids: what export.py declares)."""
    bos, eos = special_ids(tokenizer)
    if bos is None and not eos:
        raise UserError("this run's tokenizer has no BOS or EOS to export (a character vocabulary without a newline): "
                        "lm-eval would have no token to put before the text")
    return bos if bos is not None else eos[0]


def run_val_loss(state: dict, checkpoint: Path) -> float:
    """The val loss of the checkpoint's weights: its own evaluation (best.pt always has one), else the last in the
    run's metrics.jsonl, else the best of the run."""
    if state.get("val_loss") is not None:
        return state["val_loss"]
    metrics = (run_dir_of(checkpoint) or checkpoint.parent) / "metrics.jsonl"
    if metrics.is_file():
        entries = map(json.loads, metrics.read_text(encoding="utf-8").splitlines())
        evals = [e for e in entries if e.get("kind") == "eval"]
        if evals:
            return evals[-1]["val_loss"]
    return state["best_val_loss"]


def compare(run: Path, export_dir: Optional[Path] = None, chars: Optional[int] = None,
            task_dir: Optional[Path] = None) -> dict:
    """The three bits-per-byte figures of the run's val text (module docstring), and what they were measured on."""
    find_lm_eval()  # before anything slow: fails at once without lm-eval
    checkpoint = find_checkpoint(run, prefer="best.pt")  # the one export.py exports
    state = load_checkpoint(checkpoint)
    model = GPT.from_state(state["model_config"], state["model"]).float().eval()
    tok = tokenizer_from_meta(state["data_meta"])
    prefix, context = prefix_token(tok), model.config.block_size
    documents = val_documents(state, chars)
    with tempfile.TemporaryDirectory(prefix="lm_eval_text.") as tmp:
        tmp = Path(tmp)
        if export_dir is None:
            export_dir = export(ExportConfig(ckpt=str(checkpoint), out=str(tmp / "export")))
        elif not (export_dir := export_dir.expanduser()).joinpath("config.json").is_file():
            raise UserError(f"--export {export_dir} is not a folder written by export.py (no config.json)")
        started = time.perf_counter()
        results = run_lm_eval(export_dir.resolve(), write_task(documents, task_dir or tmp / "task"), tmp / "results")
        lm_eval_s = time.perf_counter() - started
    check_same_setup(results, prefix, context)
    ids = [tok.encode(d) for d in documents]
    n_bytes = sum(len(d.encode("utf-8")) for d in documents)
    n_tokens = sum(map(len, ids))
    started = time.perf_counter()
    nats = sum(rolling_nats(model, doc_ids, prefix) for doc_ids in ids)
    ropegpt_s = time.perf_counter() - started
    val_loss = run_val_loss(state, checkpoint)
    return {"checkpoint": str(checkpoint), "step": state.get("step"), "tokenizer": tok.kind, "context": context,
            "documents": len(documents), "chars": sum(map(len, documents)), "bytes": n_bytes, "tokens": n_tokens,
            "windows": sum(len(list(rolling_windows(i, prefix, context))) for i in ids),
            "lm_eval": results["results"][TASK]["bits_per_byte,none"],
            "same_windows": nats / (n_bytes * math.log(2)), "val_loss": val_loss,
            "val_loss_bits_per_byte": val_loss / math.log(2) * n_tokens / n_bytes,
            "lm_eval_s": lm_eval_s, "ropegpt_s": ropegpt_s}


def table(r: dict) -> str:
    """The three figures as a markdown table, each with its difference from lm-eval's, relative."""
    rel = lambda x: f"{(x - r['lm_eval']) / r['lm_eval']:+.2e}"  # noqa: E731
    return "\n".join([
        f"{r['checkpoint']} (step {r['step']}, {r['tokenizer']} tokenizer, context {r['context']}): "
        f"{r['documents']} document(s), {r['chars']:,} characters, {r['bytes']:,} bytes, {r['tokens']:,} tokens, "
        f"{r['windows']:,} windows. lm_eval took {r['lm_eval_s']:.0f} s (start-up included), ropegpt's windows "
        f"{r['ropegpt_s']:.0f} s",
        "",
        "| bits per byte of the val text | value | relative to lm-eval |",
        "| --- | --- | --- |",
        f"| lm-eval bits_per_byte (export, transformers, fp32) | {r['lm_eval']:.6f} | |",
        f"| ropegpt on the same windows (GPT, fp32) | {r['same_windows']:.6f} | {rel(r['same_windows'])} |",
        f"| ropegpt's val loss {r['val_loss']:.4f} nats/token x tokens/bytes / ln 2 | "
        f"{r['val_loss_bits_per_byte']:.6f} | {rel(r['val_loss_bits_per_byte'])} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder of train.py, or a checkpoint file")
    parser.add_argument("--export", type=Path, help="an export of that run (python export.py); default: made here")
    parser.add_argument("--chars", type=int, help="score the first N characters of the val split only")
    parser.add_argument("--task-dir", type=Path, help="keep the task's jsonl and YAML here (default: temporary)")
    args = parser.parse_args()
    with exit_on_user_error():
        if args.chars is not None and args.chars < 1:
            raise UserError(f"--chars {args.chars}: give a positive number of characters")
        print(table(compare(args.run, args.export, args.chars, args.task_dir)))


if __name__ == "__main__":
    main()
