"""Two variants of a whole training command, alternated A B A B: wall time and validation loss.

    python -m bench.recipe_ab --pairs 2 --a compile=false --b compile=true
    python -m bench.recipe_ab --base experiment=shakespeare_char_cpu --a dtype=fp32 --b dtype=bf16

Each run is `python train.py BASE... VARIANT...` in its own process, timed from start to exit, so
start-up, data loading, compiling and every evaluation count. Alternating the variants spreads this
machine's drift over both. --cold-compile empties inductor's cache before each run, so a compiled
variant pays its full compile time as on a user's first run. Prints each run, then the mean ratio B/A.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.errors import UserError, exit_on_user_error

REPO = Path(__file__).resolve().parent.parent


def inductor_cache() -> Path:
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir()) /
                f"torchinductor_{os.environ.get('USER', 'root')}")


def run_once(args: list[str], out_dir: Path, cold: bool) -> dict:
    if cold:
        shutil.rmtree(inductor_cache(), ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"out_dir={out_dir}", "progress=false"],
                       cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise UserError(f"train.py {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:]}")
    evals = [e for e in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if e["kind"] == "eval"]
    compiled = [line.split("compiled in ")[1].split(" ")[0] for line in r.stdout.splitlines() if "compiled in " in line]
    return {"seconds": seconds, "last_val": evals[-1]["val_loss"], "best_val": min(e["val_loss"] for e in evals),
            "compile": compiled[0] if compiled else "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="*", default=["experiment=shakespeare_char_cpu"])
    parser.add_argument("--a", nargs="*", default=["compile=false"], help="overrides of variant A")
    parser.add_argument("--b", nargs="*", default=["compile=true"], help="overrides of variant B")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--cold-compile", action="store_true", help="empty inductor's cache before each run")
    args = parser.parse_args()
    with exit_on_user_error(), tempfile.TemporaryDirectory() as tmp:
        results = {"A": [], "B": []}
        for pair in range(args.pairs):
            for name, variant in (("A", args.a), ("B", args.b)):
                r = run_once([*args.base, *variant], Path(tmp) / f"{name}{pair}", args.cold_compile)
                results[name].append(r)
                print(f"pair {pair + 1} {name} ({' '.join(variant)}): {r['seconds']:.1f} s, val {r['last_val']:.4f} "
                      f"(best {r['best_val']:.4f}), compile {r['compile']}", flush=True)
        ratios = [b["seconds"] / a["seconds"] for a, b in zip(results["A"], results["B"], strict=True)]
        print(f"wall time B/A per pair: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"mean {sum(ratios) / len(ratios):.2f}")


if __name__ == "__main__":
    main()
