"""Weight-normalised convolutions that keep upstream's ``weight_g`` / ``weight_v`` state-dict names.

Upstream (and DAC / EnCodec) use the legacy ``torch.nn.utils.weight_norm`` hook, whose modules
cannot be deep-copied after a forward pass (which breaks EMA copies). These classes store the same
two parameters under the same names, compute ``w = g * v / ||v||`` (norm over every dim but 0) with
the same kernel as the legacy hook, and are ordinary modules: deep-copy, pickling and
``torch.compile`` all work.

``remove_weight_norm()`` folds ``g`` and ``v`` into a plain ``weight`` parameter (what upstream's
``remove_weight_norm_from_model`` does with the hook API).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WeightNormMixin", "WNConv1d", "WNConvTranspose1d", "WNConv2d", "WNLinear"]


class WeightNormMixin:
    """Replace ``self.weight`` by ``weight_g``/``weight_v`` (dim 0), like the legacy hook."""

    weight_norm_enabled: bool = False

    def _init_weight_norm(self) -> None:
        weight = self.weight
        del self._parameters["weight"]
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight.detach(), 2, 0).clone())
        self.weight_v = nn.Parameter(weight.detach().clone())
        self.weight_norm_enabled = True

    def effective_weight(self) -> torch.Tensor:
        if self.weight_norm_enabled:
            return torch._weight_norm(self.weight_v, self.weight_g, 0)
        return self._parameters["weight"]

    def remove_weight_norm(self) -> None:
        """Fold the weight norm into a plain ``weight`` parameter (keys become ``weight``)."""
        if not self.weight_norm_enabled:
            return
        with torch.no_grad():
            weight = self.effective_weight().detach().clone()
        del self._parameters["weight_g"]
        del self._parameters["weight_v"]
        self.weight_norm_enabled = False
        self.register_parameter("weight", nn.Parameter(weight))


class WNConv1d(WeightNormMixin, nn.Conv1d):
    """``nn.Conv1d`` with weight normalisation (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConv2d(WeightNormMixin, nn.Conv2d):
    """``nn.Conv2d`` with weight normalisation (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose1d(WeightNormMixin, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with weight normalisation; ``weight_g`` is ``[in, 1, 1]`` as upstream."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor, output_size: Optional[list] = None) -> torch.Tensor:
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size,
                                              1, self.dilation)
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)


class WNLinear(WeightNormMixin, nn.Linear):
    """``nn.Linear`` with weight normalisation (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)
