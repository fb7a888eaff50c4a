"""Small helpers shared by model and training code: gradient checkpointing, channel folding, optional
``torch.compile``, size rounding and a wall-clock profiler.

Upstream defines these (some several times) in ``models/autoencoders.py``, ``models/convnext.py``,
``models/encodec.py``, ``models/local_attention.py``, ``models/utils.py``, ``models/diffusion.py`` and
``training/diffusion.py``; those module paths re-export them from here.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.utils.checkpoint
from einops import rearrange

__all__ = [
    "checkpoint",
    "gradients_recorded",
    "fold_channels_into_batch",
    "unfold_channels_from_batch",
    "compile",
    "next_power_of_two",
    "next_multiple_of_64",
    "Profiler",
]

log = logging.getLogger(__name__)


def checkpoint(function: Callable, *args: Any, **kwargs: Any) -> Any:
    """``torch.utils.checkpoint.checkpoint`` with ``use_reentrant=False`` unless given (recompute activations of
    ``function(*args)`` in the backward pass instead of storing them)."""
    kwargs.setdefault("use_reentrant", False)
    return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)


def gradients_recorded(module: torch.nn.Module, *inputs: Any) -> bool:
    """Whether autograd records a graph through ``module`` called on ``inputs``: gradients are enabled and a
    parameter of ``module`` or one of the tensors among ``inputs`` requires grad. Gradient checkpointing is asked
    for only then: a frozen model run with gradients enabled (e.g. called outside ``torch.no_grad()``) gains
    nothing from it, and ``torch.compile`` of a checkpointed attention layer fails there on torch 2.13 ("does not
    support RNG ops in recompute regions")."""
    if not torch.is_grad_enabled():
        return False
    if any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
        return True
    return any(p.requires_grad for p in module.parameters())


def fold_channels_into_batch(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, ...]`` -> ``[B * C, ...]`` (each channel becomes its own batch item)."""
    return rearrange(x, "b c ... -> (b c) ...")


def unfold_channels_from_batch(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`fold_channels_into_batch`: ``[B * channels, ...]`` -> ``[B, channels, ...]``."""
    if channels == 1:
        return x.unsqueeze(1)
    return rearrange(x, "(b c) ... -> b c ...", c=channels)


def compile(function: Callable, *args: Any, **kwargs: Any) -> Callable:  # noqa: A001 (upstream's name)
    """``torch.compile(function, *args, **kwargs)`` when the environment sets ``ENABLE_TORCH_COMPILE=1``, else
    ``function`` unchanged. Compilation errors at wrap time fall back to eager execution with a warning."""
    if os.environ.get("ENABLE_TORCH_COMPILE", "0") != "1":
        return function
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 5000)
    torch._dynamo.config.suppress_errors = True
    try:
        return torch.compile(function, *args, **kwargs)
    except RuntimeError as err:
        log.warning("torch.compile unavailable (%s); running %s eagerly", err, getattr(function, "__name__", function))
        return function


def next_power_of_two(n: int) -> int:
    """Smallest power of two ``>= n`` (``n >= 1``)."""
    return 2 ** (n - 1).bit_length()


def next_multiple_of_64(n: int) -> int:
    """Smallest multiple of 64 ``>= n``."""
    return ((n + 63) // 64) * 64


class Profiler:
    """Wall-clock timing of consecutive steps: call :meth:`tick` after each step; ``repr`` lists the
    milliseconds every step took since the previous tick (or since construction)."""

    def __init__(self) -> None:
        self.ticks: List[Tuple[float, Optional[str]]] = [(time.time(), None)]

    def tick(self, msg: str) -> None:
        """Record the end of the step named ``msg``."""
        self.ticks.append((time.time(), msg))

    def __repr__(self) -> str:
        lines = ["=" * 80]
        for (previous, _), (now, msg) in zip(self.ticks, self.ticks[1:]):
            lines.append(f"{msg}: {(now - previous) * 1000:.2f}ms")
        lines.append("=" * 80)
        return "\n".join(lines) + "\n\n\n"
