"""Choice of the torch device from the config's `device:` value."""

from __future__ import annotations

import torch

from rbmflow.errors import RbmflowError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU; `cpu`, `cuda`, `cuda:N` are taken as is
    (a torch.device too).

    Asking for CUDA on a machine without it is an error, not a silent fallback.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RbmflowError(f"device {spec!r} requested but CUDA is not available on this machine")
    return device
