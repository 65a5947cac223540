"""Device and precision choice: CUDA, then MPS, then CPU, overridable."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import StudioError

PRECISIONS = ("fp32", "fp16", "bf16")


class DeviceError(StudioError, RuntimeError):
    """The requested device or precision is not available here."""

    code = "device"


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 / AMX), where bf16 pays off."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    return bool(getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def available_devices() -> list[str]:
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype

    @property
    def label(self) -> str:
        name = self.device.type.upper()
        if self.device.type == "cuda":
            name = f"CUDA ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {str(self.dtype).removeprefix('torch.')}"


def choose_device(device: str = "auto", fast: bool = False) -> DeviceChoice:
    """Resolve ``auto``/``cuda``/``mps``/``cpu`` and a precision.

    CUDA runs fp16 (the network is robust to it); CPU runs exact fp32 unless
    ``fast`` asks for bf16 and the CPU supports it natively.
    """
    name = device.lower()
    if name == "auto":
        name = available_devices()[0]
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA GPU is available")
    if name == "mps" and "mps" not in available_devices():
        raise DeviceError("MPS was requested but Apple's Metal backend is not available")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}; use auto, cuda, mps or cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        dtype = torch.float16
    elif dev.type == "cpu" and fast:
        if not cpu_supports_bf16():
            raise DeviceError("fast mode (bf16) needs a CPU with native bf16 support (AVX512-BF16 or AMX)")
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    return DeviceChoice(dev, dtype)
