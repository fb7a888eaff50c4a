"""Fast mode's autoencoder halves: a bfloat16, channels-last copy of a convolutional network with fused Snakes.

:func:`build_fast_convnet` turns a float32 decoder or encoder (Oobleck, DAC, or any network built from
``nn.Conv1d`` / ``nn.ConvTranspose1d`` and the snake activations of :mod:`stable_audio_tools.models.activations`)
into an inference-only copy that

* has its weight norms folded into plain weights in float32, then its weights cast to bfloat16;
* runs every zero-padded 1-D convolution as a 2-D convolution on ``[B, C, 1, T]`` activations in the
  channels-last memory layout (:class:`ChannelsLastConv1d`, :class:`ChannelsLastConvTranspose1d`). oneDNN's
  bf16 kernels (AMX / AVX512-BF16) are several times faster in that layout than for ``conv1d``'s
  ``[B, C, T]`` layout, which also costs a layout copy around every convolution. Between convolutions the
  activations stay ``[B, C, T]`` tensors whose memory is channels-last (``stride(1) == 1``), so element-wise
  ops keep that layout and no copies are made;
* evaluates each snake in one pass with float32 arithmetic (:class:`FusedSnake`): the expression is compiled with
  ``torch.compile`` (TorchInductor, which needs a C++ compiler on the CPU) the first time it runs. Where compiling
  fails, a warning is logged once and the snakes run eagerly with bfloat16 intermediates (slower, same layout).
  ``TORCH_COMPILE_DISABLE=1`` skips compiling (the expression then runs eagerly in float32).

The copy's input is cast to bfloat16 and its output returned as a contiguous float32 tensor. Docs:
docs/inference.md#fast-mode.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.activations import Snake1d, SnakeBeta, snake
from ..models.oobleck import ResidualUnit
from ..models.utils import remove_weight_norm_from_model

__all__ = ["ChannelsLastConv1d", "ChannelsLastConvTranspose1d", "FusedSnake", "InplaceResidualUnit",
           "build_fast_convnet", "fused_snake"]

logger = logging.getLogger(__name__)
_SNAKE_EPS = 1e-9


def _snake_float32(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """``x + inv_beta * sin(alpha * x)^2`` evaluated in float32 and returned in ``x``'s dtype."""
    xf = x.float()
    return (xf + inv_beta * torch.sin(xf * alpha) ** 2).to(x.dtype)


def _snake_float32_(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """:func:`_snake_float32` written over ``x`` (no new buffer: large activations are mapped afresh, and
    page-faulted, every time one is allocated)."""
    return x.copy_(_snake_float32(x, alpha, inv_beta))


class _CompiledSnake:
    """:func:`_snake_float32` (and its in-place twin) compiled on first use (dynamic shapes, one compilation for
    every layer); after a failed compilation the eager bf16 :func:`~stable_audio_tools.models.activations.snake` is
    used."""

    def __init__(self) -> None:
        self._compiled: dict = {}
        self.failure: Optional[str] = None

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor,
                 inplace: bool = False) -> torch.Tensor:
        if self.failure is None:
            fn = _snake_float32_ if inplace else _snake_float32
            if fn not in self._compiled:
                self._compiled[fn] = torch.compile(fn, dynamic=True)
            try:
                return self._compiled[fn](x, alpha, inv_beta)
            except Exception as e:  # compiler missing or broken: any failure here is the compiler's
                self.failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                logger.warning("fast mode: compiling the snake activation failed (%s); running it "
                               "eagerly (slower). Install a C++ compiler for TorchInductor to fix this.",
                               self.failure)
        return snake(x, alpha.to(x.dtype), inv_beta.to(x.dtype))


#: the process-wide compiled snake shared by every :class:`FusedSnake`
fused_snake = _CompiledSnake()


class FusedSnake(nn.Module):
    """Inference-only snake ``x + inv_beta * sin(alpha * x)^2`` with precomputed float32 ``alpha`` and
    ``inv_beta`` buffers (``[1, C, 1]``), evaluated by :data:`fused_snake`.

    Args:
        alpha (torch.Tensor): the frequency, ``[C]`` or ``[1, C, 1]`` (already exponentiated for log-scale snakes).
        inv_beta (torch.Tensor): the reciprocal magnitude ``1 / (beta + 1e-9)``, same shape.
    """

    def __init__(self, alpha: torch.Tensor, inv_beta: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("alpha", alpha.detach().float().reshape(1, -1, 1).clone())
        self.register_buffer("inv_beta", inv_beta.detach().float().reshape(1, -1, 1).clone())
        #: overwrite the input (set by :func:`build_fast_convnet` where the input is a convolution's fresh output)
        self.inplace = False

    @classmethod
    def from_module(cls, module: nn.Module) -> "FusedSnake":
        """The fused equivalent of a :class:`SnakeBeta` or :class:`Snake1d` module."""
        with torch.no_grad():
            if isinstance(module, SnakeBeta):
                alpha, beta = module.alpha.float(), module.beta.float()
                if module.alpha_logscale:
                    alpha, beta = alpha.exp(), beta.exp()
                return cls(alpha, 1.0 / (beta + _SNAKE_EPS))
            if isinstance(module, Snake1d):
                alpha = module.alpha.float()
                return cls(alpha, 1.0 / (alpha + _SNAKE_EPS))
        raise TypeError(f"FusedSnake.from_module: expected SnakeBeta or Snake1d, got {type(module).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_snake(x, self.alpha, self.inv_beta, inplace=self.inplace and not torch.is_grad_enabled())


def _channels_last_4d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` -> ``[B, C, 1, T]`` in the channels-last layout (a view when ``x`` already is)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


#: relative error (max |diff| / max |reference|) above which a bf16 convolution's probe counts as wrong; bf16
#: rounding gives about 0.01, the broken kernels about 1
_PROBE_TOLERANCE = 0.05


class _ChannelsLastConv(nn.Module):
    """Shared part of :class:`ChannelsLastConv1d` / :class:`ChannelsLastConvTranspose1d`: the channels-last 4-D
    weight, and on the CPU a probe of the reduced-precision kernel against float32 at construction.

    Some oneDNN bf16 convolution kernels give wrong results for small layers (seen with torch 2.9 and 2.13 for
    ``in_channels * kernel_size`` of 64-192, e.g. 8 input channels with kernel 8: errors as large as the output,
    in ``conv1d`` and channels-last ``conv2d`` alike). A layer whose probe fails keeps a float32 weight and runs in
    float32 (``self.float32_fallback``), with a log message naming its shape.
    """

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: padding_mode must be 'zeros', got {conv.padding_mode!r}")
        weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride = (1, _single(conv.stride))
        self.dilation = (1, _single(conv.dilation))
        self.groups = conv.groups
        self.in_channels = conv.in_channels
        self.float32_fallback = False

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _probe_length(self) -> int:
        raise NotImplementedError

    def _probe(self) -> None:
        """Compare this layer in its dtype with float32 on a seeded random input; fall back to float32 if wrong."""
        weight = self.weight
        if weight.dtype == torch.float32 or weight.device.type != "cpu":
            return
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, self.in_channels, 1, self._probe_length(), generator=gen).to(weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            bias = None if self.bias is None else self.bias.float()
            reference = self._conv(x.float(), weight.float(), bias)
            error = (self._conv(x, weight, self.bias).float() - reference).abs().max()
            scale = reference.abs().max().clamp_min(1e-12)
        if float(error / scale) > _PROBE_TOLERANCE:
            logger.info("fast mode: the %s kernel of torch %s is wrong for %s with weight %s (relative error "
                        "%.2f); this layer runs in float32", weight.dtype, torch.__version__, type(self).__name__,
                        tuple(weight.shape), float(error / scale))
            self.weight = nn.Parameter(weight.float(), requires_grad=False)
            self.bias = None if self.bias is None else nn.Parameter(self.bias.float(), requires_grad=False)
            self.float32_fallback = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = _channels_last_4d(x)
        if self.float32_fallback:
            return self._conv(x4.float(), self.weight, self.bias).to(x.dtype).squeeze(2)
        return self._conv(x4, self.weight, self.bias).squeeze(2)


class ChannelsLastConv1d(_ChannelsLastConv):
    """A zero-padded ``nn.Conv1d`` run as ``conv2d`` on channels-last ``[B, C, 1, T]`` activations.

    Input: ``[B, C_in, T]`` of any layout; output: ``[B, C_out, T']`` with channels-last memory. Same values as
    the convolution it was made from, up to the backend's accumulation order (see :class:`_ChannelsLastConv` for
    the probe of reduced-precision kernels).

    Args:
        conv (nn.Conv1d): a convolution with ``padding_mode="zeros"`` and a plain ``weight`` (weight norm folded).
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__(conv)
        padding = conv.padding
        self.padding = padding if isinstance(padding, str) else (0, _single(padding))
        self._probe()

    def _probe_length(self) -> int:
        return 64 * self.stride[1] + self.dilation[1] * (self.weight.shape[-1] - 1)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelsLastConvTranspose1d(_ChannelsLastConv):
    """A zero-padded ``nn.ConvTranspose1d`` run as ``conv_transpose2d`` on channels-last ``[B, C, 1, T]``
    activations (see :class:`ChannelsLastConv1d`).

    Args:
        conv (nn.ConvTranspose1d): a transposed convolution with ``padding_mode="zeros"`` and a plain ``weight``.
    """

    def __init__(self, conv: nn.ConvTranspose1d) -> None:
        super().__init__(conv)
        self.padding = (0, _single(conv.padding))
        self.output_padding = (0, _single(conv.output_padding))
        self._probe()

    def _probe_length(self) -> int:
        return 64

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)


class InplaceResidualUnit(nn.Module):
    """Inference-only Oobleck ``ResidualUnit``: ``layers(x) + x`` added into ``layers``' output, whose last layer is a
    convolution (a fresh tensor), instead of into a new buffer. With gradients enabled it adds out of place."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return y + x if torch.is_grad_enabled() else y.add_(x)


def _reuse_fresh_outputs(network: nn.Module) -> None:
    """Let the element-wise steps that follow a convolution write into its output: a :class:`FusedSnake` right
    after a convolution in a ``Sequential`` runs in place, and Oobleck residual units ending in a convolution add
    in place. (Each new full-length activation is mapped and page-faulted afresh by the allocator: the SAO decoder's
    are 134 MB each.)"""
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            for previous, current in zip(module, list(module)[1:]):
                if isinstance(current, FusedSnake) and isinstance(previous, _ChannelsLastConv):
                    current.inplace = True
    for name, module in list(network.named_modules()):
        if type(module) is ResidualUnit and isinstance(module.layers[-1], _ChannelsLastConv):
            _replace(network, name, InplaceResidualUnit(module.layers))


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in the place of ``root``'s submodule ``name`` (a dotted path)."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, module)


def _conv_replacement(module: nn.Module) -> Optional[nn.Module]:
    if isinstance(module, nn.Conv1d) and module.padding_mode == "zeros":
        return ChannelsLastConv1d(module)
    if isinstance(module, nn.ConvTranspose1d) and module.padding_mode == "zeros":
        return ChannelsLastConvTranspose1d(module)
    return None


def _cast_input(dtype: torch.dtype) -> Callable[..., Tuple[Any, ...]]:
    def hook(module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return hook


def _float32_output(module: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return output.to(torch.float32, memory_format=torch.contiguous_format)


def build_fast_convnet(network: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """An inference-only ``dtype`` copy of ``network`` with channels-last convolutions and fused snakes.

    ``network`` itself is not changed. The copy takes float32 (or any floating) input and returns float32 output;
    its parameters do not require gradients.

    Args:
        network (nn.Module): the float32 decoder or encoder of an autoencoder.
        dtype (torch.dtype, default torch.bfloat16): the weight and activation dtype of the copy.
    """
    fast = copy.deepcopy(network)
    remove_weight_norm_from_model(fast)
    snakes = {name: FusedSnake.from_module(m) for name, m in fast.named_modules()
              if isinstance(m, (SnakeBeta, Snake1d))}  # from the float32 parameters
    fast.to(dtype)
    for name, module in list(fast.named_modules()):
        replacement = snakes[name] if name in snakes else _conv_replacement(module)
        if replacement is not None and name:
            _replace(fast, name, replacement)
    _reuse_fresh_outputs(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    fast.register_forward_pre_hook(_cast_input(dtype))
    fast.register_forward_hook(_float32_output)
    fast.fast_convnet_dtype = dtype
    return fast
