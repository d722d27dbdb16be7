"""runtime/devices.py: the precision a GPU gets, and the peak it is measured against (no GPU needed)."""

import pytest
import torch

from runtime import devices
from runtime.devices import peak_flops, resolve_dtype

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, native, expected):
    # a T4 or V100: bf16 is "supported" through emulation only, so it gets fp16 (and a GradScaler)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    assert resolve_dtype("auto", CUDA) == expected


@pytest.mark.parametrize("name,flops", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("NVIDIA A10", 125e12), ("Tesla T4", 65e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA RTX A1000", None), ("NVIDIA A10G", None), ("NVIDIA L40S-ish prototype", None),  # unknown: no MFU
])
def test_peak_flops_come_from_the_exact_device_name(monkeypatch, name, flops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(CUDA) == flops
    assert peak_flops(CUDA, stated=1e12) == 1e12  # what the user states wins


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_gets_one_warning_naming_the_faster_dtype(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_features", lambda: {"avx512_bf16", "bf16"} if native else set())
    cpu = torch.device("cpu")
    line = devices.emulated_bf16_warning(torch.bfloat16, cpu)
    if native:
        assert line is None
    else:
        assert "no native bf16" in line and "dtype=auto" in line and "\n" not in line
    assert devices.emulated_bf16_warning(torch.float32, cpu) is None  # fp32 is never warned about


def test_the_tf32_flags_a_cuda_run_turns_on_are_put_back_when_it_ends():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        saved = devices.TorchSettings.apply(deterministic=False, threads=None)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as build_run does on CUDA
        saved.restore()
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
