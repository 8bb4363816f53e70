"""Choosing where and in which dtype each part of the model runs.

Nothing here is hard-coded to one GPU: ``pick_device`` returns the default CUDA device
when there is one and the CPU otherwise, and callers may pass any ``torch.device``.
"""

from __future__ import annotations

import torch

# Component kinds that ``pick_dtype`` knows about. The frozen encoders (EVA ViT, image
# Q-Former, ImageBind) follow the original's fp16-on-GPU choice; the trainable adapters
# keep fp32 master weights (they run under autocast on a GPU); the LLM prefers bf16, as
# the original loaded it, where the GPU supports it.
COMPONENTS = ("encoder", "adapter", "llm")


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``requested`` if given, else CUDA when available, else CPU.

    Args:
        requested: e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
    """
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was requested but CUDA is not available; "
                               "use --device cpu or install a CUDA build of torch")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). There a bf16 matmul runs
    at about twice the fp32 rate; elsewhere PyTorch emulates bf16 and it is no faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def pick_dtype(device: str | torch.device, component: str) -> torch.dtype:
    """The compute dtype for ``component`` (one of ``COMPONENTS``) on ``device``.

    On the CPU everything is fp32: fp16 matmuls are slow or unsupported there.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    if component == "encoder":
        return torch.float16
    if component == "adapter":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
