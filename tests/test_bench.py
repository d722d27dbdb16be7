"""Every benchmark is a module that imports cleanly and answers --help (they run for minutes, so CI does not run them)."""

import importlib
import pkgutil

import pytest

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
