"""ropegpt's CPU recipe against nanoGPT's, side by side: time to nanoGPT's quality, and best quality in its time.

    python -m bench.vs_nanogpt --nanogpt ~/src/nanoGPT --pairs 2
    python -m bench.vs_nanogpt --nanogpt ~/src/nanoGPT --ropegpt optim.name=adamw   # another variant
    python -m bench.vs_nanogpt --nanogpt ~/src/nanoGPT --bpb --recipe shakespeare_bpe_cpu   # in bits per byte

Runs, alternated (nanoGPT, ropegpt, nanoGPT, ropegpt, ...), each as a whole command in its own process:
  nanoGPT: its README's CPU recipe on shakespeare_char (4 layers, width 128, context 64, batch 12,
           2000 iterations, no dropout), with --eval_interval=100;
  ropegpt: python train.py experiment=RECIPE eval_interval=100 [--ropegpt overrides], RECIPE
           shakespeare_char_cpu unless --recipe names another.
Every evaluation line is timestamped from the command's start. Reported per pair: nanoGPT's wall time
and final val loss, ropegpt's time to reach --target (nanoGPT's documented 1.886 by default) and its
best val loss within nanoGPT's wall time; then the ratios. nanoGPT is not part of ropegpt: give a clone
of github.com/karpathy/nanoGPT (its data/shakespeare_char is prepared from ropegpt's copy of Tiny
Shakespeare if it is not yet). Without --nanogpt the bench says so and does nothing.

--bpb compares in bits per byte instead, so a recipe of another tokenizer (a BPE) compares with nanoGPT's
characters: nanoGPT's val loss per character / ln 2 (Tiny Shakespeare is ASCII: a byte per character)
against the val bpb ropegpt logs; the target is then 2.12 bpb unless given (nanoGPT's A100 result on
this text, 1.4697 nats per character, is 2.120 bpb).
"""

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.errors import UserError, exit_on_user_error

REPO = Path(__file__).resolve().parent.parent
NANOGPT_CPU_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                      "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                      "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_EVAL = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")
ROPEGPT_EVAL = re.compile(r"eval at step (\d+): train loss [\d.]+, val loss ([\d.]+)")
ROPEGPT_EVAL_BPB = re.compile(r"eval at step (\d+): .*bits per byte: train [\d.]+, val ([\d.]+)")


def timed_evals(command: list[str], cwd: Path, pattern: re.Pattern) -> tuple[float, list[tuple[float, int, float]]]:
    """Run command; return its wall time and (seconds since start, step, val loss) of each evaluation."""
    started, evals = time.perf_counter(), []
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        tail = []
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            if m := pattern.search(line):
                evals.append((time.perf_counter() - started, int(m.group(1)), float(m.group(2))))
    if proc.returncode != 0:
        raise UserError(f"{' '.join(command[:3])} ... failed (exit {proc.returncode}): {''.join(tail)[-500:]}")
    return time.perf_counter() - started, evals


def prepare_nanogpt_data(nanogpt: Path) -> None:
    data = nanogpt / "data" / "shakespeare_char"
    if (data / "train.bin").exists():
        return
    if not (data / "input.txt").exists():
        from data.config import DataConfig
        from data.sources import source_files  # ropegpt's own copy of Tiny Shakespeare (downloaded once)

        shutil.copy(source_files(DataConfig())[0], data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, help="a clone of github.com/karpathy/nanoGPT")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--target", type=float, help="the val loss to reach (default: nanoGPT's README's 1.886; "
                        "with --bpb, 2.12 bits per byte)")
    parser.add_argument("--recipe", default="shakespeare_char_cpu", help="ropegpt's experiment= (configs/experiment/)")
    parser.add_argument("--ropegpt", nargs="*", default=[], help="overrides for ropegpt's recipe")
    parser.add_argument("--bpb", action="store_true", help="compare val bits per byte instead of val loss")
    args = parser.parse_args()
    args.target = args.target or (2.12 if args.bpb else 1.886)
    unit = "bpb" if args.bpb else "val loss"
    per_byte = 1 / math.log(2) if args.bpb else 1.0  # nanoGPT's nats per character, in bits per byte
    if args.nanogpt is None:
        print("skipped: give --nanogpt PATH, a clone of github.com/karpathy/nanoGPT (not part of ropegpt)")
        return
    with exit_on_user_error(), tempfile.TemporaryDirectory() as tmp:
        nanogpt = args.nanogpt.expanduser()
        if not (nanogpt / "train.py").is_file() or not (nanogpt / "config" / "train_shakespeare_char.py").is_file():
            raise UserError(f"--nanogpt {nanogpt} is not a nanoGPT checkout (no train.py and "
                            "config/train_shakespeare_char.py there)")
        prepare_nanogpt_data(nanogpt)
        ratios_time, rows = [], []
        for pair in range(args.pairs):
            theirs_s, theirs = timed_evals([sys.executable, "train.py", *NANOGPT_CPU_RECIPE, "--eval_interval=100",
                                            f"--out_dir={tmp}/nanogpt{pair}"], nanogpt, NANOGPT_EVAL)
            theirs = [(t, step, v * per_byte) for t, step, v in theirs]
            ours_s, ours = timed_evals([sys.executable, str(REPO / "train.py"), f"experiment={args.recipe}",
                                        "eval_interval=100", "progress=false", f"out_dir={tmp}/ropegpt{pair}",
                                        *args.ropegpt], REPO, ROPEGPT_EVAL_BPB if args.bpb else ROPEGPT_EVAL)
            reach = next((t for t, _, v in ours if v <= args.target), None)
            best_in_time = min((v for t, _, v in ours if t <= theirs_s), default=None)
            theirs_reach = next((t for t, _, v in theirs if v <= args.target), None)
            rows.append((pair + 1, theirs_s, theirs[-1][2], theirs_reach, ours_s, reach, best_in_time,
                         min(v for _, _, v in ours)))
            if reach is not None:
                ratios_time.append(reach / theirs_s)
            r = rows[-1]
            print(f"pair {r[0]} ({unit}): nanoGPT {r[1]:.1f} s, final {r[2]:.4f}"
                  f"{f', reaches {args.target} at {r[3]:.1f} s' if r[3] else ''} | ropegpt {r[4]:.1f} s, reaches "
                  f"{args.target} at {f'{r[5]:.1f} s ({r[5] / r[1]:.2f}x nanoGPT wall)' if r[5] else 'never'}, "
                  f"best within nanoGPT's {r[1]:.0f} s: {r[6] if r[6] is None else f'{r[6]:.4f}'} "
                  f"(best overall {r[7]:.4f})", flush=True)
        if ratios_time:
            print(f"time to {args.target}, ropegpt / nanoGPT wall time: {', '.join(f'{x:.2f}' for x in ratios_time)}")


if __name__ == "__main__":
    main()
