"""How much code a reader crosses: one training step, and one sampled token, measured by running them.

    python -m bench.reading_path                  # this checkout
    python -m bench.reading_path --repo ../old    # another checkout (e.g. a `git worktree` of an older commit)
    python -m bench.reading_path --places         # also list every place on each path

The method, so that anyone can repeat it on any commit: each path is one real command, run in a child
process under `sys.setprofile`, from the command line until the moment named below; every function or
method of the project (not tests/, bench/ or the venv) that runs is mapped to its "place": the top-level
function or the method that holds it (nested functions belong to it), or a class's header (its line,
docstring and fields) when a dataclass is built; each place counts once at its full length, decorators
and docstrings included. A place is what a reader following the run in a debugger must open.

  train   `python train.py experiment=shakespeare_char_cpu max_steps=1` (the CPU recipe, one step, data
          prepared beforehand), until the first optimizer's `step` is called
  sample  `python sample.py ckpt=THAT_RUN prompt=ROMEO: max_new_tokens=5 seed=1`, until the first
          generated text is written to stdout
"""

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP = ("tests", "bench", ".venv", "venv")


def places_of(path: Path) -> list[tuple[int, int, str]]:
    """(first line, last line, name) of each place of a module: a top-level function, a class's header (its
    line, docstring and fields, up to its first method) and each method; decorators included."""
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno, node.name))
        elif isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            starts = [min([m.lineno] + [d.lineno for d in m.decorator_list]) for m in methods]
            out.append((node.lineno, (min(starts) - 1) if starts else node.end_lineno, node.name))
            out += [(first, m.end_lineno, f"{node.name}.{m.name}") for first, m in zip(starts, methods)]
    return out


def trace(repo: Path, argv: list[str], until: str) -> list[list]:
    """Run the command `argv` in this process and return the places it crossed: [file, name, lines]."""
    sys.path.insert(0, str(repo))
    seen, stop = {}, [False]

    def owner(filename: str, line):
        """The place of `line` in a file (a line number, or a class's name for its header)."""
        path = Path(filename)
        try:
            rel = path.resolve().relative_to(repo)
        except ValueError:
            return None
        if rel.parts[0] in SKIP or path.suffix != ".py":
            return None
        for first, last, name in places_of(path):
            if (first <= line <= last) if isinstance(line, int) else name == line:
                return str(rel), name, last - first + 1
        return None

    def profile(frame, event, arg):
        if stop[0] or event != "call":
            return
        code = frame.f_code
        if until == "train" and code.co_name == "step" and "torch/optim" in code.co_filename:
            stop[0] = True
            return
        filename, line = code.co_filename, code.co_firstlineno
        if filename.startswith("<"):  # a dataclass's generated __init__: count the class it builds
            this = frame.f_locals.get("self")
            module = sys.modules.get(type(this).__module__) if this is not None else None
            if module is None or not getattr(module, "__file__", None):
                return
            filename = module.__file__
            line = -1 - hash(type(this).__qualname__) % 10**9  # a key of its own for each class
            key = (filename, line)
            if key not in seen:
                seen[key] = owner(filename, type(this).__qualname__)
            return
        key = (filename, line)
        if key not in seen:
            seen[key] = owner(filename, line)

    class Stdout:
        """stdout that ends the sample trace at the first write of generated text."""

        def __init__(self, real, prompt: str):
            self.real, self.prompt = real, prompt

        def write(self, text: str) -> int:
            if text and text != self.prompt and until == "sample":
                stop[0] = True
            return self.real.write(text)

        def flush(self) -> None:
            self.real.flush()

    module = __import__(argv[0].removesuffix(".py"))
    sys.stdout = Stdout(sys.stdout, "ROMEO:")
    sys.setprofile(profile)
    try:
        module.main(argv[1:])
    finally:
        sys.setprofile(None)
        sys.stdout = sys.stdout.real
    return sorted({p for p in seen.values() if p is not None})


def measure(repo: Path, work: Path, show_places: bool) -> dict:
    data_root = work / "data"
    data_root.mkdir()
    (data_root / "tinyshakespeare").mkdir()
    source = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare" / "input.txt"
    if source.exists():  # no download when this checkout has it already
        (data_root / "tinyshakespeare" / "input.txt").write_bytes(source.read_bytes())
    run = work / "run"
    train = ["train.py", "experiment=shakespeare_char_cpu", "max_steps=1", f"out_dir={run}", f"data.root={data_root}",
             "progress=false"]
    sample = ["sample.py", f"ckpt={run}", "prompt=ROMEO:", "max_new_tokens=5", "seed=1"]
    subprocess.run([sys.executable, "-m", "data.prepare", f"data.root={data_root}"], cwd=repo, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, *train], cwd=repo, check=True, capture_output=True)  # the checkpoint to sample
    results = {}
    traced_train = [a if not a.startswith("out_dir=") else f"out_dir={work / 'traced'}" for a in train]
    for name, argv in (("train", traced_train), ("sample", sample)):
        child = subprocess.run([sys.executable, "-m", "bench.reading_path", "--child", name, "--repo", str(repo),
                                "--", *argv], cwd=repo, capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"{' '.join(argv)} failed:\n{child.stderr[-3000:]}")
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
    for name, found in results.items():
        files = sorted({f for f, _, _ in found})
        print(f"{name}: {sum(n for _, _, n in found)} lines, {len(found)} places, {len(files)} files")
        for f in files:
            mine = [(p, n) for g, p, n in found if g == f]
            print(f"  {f:28s} {sum(n for _, n in mine):5d} lines, {len(mine):3d} places"
                  + (f": {', '.join(f'{p} ({n})' for p, n in mine)}" if show_places else ""))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--places", action="store_true")
    parser.add_argument("--child", choices=("train", "sample"))
    parser.add_argument("argv", nargs="*")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if args.child:
        found = trace(repo, args.argv, args.child)
        print(json.dumps(found))
        return
    with tempfile.TemporaryDirectory() as work:
        measure(repo, Path(work), args.places)


if __name__ == "__main__":
    main()
