"""``train.py --compile``: the transformers of the model being trained run through ``torch.compile``.

Compiling fuses the element-wise work between the matrix multiplies (norms, RoPE, SiLU, the bf16 casts of
``--precision bf16-mixed``) in the forward and the backward pass; see docs/training.md, 'Fast training'. Only
the online model is compiled: EMA copies (used for demos and the exported weights) stay eager, and parameters, state dict
keys and checkpoints are unchanged (``nn.Module.compile``).
"""
from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch import nn

from ..inference.precision import check_cpp_compiler
from ..models.transformer import ContinuousTransformer
from .ema import EMA

__all__ = ["compile_for_training", "training_compile_targets"]


def training_compile_targets(wrapper: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every outermost :class:`ContinuousTransformer` of ``wrapper`` outside its EMA copies
    (the transformers of the trained model, and of frozen parts such as a distillation teacher)."""
    ema_copies = {id(m) for ema in wrapper.modules() if isinstance(ema, EMA) for m in ema.ema_model.modules()}
    found: List[Tuple[str, nn.Module]] = []
    for name, module in wrapper.named_modules():
        if not isinstance(module, ContinuousTransformer) or id(module) in ema_copies:
            continue
        if not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return found


def compile_for_training(wrapper: nn.Module, device: Union[str, torch.device] = "cpu") -> List[str]:
    """Compile the transformers of ``wrapper`` (:func:`training_compile_targets`) in place; returns their names.

    Args:
        wrapper (nn.Module): a training wrapper (or any module holding the transformers to train).
        device (str or torch.device, default "cpu"): where training runs; on the CPU TorchInductor needs a C++
            compiler.

    Raises:
        ValueError: naming ``--compile`` when ``wrapper`` has no transformer or no C++ compiler is found for a
            CPU run.
    """
    targets = training_compile_targets(wrapper)
    if not targets:
        raise ValueError(f"--compile compiles the model's transformers, and this {type(wrapper).__name__} has none "
                         f"(convolutional autoencoders and U-Nets are not compiled); drop --compile")
    check_cpp_compiler(device)
    for _, module in targets:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile()
    return [name for name, _ in targets]
