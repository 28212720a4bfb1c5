"""Device and precision choices shared by training, inference and the app.

The fast path is ``channels_last`` memory format plus bf16 autocast. It is used on
CUDA devices that support bf16 and on CPUs whose oneDNN build has native bf16 kernels
(AVX512-BF16 or AMX); everywhere else segdemo runs in plain fp32, which is always correct.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch


def check_device(device: str | torch.device) -> None:
    """Refuse a device name torch does not know, or CUDA on a machine without it.

    Raises:
        ValueError: one sentence naming the device and what to use instead.
    """
    if str(device) == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {str(device)!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA GPU (use cpu or auto)")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: segdemo runs on cpu or cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the device to run on: ``"auto"`` picks CUDA when present, else the CPU.

    Raises:
        ValueError: see :func:`check_device`.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return torch.device(device)


# torch has no public "does this CPU run bf16 natively" (AVX512-BF16 or AMX); oneDNN's own
# probe is the one adapter to a private name, checked against this torch release by
# tests/test_smp_adapter.py. Without it segdemo falls back to fp32, which is always correct.
CHECKED_TORCH_VERSION = "2.14.1"


@functools.cache
def _cpu_has_native_bf16() -> bool:
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def supports_bf16(device: str | torch.device) -> bool:
    """Whether bf16 autocast is both supported and fast on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """Map ``"auto"`` to ``"bf16"`` where the hardware supports it, else ``"fp32"``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "auto":
        return "bf16" if supports_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``precision == "bf16"``, else a no-op."""
    device = torch.device(device)
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def describe(device: str | torch.device, precision: str) -> str:
    """One line for logs and the app's sidebar, e.g. ``"cpu (AVX512), bf16 + channels_last"``."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    fast = "bf16 autocast + channels_last" if precision == "bf16" else "fp32"
    return f"{name}, {fast}"


def data_workers(requested: int | None, device: str | torch.device) -> int:
    """DataLoader worker processes: ``requested``, or by default the cores training leaves
    free. On a CPU the model's threads use every core, and a worker beside them costs more
    than it saves up to 4 cores (measured on 2 cores: U-Net at 20 images/s with one worker,
    22.5 loading in the main process); a GPU leaves all but one core to the workers."""
    if requested is not None:
        return int(requested)
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)
