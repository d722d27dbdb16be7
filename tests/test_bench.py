"""Every benchmark is a module that imports cleanly and answers --help (they run for minutes, so CI does not run them)."""

import importlib
import json
import math
import pkgutil
import re

import pytest
import torch

import bench
from tests.helpers import REPO, run_command

MODULES = sorted(m.name for m in pkgutil.iter_modules([str(REPO / "bench")]))


def test_the_bench_folder_holds_the_benchmarks_the_readme_names():
    assert {"attention_scaling", "data_throughput", "peek_report", "sample_speed", "train_throughput"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports_and_has_a_main(name):
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main) and module.__doc__


HELP = """
import contextlib, io, runpy, sys
for name in sys.argv[1:]:
    sys.argv, out, code = [f"bench/{name}.py", "--help"], io.StringIO(), "no exit"
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)  # what python -m does
    except SystemExit as e:
        code = e.code
    print(name, code, out.getvalue().startswith("usage:"))
"""


@pytest.mark.slow
def test_python_dash_m_bench_name_dash_dash_help_works():
    """Each module run as `python -m bench.NAME --help` runs it (runpy, as -m does): usage, exit 0. One process
    for all of them (each would import torch again), and one real `python -m` besides."""
    r = run_command("-c", HELP, *MODULES, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == [f"{name} 0 True" for name in MODULES]
    real = run_command("-m", "bench.recipe_ab", "--help", timeout=120)
    assert real.returncode == 0 and real.stdout.startswith("usage:"), real.stderr[-2000:]


def test_bench_shapes_come_from_the_configs():
    small = bench.model_config("small")
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size, small.vocab_size) == (6, 6, 384, 256, 65)
    assert bench.model_config("mini", vocab_size=50257).n_embd == 128


def test_gpu_check_refuses_a_machine_without_cuda_with_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    r = run_command("-m", "bench.gpu_check", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: no CUDA GPU here: this check is for a GPU machine (python -m bench.gpu_check there)"]


@pytest.mark.slow
def test_gpu_check_runs_its_four_checks_end_to_end_on_the_cpu(data_root, tmp_path):
    report = tmp_path / "report.md"
    r = run_command("-m", "bench.gpu_check", "--device", "cpu", "--steps", "4", "--check-steps", "3",
                    "--decode-tokens", "10", "--data-root", str(data_root), "--report", str(report), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 20 and all(line.count("|") == 3 for line in table), table
    assert [line for line in report.read_text().splitlines() if line.startswith("| ")] == table
    rows = json.loads(report.with_suffix(".json").read_text())["rows"]
    assert [f"| {row['what']} | {row['value']} |" for row in rows] == table[2:]
    assert "| training: steps, wall time | 4, " in r.stdout  # the step train.py ended at (its summary)
    decodes = [line for line in table if line.startswith("| decode at batch ")]
    assert [line.split(" (")[0] for line in decodes] == ["| decode at batch 1"] * 4 + ["| decode at batch 8"] * 4
    assert all(re.search(r"\| [\d,]+( \(.*\))? \|$", line) for line in decodes), decodes
    assert sum("SDPA backend" in line and "unknown" not in line for line in table) == 4
    assert "(within 0.05)" in r.stdout


@pytest.mark.slow
def test_tokenizer_bpb_trains_each_tokenizer_and_tables_their_bits_per_byte(tmp_path, tinyshakespeare):
    text = tmp_path / "small.txt"
    text.write_text(tinyshakespeare.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    r = run_command("-m", "bench.tokenizer_bpb", "--base", "model=tiny", "max_steps=4", "eval_interval=4",
                    "eval_batches=2", "batch_size=4", "compile=false", "suggest_cpu_recipe=false", "plot=false",
                    "--tokenizers", "char", "bpe300", "--seeds", "1", "--text", str(text), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in r.stdout.splitlines()
            if line.startswith(("| char", "| bpe300"))}
    assert set(rows) == {"char", "bpe300"}
    assert float(rows["char"][1]) == pytest.approx(1.0, abs=0.01)  # ASCII: a byte per character
    assert float(rows["bpe300"][1]) > 1.05  # 43 merges already join frequent pairs
    for row in rows.values():  # bpb = nats per token x tokens per byte / ln 2
        loss, bpb = float(row[2]), float(row[3])
        assert bpb == pytest.approx(loss / float(row[1]) / math.log(2), rel=1e-3)  # bytes/token to 3 decimals


def test_no_bench_module_is_missing_from_the_layout_page():
    layout = (REPO / "docs" / "layout.md").read_text()
    assert [m for m in MODULES if f"`{m}`" not in layout] == []
