"""Every benchmark is a module that imports cleanly and answers --help (they run for minutes, so CI does not run them)."""

import importlib
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


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_python_dash_m_bench_name_dash_dash_help_works(name):
    r = run_command("-m", f"bench.{name}", "--help", timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr[-2000:]


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
def test_gpu_check_runs_its_four_checks_end_to_end_on_the_cpu(data_root):
    r = run_command("-m", "bench.gpu_check", "--device", "cpu", "--steps", "4", "--check-steps", "3",
                    "--decode-tokens", "10", "--data-root", str(data_root), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 15 and all(line.count("|") == 3 for line in table), table
    decodes = [line for line in table if line.startswith("| decode at batch 1")]
    assert len(decodes) == 4 and all(re.search(r"\| [\d,]+( \(.*\))? \|$", line) for line in decodes), decodes
    assert sum("SDPA backend" in line and "unknown" not in line for line in table) == 4
    assert "(within 0.05)" in r.stdout
