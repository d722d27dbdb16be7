"""torch.compile on the CPU (inductor with the system's C++ compiler): the same code path as on a GPU.

The first compile of the tiny model takes about 30 s on a 2-core machine; inductor caches the result
(in /tmp), so the tests after it compile in seconds.
"""

import subprocess

import pytest
import torch

import train as train_module
from model.gpt import GPT
from runtime.checkpoint import load_checkpoint
from tests.helpers import REPO, metrics, tiny_model, torchrun
from tests.test_train import TINY, compose_config, resume, tiny_config
from train import train

COMPILED = [a for a in TINY if a != "compile=false"] + ["compile=true"]
LOSS_TOLERANCE = 1e-4  # compiled vs eager fp32 over 20 steps (observed: about 1e-6)


def losses(run) -> list[float]:
    return [e["loss"] for e in metrics(run)]


def test_compiled_training_equals_eager_within_tolerance(data_root, tmp_path):
    args = ["max_steps=20", "eval_interval=20"]
    train(tiny_config(data_root, *args, f"out_dir={tmp_path / 'eager'}"))
    train(compose_config([*COMPILED, f"data.root={data_root}", *args, f"out_dir={tmp_path / 'compiled'}"]))
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 20
    assert max(abs(a - b) for a, b in zip(eager, compiled, strict=True)) < LOSS_TOLERANCE
    assert eager[-1] < eager[0]  # a run that trains, not one that sits still
    log = (tmp_path / "compiled" / "train.log").read_text()
    assert "compiled, 1 process(es)" in log and "compiled in " in log


def test_the_warm_up_compiles_the_graph_the_loop_uses_even_when_eval_batches_are_device_copies(
        data_root, tmp_path, monkeypatch):
    """On a GPU, moving an evaluation batch to the device makes it contiguous, while the loop's batches are
    views (strides (T+1, 1)) of one device tensor: a warm-up on the first would compile a graph the loop
    cannot use (dynamo guards on strides), and step 1 would compile again. Here the evaluation batches are
    made contiguous, as such a copy is; the warm-up still gives the one graph that every step reuses."""
    real = train_module.fixed_batches
    monkeypatch.setattr(train_module, "fixed_batches", lambda *a, **k: [(x.contiguous(), y.contiguous())
                                                                        for x, y in real(*a, **k)])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    train(compose_config([*COMPILED, f"data.root={data_root}", "max_steps=3", "eval_interval=3",
                          f"out_dir={tmp_path / 'run'}"]))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["recompiles"]


def test_a_compiled_run_resumes_bitwise_and_its_checkpoints_have_plain_names(data_root, tmp_path):
    """With deterministic=true. Without it, inductor's CPU kernel for the embedding's backward adds its
    rows in whatever order the threads finish: two runs of the same seed differ by about 1e-11."""
    extra = [*COMPILED, f"data.root={data_root}", "max_steps=8", "model.dropout=0.1",  # dropout: RNG restored
             "deterministic=true"]
    train(compose_config([*extra, f"out_dir={tmp_path / 'straight'}"]))
    train(compose_config([*extra, "stop_step=4", f"out_dir={tmp_path / 'split'}"]))
    resume(f"resume={tmp_path / 'split'}")
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not [k for k in a["model"] if "_orig_mod" in k]
    GPT.from_state(a["model_config"], a["model"])  # loads strictly into an uncompiled model
    assert not torch.are_deterministic_algorithms_enabled()  # the run put torch's setting back


def test_a_failing_compiler_leaves_the_run_eager_with_one_warning(data_root, tmp_path, monkeypatch):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    real_compile = torch.compile
    monkeypatch.setattr(train_module.torch, "compile", lambda model: real_compile(model, backend=broken_backend))
    args = ["max_steps=6", "eval_interval=6"]
    train(compose_config([*COMPILED, f"data.root={data_root}", *args, f"out_dir={tmp_path / 'fallback'}"]))
    monkeypatch.undo()
    train(tiny_config(data_root, *args, f"out_dir={tmp_path / 'eager'}"))
    assert losses(tmp_path / "fallback") == losses(tmp_path / "eager")  # eager, bit for bit
    log = (tmp_path / "fallback" / "train.log").read_text()
    assert log.count("warning: torch.compile failed (BackendCompilerFailed:") == 1
    assert "training eagerly; compile=false skips the attempt" in log


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_no_graph_breaks_in_the_training_forward_and_in_cached_decode(impl):
    torch._dynamo.reset()
    model = tiny_model(attn_impl=impl, dropout=0.1).train()
    x = torch.randint(0, 65, (2, 16))
    training = torch._dynamo.explain(model)(x, x)
    assert (training.graph_count, training.graph_break_count) == (1, 0), training.break_reasons
    model.eval()
    caches = model.new_kv_caches(2, 32)
    with torch.inference_mode():
        model(x, kv_caches=caches)  # prefill, eagerly
        decode = torch._dynamo.explain(model)(x[:, :1], kv_caches=caches)
    assert (decode.graph_count, decode.graph_break_count) == (1, 0), decode.break_reasons


@pytest.mark.slow
def test_ddp_with_compile_on_two_gloo_processes_equals_eager_ddp(data_root, tmp_path):
    for name, compile_flag in (("eager", "compile=false"), ("compiled", "compile=true")):
        r = subprocess.run([*torchrun(2), str(REPO / "train.py"), *TINY, compile_flag, "max_steps=6",
                            "eval_interval=6", f"data.root={data_root}", f"out_dir={tmp_path / name}"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(compiled) == 6 and max(abs(a - b) for a, b in zip(eager, compiled, strict=True)) < LOSS_TOLERANCE
    assert "compiled, 2 process(es)" in (tmp_path / "compiled" / "train.log").read_text()


def test_adamw_uses_the_fused_kernel_on_the_cpu_as_on_cuda():
    from train import OptimConfig, build_optimizer

    optimizer = build_optimizer(tiny_model(), OptimConfig(), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    assert "cuda" in train_module.devices.fused_adamw_devices() and "cpu" in train_module.devices.fused_adamw_devices()
