"""One command that checks ropegpt's GPU code paths on the GPU it runs on, and prints a results table.

    python -m bench.gpu_check                       # on a machine with CUDA (exit 2 elsewhere)
    python -m bench.gpu_check --steps 100 --decode-tokens 200     # a quicker look

1. SDPA backends: which kernel serves each of the model's attention calls in bf16 (training with
   is_causal; grouped-query with enable_gqa; a chunked prefill with a mask; one-token decode), as
   torch would choose it, and where that is the slow math kernel.
2. Training: the GPU recipe (experiment=shakespeare_char) as `python train.py` runs it, compiled, in
   bf16 (--steps N: a run of N steps instead): wall time, last and best val loss, tokens/s, MFU, peak memory
   and compile time, from train.py itself.
3. Numerics: the first --check-steps losses of that recipe compiled in bf16 against eager fp32 from
   the same seed, within --tolerance.
4. Decode: sample.py's cached decode from the run of (2) at batch 1 and 8 (num_samples=8: tokens/s of
   all eight), as it is, with compile=true (CUDA graphs), quantize=int8, and both; the compile time
   beside a compiled row. int8 beside bf16 is the row pair that says whether int8 pays on this GPU.

Everything is written to one report (--report: Markdown, and the same rows as JSON beside it), which
fills docs/results.md's "Estimated, not measured". On one H100 the whole check should take well under
10 minutes (estimated: the recipe about 1.5 min, the rest a few).

--device cpu runs the same checks on the CPU with model=tiny (what the tests do, so the script is
known to work before a GPU runs it).
"""

import argparse
import atexit
import io
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import model_config
from model.gpt import GPT
from runtime.config import compose
from runtime.errors import UserError, exit_on_user_error


def sdpa_calls(model: GPT, device: torch.device) -> dict[str, tuple]:
    """The arguments of each kind of F.scaled_dot_product_attention call the model makes, captured."""
    captured, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        captured.append((q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    enable_gqa=enable_gqa)

    T = model.config.block_size
    x = torch.randint(0, model.config.vocab_size, (2, T), device=device)
    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(x)  # training shape
            caches = model.new_kv_caches(2, T)
            model(x[:, : T // 2], kv_caches=caches)  # prefill of an empty cache
            model(x[:, T // 2 : T // 2 + 4], kv_caches=caches)  # a chunk after cached tokens: a mask
            model(x[:, T // 2 + 4 : T // 2 + 5], kv_caches=caches)  # decode
    finally:
        F.scaled_dot_product_attention = real
    n = model.config.n_layer  # each forward pass above made one call per layer
    return {"training": captured[0], "chunk": captured[2 * n], "decode": captured[3 * n]}


def backend_of(args: tuple) -> str:
    """The SDPA backend torch picks for these arguments (its own dispatcher's choice)."""
    from torch.nn.attention import SDPBackend

    q, k, v, mask, dropout_p, is_causal, scale, enable_gqa = args
    try:
        choice = torch._fused_sdp_choice(q, k, v, mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
        return SDPBackend(choice).name
    except Exception as e:  # a private function; say so instead of failing the whole check
        return f"unknown ({type(e).__name__})"


def run_train(args: list[str]) -> tuple[dict, Path]:
    from train import TrainConfig, train

    out = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    atexit.register(shutil.rmtree, out, True)  # the check's own runs: gone when it ends
    summary = train(compose("train", TrainConfig, [*args, f"out_dir={out / 'run'}", "progress=false"]), args)
    return summary, out / "run"


def entries(run: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["kind"] == kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="train only this many steps (default: the recipe's)")
    parser.add_argument("--check-steps", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest |loss bf16 compiled - fp32 eager|")
    parser.add_argument("--decode-tokens", type=int, default=500)
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu to test this script")
    parser.add_argument("--data-root", default=None, help="where the prepared data lives (data.root)")
    parser.add_argument("--report", type=Path, default=Path("gpu_check_report.md"),
                        help="the report to write: this Markdown table, and the same rows as JSON beside it (.json)")
    args = parser.parse_args()
    with exit_on_user_error():
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserError("no CUDA GPU here: this check is for a GPU machine (python -m bench.gpu_check there)")
        device = torch.device(args.device)
        on_gpu = device.type == "cuda"
        recipe = ["experiment=shakespeare_char"] if on_gpu else ["model=tiny", "batch_size=4", "eval_batches=2",
                                                                 "suggest_cpu_recipe=false"]
        recipe += [f"device={args.device}"] + ([f"data.root={args.data_root}"] if args.data_root else [])
        rows = []

        # 1. SDPA backends, for multi-head and grouped-query attention
        shape = "small" if on_gpu else "tiny"
        mha = sdpa_calls(GPT(model_config(shape, n_kv_head=None)).to(device).eval(), device)
        gqa = sdpa_calls(GPT(model_config(shape, n_kv_head=2)).to(device).eval(), device)
        for name, call in [("training (is_causal)", mha["training"]), ("training, GQA (enable_gqa)", gqa["training"]),
                           ("chunked prefill after cached tokens (mask)", gqa["chunk"]),
                           ("one-token decode, GQA", gqa["decode"])]:
            backend = backend_of(call)
            rows.append((f"SDPA backend: {name}", backend + (" (the slow fallback)" if backend == "MATH" else "")))

        # 2. the recipe, compiled, bf16
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        steps = [f"max_steps={args.steps}", f"eval_interval={args.steps}"] if args.steps else []
        summary, run = run_train([*recipe, *steps, "log_interval=10", "compile=true", "dtype=bf16"])
        wall = time.perf_counter() - t0
        log = (run / "train.log").read_text()
        compiled = re.search(r"compiled in (\S+)", log)
        last = entries(run, "train")[-1]
        val = [e["val_loss"] for e in entries(run, "eval")]
        rows += [("training: steps, wall time", f"{summary['step']}, {wall:.1f} s"),
                 ("training: last and best val loss", f"{val[-1]:.4f}, {min(val):.4f}" if val else "no evaluation"),
                 ("training: compile time", compiled.group(1) if compiled else "not compiled (see train.log)"),
                 ("training: tokens/s", f"{last['tokens_per_s']:,.0f}"),
                 ("training: MFU", f"{100 * last['mfu']:.1f}%" if last.get("mfu") else "unknown device")]
        if on_gpu:
            rows.append(("training: peak memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"))

        # 3. numerics: compiled bf16 vs eager fp32
        n = args.check_steps
        common = [*recipe, f"max_steps={n}", f"eval_interval={n}", "log_interval=1", "model.dropout=0.0"]  # not RNG
        _, fast_run = run_train([*common, "compile=true", "dtype=bf16"])
        bf16 = [e["loss"] for e in entries(fast_run, "train")]
        _, ref_run = run_train([*common, "compile=false", "dtype=fp32"])
        fp32 = [e["loss"] for e in entries(ref_run, "train")]
        worst = max(abs(a - b) for a, b in zip(bf16, fp32, strict=True))
        rows.append((f"numerics: largest loss difference, bf16 compiled vs fp32 eager (TF32 matmuls on CUDA, as "
                      f"train.py runs fp32 there), dropout off, {n} steps",
                     f"{worst:.2e} ({'within' if worst <= args.tolerance else 'OUTSIDE'} {args.tolerance})"))

        # 4. cached decode at batch 1 and 8: as sample.py runs it, then with int8 weights, each eager and compiled
        from sample import SampleConfig, sample

        for batch, extra in [(b, e) for b in (1, 8) for e in ([], ["compile=true"], ["quantize=int8"],
                                                               ["quantize=int8", "compile=true"])]:
            err = io.StringIO()
            settings = [f"ckpt={run}", "prompt=ROMEO:", f"max_new_tokens={args.decode_tokens}", f"device={args.device}",
                        f"num_samples={batch}", "stream=false", *extra]
            sample(compose("sample", SampleConfig, settings), io.StringIO(), err)
            said = err.getvalue()
            decode = re.search(r"decode: .*?\(([\d,]+) tokens/s\)", said)
            compiled = re.search(r"compile: the decode step in ([\d.]+ s)", said)
            note = (f" (compiled in {compiled.group(1)})" if compiled else
                    " (compile failed: eager)" if "torch.compile failed" in said else "")
            rows.append((f"decode at batch {batch} (KV cache{', ' if extra else ''}{' '.join(extra)}): tokens/s",
                         (decode.group(1) + note) if decode else said[-200:]))

        name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
        table = "\n".join([f"| {name}, torch {torch.__version__} | |", "| --- | --- |"] +
                           [f"| {what} | {value} |" for what, value in rows])
        print("\n" + table)
        args.report.write_text(f"# bench.gpu_check, {time.strftime('%Y-%m-%d %H:%M')}\n\n{table}\n")
        args.report.with_suffix(".json").write_text(json.dumps(
            {"device": name, "torch": torch.__version__, "rows": [{"what": w, "value": v} for w, v in rows]},
            indent=2) + "\n")
        print(f"\nwrote {args.report} and {args.report.with_suffix('.json')}: paste the table into docs/results.md")
        if worst > args.tolerance:
            raise UserError(f"the compiled bf16 losses differ from eager fp32 by {worst:.4f} > {args.tolerance}")


if __name__ == "__main__":
    main()
