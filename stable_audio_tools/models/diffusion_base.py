"""Base classes of diffusion backbones and the diffusion objectives (shared by :mod:`.diffusion` and :mod:`.dit`)."""
from __future__ import annotations

from torch import nn

__all__ = ["DIFFUSION_OBJECTIVES", "DiffusionModel", "ConditionedDiffusionModel"]

DIFFUSION_OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")


class DiffusionModel(nn.Module):
    """Base of unconditional backbones: ``forward(x, t, **kwargs)``."""


class ConditionedDiffusionModel(nn.Module):
    """Base of conditional backbones; the flags say which conditioning routes the backbone accepts.

    Args:
        supports_cross_attention (bool): takes ``cross_attn_cond``. Default False.
        supports_input_concat (bool): takes ``input_concat_cond``. Default False.
        supports_global_cond (bool): takes ``global_cond``. Default False.
        supports_prepend_cond (bool): takes ``prepend_cond``. Default False.
    """

    def __init__(self, supports_cross_attention: bool = False, supports_input_concat: bool = False,
                 supports_global_cond: bool = False, supports_prepend_cond: bool = False) -> None:
        super().__init__()
        self.supports_cross_attention = supports_cross_attention
        self.supports_input_concat = supports_input_concat
        self.supports_global_cond = supports_global_cond
        self.supports_prepend_cond = supports_prepend_cond
