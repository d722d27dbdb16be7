"""Which device and precision to run on, and how fast that device can go (for MFU)."""

import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
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
    """torch's process-wide settings a command changes (deterministic kernels, CPU threads), to put back
    when it ends: a test or a notebook that runs it goes on as before."""

    deterministic: bool
    threads: int

    @classmethod
    def apply(cls, deterministic: bool, threads: Optional[int]) -> "TorchSettings":
        """Set them (threads None: leave torch's); return the settings before."""
        before = cls(set_deterministic(deterministic), torch.get_num_threads())
        if threads:
            torch.set_num_threads(threads)
        return before

    def restore(self) -> None:
        set_deterministic(self.deterministic)
        torch.set_num_threads(self.threads)


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
