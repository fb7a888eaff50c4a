"""SEANet encoder/decoder as in EnCodec 0.1.1 (see docs/model_config.md#encoders-and-decoders-type).

Re-implements the EnCodec building blocks that upstream stable-audio-tools imports from the
``encodec`` package, with identical state-dict names and numerics:

* :class:`SConv1d` / :class:`SConvTranspose1d` -- "same"-length convolutions with EnCodec's asymmetric
  padding rules (reflect padding that also works on inputs shorter than the padding, an extra right pad so
  that the last window is full, and symmetric-ish unpadding after a transposed convolution).
  Keys: ``conv.conv.{weight_g,weight_v,bias}`` / ``convtr.convtr.{weight_g,weight_v,bias}``; the
  parameterless ``conv.norm`` / ``convtr.norm`` is an ``nn.Identity`` unless a group norm is requested.
* :class:`SLSTM` -- an LSTM over time with a skip connection (keys ``lstm.weight_ih_l{k}`` ...).
* :class:`SEANetResnetBlock`, :class:`SEANetEncoder`, :class:`SEANetDecoder`.

Ratio order: EnCodec's ``SEANetEncoder`` reverses the ``ratios`` it receives, and upstream's factory
reverses them once more before the call, so a config ``"ratios": [2, 4]`` makes the upstream encoder
downsample by 2 and then by 4. Here :class:`SEANetEncoder` downsamples **in the order given**, so the
factory passes the config list unchanged (and never mutates it) and gets the same layers as one upstream
build. :class:`SEANetDecoder` upsamples in the order given, exactly like EnCodec's.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .wn import WNConv1d, WNConvTranspose1d

__all__ = [
    "CONV_NORMALIZATIONS",
    "get_extra_padding_for_conv1d",
    "pad_for_conv1d",
    "pad1d",
    "unpad1d",
    "NormConv1d",
    "NormConvTranspose1d",
    "SConv1d",
    "SConvTranspose1d",
    "SLSTM",
    "SEANetResnetBlock",
    "SEANetEncoder",
    "SEANetDecoder",
]

#: Normalisations accepted by the convolution wrappers. ``time_layer_norm`` is accepted because EnCodec
#: 0.1.1 accepts it, where it (silently) means no normalisation at all.
CONV_NORMALIZATIONS = ("none", "weight_norm", "time_group_norm", "time_layer_norm")
_UNSUPPORTED_NORMS = {
    "spectral_norm": "spectral normalisation is not implemented here",
    "layer_norm": "EnCodec 0.1.1's ConvLayerNorm returns None, so no model can have been trained with it",
}
_PAD_MODES = ("reflect", "replicate", "circular", "constant", "zero")


def _check_norm(norm: str) -> None:
    if norm in _UNSUPPORTED_NORMS:
        raise ValueError(f"norm={norm!r} is not supported ({_UNSUPPORTED_NORMS[norm]}); "
                         f"use one of {', '.join(CONV_NORMALIZATIONS)}")
    if norm not in CONV_NORMALIZATIONS:
        raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(CONV_NORMALIZATIONS)}")


def _norm_module(norm: str, out_channels: int, causal: bool, norm_kwargs: Mapping[str, Any]) -> nn.Module:
    if norm == "time_group_norm":
        if causal:
            raise ValueError("norm='time_group_norm' does not support causal evaluation; use causal=False "
                             "or another norm")
        return nn.GroupNorm(1, out_channels, **dict(norm_kwargs))
    return nn.Identity()


def get_extra_padding_for_conv1d(x: torch.Tensor, kernel_size: int, stride: int, padding_total: int = 0) -> int:
    """Right padding needed so that the last window of a strided conv over ``x`` is complete.

    Equals EnCodec's ``(ceil(n_frames) - 1) * stride + kernel_size - padding_total - length`` with
    ``n_frames = (length - kernel_size + padding_total) / stride + 1``, computed in exact integer arithmetic.
    """
    length = x.shape[-1]
    frames_minus_one = -((kernel_size - padding_total - length) // stride)  # ceil((len - k + pt) / stride)
    ideal_length = frames_minus_one * stride + kernel_size - padding_total
    return ideal_length - length


def pad_for_conv1d(x: torch.Tensor, kernel_size: int, stride: int, padding_total: int = 0) -> torch.Tensor:
    """Zero-pad ``x`` on the right by :func:`get_extra_padding_for_conv1d` so that a strided conv sees only
    complete windows (and its transposed conv can rebuild the full length)."""
    return F.pad(x, (0, get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)))


def pad1d(x: torch.Tensor, paddings: Tuple[int, int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` on the last dim that also allows reflect padding wider than the input.

    For ``mode="reflect"`` on an input of length <= the largest padding, zeros are first appended on the
    right so that the reflection is defined, and removed again afterwards (EnCodec's rule). ``"zero"`` is
    an alias of ``"constant"``.
    """
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0:
        raise ValueError(f"paddings must be non-negative, got {paddings}")
    if mode == "zero":
        mode = "constant"
    if mode != "reflect":
        return F.pad(x, (padding_left, padding_right), mode, value)
    length = x.shape[-1]
    max_pad = max(padding_left, padding_right)
    extra_pad = 0
    if length <= max_pad:
        extra_pad = max_pad - length + 1
        x = F.pad(x, (0, extra_pad))
    padded = F.pad(x, (padding_left, padding_right), "reflect")
    return padded[..., :padded.shape[-1] - extra_pad]


def unpad1d(x: torch.Tensor, paddings: Tuple[int, int]) -> torch.Tensor:
    """Remove ``paddings = (left, right)`` samples from the last dim."""
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0 or padding_left + padding_right > x.shape[-1]:
        raise ValueError(f"cannot remove paddings {paddings} from a signal of length {x.shape[-1]}")
    return x[..., padding_left:x.shape[-1] - padding_right]


class NormConv1d(nn.Module):
    """``nn.Conv1d`` (weight-normed for ``norm="weight_norm"``) followed by a normalisation module.

    Children: ``conv`` (the convolution) and ``norm`` (``nn.Identity`` or ``nn.GroupNorm``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 norm: str = "none", norm_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        _check_norm(norm)
        conv_cls = WNConv1d if norm == "weight_norm" else nn.Conv1d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
                             bias=bias)
        self.norm = _norm_module(norm, out_channels, causal, norm_kwargs or {})
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` (weight-normed for ``norm="weight_norm"``) followed by a normalisation module.

    Children: ``convtr`` and ``norm``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = False, norm: str = "none",
                 norm_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        _check_norm(norm)
        conv_cls = WNConvTranspose1d if norm == "weight_norm" else nn.ConvTranspose1d
        self.convtr = conv_cls(in_channels, out_channels, kernel_size, stride)
        self.norm = _norm_module(norm, out_channels, causal, norm_kwargs or {})
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class SConv1d(nn.Module):
    """Conv1d that keeps ``ceil(length / stride)`` frames using EnCodec's padding rules.

    Total padding ``(kernel_size - 1) * dilation - (stride - 1)`` is split with the larger half on the
    left (non-causal) or put entirely on the left (causal), plus the extra right padding of
    :func:`get_extra_padding_for_conv1d`. Child: ``conv`` (:class:`NormConv1d`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 norm: str = "none", norm_kwargs: Optional[Mapping[str, Any]] = None,
                 pad_mode: str = "reflect") -> None:
        super().__init__()
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; use one of {', '.join(_PAD_MODES)}")
        if stride > 1 and dilation > 1:
            warnings.warn(f"SConv1d has been initialized with stride > 1 and dilation > 1 "
                          f"(kernel_size={kernel_size} stride={stride}, dilation={dilation}).", stacklevel=2)
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
                               bias=bias, causal=causal, norm=norm, norm_kwargs=norm_kwargs)
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv.conv
        kernel_size, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        padding_total = (kernel_size - 1) * dilation - (stride - 1)
        extra_padding = get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)
        if self.causal:
            paddings = (padding_total, extra_padding)
        else:
            padding_right = padding_total // 2
            paddings = (padding_total - padding_right, padding_right + extra_padding)
        return self.conv(pad1d(x, paddings, mode=self.pad_mode))


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims ``kernel_size - stride`` samples so the output is ``length * stride``.

    Non-causal: the larger half is trimmed on the left. Causal: ``ceil(total * trim_right_ratio)`` is
    trimmed on the right and the rest on the left. Child: ``convtr`` (:class:`NormConvTranspose1d`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = False, norm: str = "none", trim_right_ratio: float = 1.0,
                 norm_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueError(f"trim_right_ratio must be in [0, 1], got {trim_right_ratio}")
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions; "
                             "set causal=True or trim_right_ratio=1.0")
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride, causal=causal,
                                          norm=norm, norm_kwargs=norm_kwargs)
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convtr = self.convtr.convtr
        padding_total = convtr.kernel_size[0] - convtr.stride[0]
        y = self.convtr(x)
        if self.causal:
            padding_right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            padding_right = padding_total // 2
        return unpad1d(y, (padding_total - padding_right, padding_right))


class SLSTM(nn.Module):
    """Multi-layer LSTM over the time axis of a ``[B, C, T]`` tensor, with a residual skip.

    Child: ``lstm`` (``nn.LSTM(dimension, dimension, num_layers)``, sequence-first).
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


def _activation(name: str, params: Mapping[str, Any]) -> nn.Module:
    act = getattr(nn, name, None)
    if not (isinstance(act, type) and issubclass(act, nn.Module)):
        raise ValueError(f"activation {name!r} is not a torch.nn module class (e.g. 'ELU', 'ReLU', 'Tanh')")
    return act(**dict(params))


_DEFAULT_ACTIVATION_PARAMS = {"alpha": 1.0}


class SEANetResnetBlock(nn.Module):
    """SEANet residual block: ``shortcut(x) + block(x)``.

    ``block`` = Seq[act, SConv1d(dim -> dim // compress, k0, d0), act, SConv1d(-> dim, k1, d1), ...];
    ``shortcut`` = ``nn.Identity`` if ``true_skip`` else a 1x1 :class:`SConv1d`.
    """

    def __init__(self, dim: int, kernel_sizes: Sequence[int] = (3, 1), dilations: Sequence[int] = (1, 1),
                 activation: str = "ELU", activation_params: Optional[Mapping[str, Any]] = None,
                 norm: str = "weight_norm", norm_params: Optional[Mapping[str, Any]] = None, causal: bool = False,
                 pad_mode: str = "reflect", compress: int = 2, true_skip: bool = True) -> None:
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ValueError(f"kernel_sizes {list(kernel_sizes)} and dilations {list(dilations)} must have the "
                             "same length")
        act_params = _DEFAULT_ACTIVATION_PARAMS if activation_params is None else activation_params
        hidden = dim // compress
        layers = []
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            layers += [
                _activation(activation, act_params),
                SConv1d(in_chs, out_chs, kernel_size=kernel_size, dilation=dilation, norm=norm,
                        norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode),
            ]
        self.block = nn.Sequential(*layers)
        self.shortcut: nn.Module
        if true_skip:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = SConv1d(dim, dim, kernel_size=1, norm=norm, norm_kwargs=norm_params, causal=causal,
                                    pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


def _check_ratios(ratios: Sequence[int]) -> list:
    ratios = list(ratios)
    if not ratios or any(not isinstance(r, int) or r < 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list of positive integers, got {ratios}")
    return ratios


class SEANetEncoder(nn.Module):
    """SEANet encoder ``[B, channels, T] -> [B, dimension, ceil(T / prod(ratios))]`` (EnCodec 0.1.1).

    ``model`` = Seq[SConv1d(channels, n_filters, kernel_size), per ratio r (**in the order given**):
    ``n_residual_layers`` x :class:`SEANetResnetBlock` (dilation ``dilation_base ** j``), act,
    SConv1d(m * n_filters, 2 * m * n_filters, k=2r, stride=r); optional :class:`SLSTM` (``lstm`` layers);
    act; SConv1d(-> dimension, last_kernel_size)].

    Unlike EnCodec's class (which reverses ``ratios``), the ratios are used in the order given, which is
    what upstream's factory achieves by reversing the config list first; the default ``(2, 2, 2, 2, 2)`` is
    upstream's factory default.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, n_residual_layers: int = 1,
                 ratios: Sequence[int] = (2, 2, 2, 2, 2), activation: str = "ELU",
                 activation_params: Optional[Mapping[str, Any]] = None, norm: str = "weight_norm",
                 norm_params: Optional[Mapping[str, Any]] = None, kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, causal: bool = False,
                 pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2) -> None:
        super().__init__()
        act_params = _DEFAULT_ACTIVATION_PARAMS if activation_params is None else activation_params
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.ratios = _check_ratios(ratios)
        self.n_residual_layers = n_residual_layers
        self.hop_length = math.prod(self.ratios)
        conv_kw = dict(norm=norm, norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)

        mult = 1
        layers = [SConv1d(channels, mult * n_filters, kernel_size, **conv_kw)]
        for ratio in self.ratios:
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(
                    mult * n_filters, kernel_sizes=(residual_kernel_size, 1), dilations=(dilation_base ** j, 1),
                    norm=norm, norm_params=norm_params, activation=activation, activation_params=act_params,
                    causal=causal, pad_mode=pad_mode, compress=compress, true_skip=true_skip))
            layers += [
                _activation(activation, act_params),
                SConv1d(mult * n_filters, mult * n_filters * 2, kernel_size=ratio * 2, stride=ratio, **conv_kw),
            ]
            mult *= 2
        if lstm:
            layers.append(SLSTM(mult * n_filters, num_layers=lstm))
        layers += [
            _activation(activation, act_params),
            SConv1d(mult * n_filters, dimension, last_kernel_size, **conv_kw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """SEANet decoder ``[B, dimension, L] -> [B, channels, L * prod(ratios)]`` (EnCodec 0.1.1).

    ``model`` = Seq[SConv1d(dimension, 2**len(ratios) * n_filters, kernel_size); optional :class:`SLSTM`;
    per ratio r (in the order given): act, SConvTranspose1d(m * n_filters, m * n_filters // 2, k=2r,
    stride=r), ``n_residual_layers`` x :class:`SEANetResnetBlock`; act; SConv1d(n_filters, channels,
    last_kernel_size); optional ``final_activation``].
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, n_residual_layers: int = 1,
                 ratios: Sequence[int] = (8, 5, 4, 2), activation: str = "ELU",
                 activation_params: Optional[Mapping[str, Any]] = None, final_activation: Optional[str] = None,
                 final_activation_params: Optional[Mapping[str, Any]] = None, norm: str = "weight_norm",
                 norm_params: Optional[Mapping[str, Any]] = None, kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, causal: bool = False,
                 pad_mode: str = "reflect", true_skip: bool = False, compress: int = 2, lstm: int = 2,
                 trim_right_ratio: float = 1.0) -> None:
        super().__init__()
        act_params = _DEFAULT_ACTIVATION_PARAMS if activation_params is None else activation_params
        self.dimension = dimension
        self.channels = channels
        self.n_filters = n_filters
        self.ratios = _check_ratios(ratios)
        self.n_residual_layers = n_residual_layers
        self.hop_length = math.prod(self.ratios)
        conv_kw = dict(norm=norm, norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)

        mult = 2 ** len(self.ratios)
        layers = [SConv1d(dimension, mult * n_filters, kernel_size, **conv_kw)]
        if lstm:
            layers.append(SLSTM(mult * n_filters, num_layers=lstm))
        for ratio in self.ratios:
            layers += [
                _activation(activation, act_params),
                SConvTranspose1d(mult * n_filters, mult * n_filters // 2, kernel_size=ratio * 2, stride=ratio,
                                 norm=norm, norm_kwargs=norm_params, causal=causal,
                                 trim_right_ratio=trim_right_ratio),
            ]
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(
                    mult * n_filters // 2, kernel_sizes=(residual_kernel_size, 1), dilations=(dilation_base ** j, 1),
                    activation=activation, activation_params=act_params, norm=norm, norm_params=norm_params,
                    causal=causal, pad_mode=pad_mode, compress=compress, true_skip=true_skip))
            mult //= 2
        layers += [
            _activation(activation, act_params),
            SConv1d(n_filters, channels, last_kernel_size, **conv_kw),
        ]
        if final_activation is not None:
            layers.append(_activation(final_activation, final_activation_params or {}))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
