"""Which device and precision to run on, and how fast that device can go (for MFU)."""

import os
import platform
import re
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from runtime.errors import UserError

# Dense tensor-core peaks for MFU, from NVIDIA's data sheets and whitepapers: bf16 with fp32 accumulation
# (fp16 where the GPU has no bf16: V100, T4). Keyed by the exact name torch.cuda.get_device_name gives, so
# an "H100 PCIe" never gets an SXM H100's peak; an unknown GPU gets no MFU (or state peak_flops=).
GPU_PEAK_FLOPS = {
    "NVIDIA H200": 989e12, "NVIDIA H200 NVL": 835e12, "NVIDIA GH200 480GB": 989e12,
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12, "NVIDIA L40S": 362e12, "NVIDIA L40": 181e12, "NVIDIA L4": 121e12,
    "NVIDIA A10": 125e12, "NVIDIA RTX A6000": 155e12, "NVIDIA GeForce RTX 4090": 165e12,
    "NVIDIA GeForce RTX 3090": 35.6e12, "Tesla V100-SXM2-16GB": 125e12, "Tesla V100-SXM2-32GB": 125e12,
    "Tesla V100-PCIE-16GB": 112e12, "Tesla V100-PCIE-32GB": 112e12, "Tesla T4": 65e12,
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = ("auto", *DTYPES)  # what a dtype= setting may say
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what a device= setting may say
FP16_DEVICES = ("cuda",)  # fp16 matmuls elsewhere are very slow (0.4 GFLOP/s on a CPU); a test may add "cpu"


class DeviceError(UserError):
    """An unusable device or dtype setting. The message says what to use instead."""


def fused_adamw_devices() -> list[str]:
    """The device types with torch's fused AdamW kernel (one kernel for all parameters): cuda, cpu, mps..."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # no public accessor

    return _get_fused_kernels_supported_devices()


def set_deterministic(enabled: bool) -> bool:
    """Deterministic kernels on or off for this process (torch.use_deterministic_algorithms); returns the
    setting before. On CUDA, cuBLAS also needs a fixed workspace; an op without a deterministic kernel
    warns instead of stopping the run."""
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    return before


@dataclass
class TorchSettings:
    """torch's process-wide settings a command changes (deterministic kernels, CPU threads, TF32 on CUDA), to
    put back when it ends: a test, a notebook or a benchmark that runs it goes on as before."""

    deterministic: bool
    threads: int
    tf32: tuple[bool, bool] = (False, False)  # CUDA's TF32 for matmuls, for cuDNN

    @classmethod
    def apply(cls, deterministic: bool, threads: Optional[int]) -> "TorchSettings":
        """Set them (threads None: leave torch's, for runtime.threads to choose); return the settings before."""
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        before = cls(set_deterministic(deterministic), torch.get_num_threads(), tf32)
        if threads:
            torch.set_num_threads(threads)
        return before

    def restore(self) -> None:
        set_deterministic(self.deterministic)
        torch.set_num_threads(self.threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.tf32


def native_bf16(device: torch.device) -> bool:
    """Whether device multiplies bf16 matrices in hardware. Elsewhere torch emulates bf16, and a bf16 matmul
    is slower than fp32: 3.6x on a CPU with AVX-512 but no BF16, and about 400x on an AVX2-only CPU
    (docs/results.md: bf16 on CPUs without it). CUDA: Ampere and later; a CPU: x86 with AVX-512 BF16 or AMX,
    Arm with the BF16 extension (Graviton 3, Apple M2 and later); MPS: yes."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "mps":
        return True
    return device.type == "cpu" and "bf16" in cpu_features()


def cpu_features() -> set[str]:
    """This CPU's bf16 features, as names: avx512_bf16, amx_bf16 (x86, from torch's own CPU probe) or bf16 (Arm:
    /proc/cpuinfo on Linux, sysctl on macOS); "bf16" is in the set whenever one of them is."""
    found = {k for k, v in torch._C._cpu._get_cpu_capability().items() if k in ("avx512_bf16", "amx_bf16") and v}
    if platform.machine().lower() in ("arm64", "aarch64"):
        if sys.platform == "darwin":
            probe = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
            found |= {"bf16"} if probe.stdout.strip() == "1" else set()
        elif Path("/proc/cpuinfo").is_file():
            flags = re.findall(r"^Features\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
            found |= {"bf16"} if flags and "bf16" in flags[0].split() else set()
    return found | ({"bf16"} if found else set())


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo (or macOS's sysctl) gives it; the architecture if unknown."""
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        probe = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if probe.stdout.strip():
            return probe.stdout.strip()
    return platform.machine() or "an unknown CPU"


def emulated_bf16_warning(dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """One warning line when dtype is bf16 on a CPU that only emulates it (bf16 matmuls slower than fp32's
    there: 3.6x to 400x), else None."""
    if dtype != torch.bfloat16 or device.type != "cpu" or native_bf16(device):
        return None
    return (f"dtype=bf16 on {cpu_name()}: this CPU has no native bf16, so torch emulates it and bf16 "
            "products run slower than fp32 here (docs/results.md); dtype=auto (fp32 on a CPU) is faster")


def fast_matmul_dtype(device: torch.device) -> torch.dtype:
    """bf16 where device has it natively, else fp32: what Muon's orthogonalisation runs in."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: cuda, then mps, then cpu. Under torchrun, cuda means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device={name!r} is not a device: use auto, cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device=cuda but no CUDA GPU is available: use device=auto or device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device=mps but MPS is not available: use device=auto or device=cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA where the GPU has it natively (Ampere and later), else fp16 (with a GradScaler in
    train.py: T4, V100); fp32 elsewhere. is_bf16_supported() alone counts emulated bf16, which is slow."""
    if name == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return torch.bfloat16 if native else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise DeviceError(f"dtype={name!r}: use auto, bf16, fp16 or fp32")
    if name == "fp16" and device.type not in FP16_DEVICES:
        raise DeviceError(f"dtype=fp16 is for CUDA GPUs (it is very slow on {device.type}): use bf16 or fp32")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision in dtype (weights stay fp32), or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def peak_flops(device: torch.device, stated: Optional[float] = None) -> Optional[float]:
    """FLOP/s of one device for MFU: the value the user stated, a known GPU's peak, else None."""
    if stated:
        return stated
    if device.type == "cuda":
        return GPU_PEAK_FLOPS.get(torch.cuda.get_device_name(device).strip())
    return None
