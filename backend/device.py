"""What the CUDA device can do, asked one way by training, evaluation and merging.

bf16 is judged as unsloth judges it (compute capability 8.0 or newer): `torch.cuda.is_bf16_supported()`
counts emulation by default and says yes on T4, V100 and RTX 20-series, where unsloth loads fp16 and its
trainer then refuses bf16. Utilisation goes through `torch.cuda.utilization()`, which maps the device index
through `CUDA_VISIBLE_DEVICES` (set by Ray) to NVML's numbering; NVML itself ignores that variable.
"""

from __future__ import annotations

import torch

BF16_MIN_CAPABILITY = 8
"""Ampere (sm_80) and newer compute in bf16 natively."""


def cuda_bf16_supported() -> bool:
    """True on a CUDA device of compute capability 8.0 or newer (native bf16); False without CUDA."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= BF16_MIN_CAPABILITY


def gpu_utilisation_percent() -> float | None:
    """The current CUDA device's utilisation over NVML's last sample period; None where NVML cannot answer
    (no nvidia-ml-py, or a driver without it): an optional metric."""
    try:
        return float(torch.cuda.utilization(torch.cuda.current_device()))
    except Exception:  # noqa: BLE001 - pynvml missing, NVML unusable (its errors are its own classes)
        return None
