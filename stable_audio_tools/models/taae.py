"""TAAE: the transformer autoencoder's encoder and decoder (``type: "taae"``, see
docs/model_config.md#encoders-and-decoders-type).

Each :class:`TAAEBlock` pairs a strided (transposed) weight-normed convolution with a stack of
:class:`~stable_audio_tools.models.transformer.TransformerBlock` s (``dim_heads`` 128, rotary,
LayerNorm qk-norm, layer scale, norm eps 1e-2) whose self-attention uses a sliding window.

Sliding window: upstream passes ``sliding_window`` to flash-attn only, so without flash-attn
(e.g. on CPU) every TAAE silently used full attention. Here the window is honoured by every kernel
(see :mod:`stable_audio_tools.models.attention`), so a model behaves the same on CPU and GPU;
``sliding_window=None`` selects full attention explicitly.

Other differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelstaae.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .activations import get_activation
from .common import gradients_recorded
from .oobleck import ResidualUnit
from .transformer import TransformerBlock
from .wn import WNConv1d, WNConvTranspose1d

__all__ = ["Transpose", "TAAEBlock", "TAAEEncoder", "TAAEDecoder"]

Window = Optional[Tuple[int, int]]


def _window(sliding_window: Optional[Sequence[int]]) -> Window:
    if sliding_window is None:
        return None
    window = tuple(int(w) for w in sliding_window)
    if len(window) != 2:
        raise ValueError(f"sliding_window must be a pair [left, right] (or null for full attention), "
                         f"got {sliding_window!r}")
    return window


class Transpose(nn.Module):
    """Swap the last two dims (``[b, c, n]`` ↔ ``[b, n, c]``); ignores keyword arguments."""

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x.transpose(-1, -2)


class TAAEBlock(nn.Module):
    """One resolution level of the TAAE.

    Encoder ``layers`` = ModuleList[(3 ResidualUnits, d = 1, 3, 9, if ``use_dilated_conv``),
    act(in), WNConv1d(in, out, 2s, s, pad ceil(s/2)) or Identity, transformer stack].
    Decoder ``layers`` = ModuleList[transformer stack, act(in), WNConvTranspose1d(in, out, 2s, s,
    pad ceil(s/2)) or Identity, (3 ResidualUnits)]. The transformer stack is a ModuleList
    [Transpose, TransformerBlock × transformer_depth, Transpose] at width out (encoder) / in (decoder).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, type: str = "encoder",
                 transformer_depth: int = 3, use_snake: bool = False,
                 sliding_window: Optional[Sequence[int]] = (31, 32), checkpointing: bool = False,
                 conformer: bool = False, layer_scale: bool = True, use_dilated_conv: bool = False) -> None:
        super().__init__()
        if type not in ("encoder", "decoder"):
            raise ValueError(f"TAAEBlock type must be 'encoder' or 'decoder', got {type!r}")
        if stride < 1:
            raise ValueError(f"TAAEBlock stride must be >= 1, got {stride}")
        self.checkpointing = checkpointing
        self.sliding_window = _window(sliding_window)
        act_name = "snake" if use_snake else "none"
        transformer_dim = out_channels if type == "encoder" else in_channels
        transformers = nn.ModuleList([Transpose()])
        for _ in range(transformer_depth):
            transformers.append(TransformerBlock(
                transformer_dim, dim_heads=128, causal=False, zero_init_branch_outputs=not layer_scale,
                remove_norms=False, conformer=conformer, layer_scale=layer_scale, add_rope=True,
                attn_kwargs={"qk_norm": "ln"}, ff_kwargs={"mult": 4, "no_bias": False},
                norm_kwargs={"eps": 1e-2}))
        transformers.append(Transpose())

        def residual_units(channels: int) -> list:
            if not use_dilated_conv:
                return []
            return [ResidualUnit(in_channels=channels, out_channels=channels, dilation=d, use_snake=use_snake)
                    for d in (1, 3, 9)]

        padding = math.ceil(stride / 2)
        if type == "encoder":
            resample = (WNConv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride, padding=padding)
                        if stride > 1 else nn.Identity())
            layers = [*residual_units(in_channels),
                      get_activation(act_name, antialias=False, channels=in_channels),
                      resample, transformers]
        else:
            resample = (WNConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                          padding=padding) if stride > 1 else nn.Identity())
            layers = [transformers, get_activation(act_name, antialias=False, channels=in_channels),
                      resample, *residual_units(out_channels)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_checkpoint = self.checkpointing and gradients_recorded(self, x)
        for layer in self.layers:
            if isinstance(layer, nn.ModuleList):
                for module in layer:
                    if use_checkpoint:
                        x = checkpoint(module, x, use_reentrant=False,
                                       self_attention_flash_sliding_window=self.sliding_window)
                    else:
                        x = module(x, self_attention_flash_sliding_window=self.sliding_window)
            elif use_checkpoint:
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


def _channel_dims(channels: int, c_mults: Sequence[int], strides: Sequence[int],
                  transformer_depths: Sequence[int]) -> list:
    if not (len(c_mults) == len(strides) == len(transformer_depths)) or not c_mults:
        raise ValueError(f"c_mults, strides and transformer_depths must be non-empty and of equal length, got "
                         f"{len(c_mults)}, {len(strides)} and {len(transformer_depths)} entries")
    dims = [c * channels for c in c_mults]
    return [dims[0]] + dims


class TAAEEncoder(nn.Module):
    """``layers`` = Seq[WNConv1d(in, d0, 7, p3), TAAEBlock(d_i → d_{i+1}, strides[i]) × N, act, WNConv1d(d_N, latent, 3, p1)].

    Maps ``[b, in_channels, n]`` to ``[b, latent_dim, n / prod(strides)]``.
    """

    def __init__(self, in_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 transformer_depths: Sequence[int] = (3, 3, 3, 3), use_snake: bool = False,
                 sliding_window: Optional[Sequence[int]] = (63, 64), checkpointing: bool = False,
                 conformer: bool = False, layer_scale: bool = True, use_dilated_conv: bool = False) -> None:
        super().__init__()
        dims = _channel_dims(channels, c_mults, strides, transformer_depths)
        self.depth = len(c_mults)
        layers = [WNConv1d(in_channels, dims[0], kernel_size=7, padding=3, bias=True)]
        for i in range(self.depth):
            layers.append(TAAEBlock(dims[i], dims[i + 1], strides[i], type="encoder",
                                    transformer_depth=transformer_depths[i], use_snake=use_snake,
                                    sliding_window=sliding_window, checkpointing=checkpointing,
                                    conformer=conformer, layer_scale=layer_scale, use_dilated_conv=use_dilated_conv))
        layers += [get_activation("snake" if use_snake else "none", antialias=False, channels=dims[-1]),
                   WNConv1d(dims[-1], latent_dim, kernel_size=3, padding=1, bias=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TAAEDecoder(nn.Module):
    """``layers`` = Seq[WNConv1d(latent, d_N, 3, p1), TAAEBlock(d_i → d_{i-1}, strides[i-1], decoder) for i = N..1, act, WNConv1d(d0, out, 7, p3, no bias)].

    Maps ``[b, latent_dim, m]`` to ``[b, out_channels, m * prod(strides)]``.
    """

    def __init__(self, out_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 transformer_depths: Sequence[int] = (3, 3, 3, 3), use_snake: bool = False,
                 sliding_window: Optional[Sequence[int]] = (63, 64), checkpointing: bool = False,
                 conformer: bool = False, layer_scale: bool = True, use_dilated_conv: bool = False) -> None:
        super().__init__()
        dims = _channel_dims(channels, c_mults, strides, transformer_depths)
        self.depth = len(c_mults)
        layers = [WNConv1d(latent_dim, dims[-1], kernel_size=3, padding=1, bias=True)]
        for i in range(self.depth, 0, -1):
            layers.append(TAAEBlock(dims[i], dims[i - 1], strides[i - 1], type="decoder",
                                    transformer_depth=transformer_depths[i - 1], use_snake=use_snake,
                                    sliding_window=sliding_window, checkpointing=checkpointing,
                                    conformer=conformer, layer_scale=layer_scale, use_dilated_conv=use_dilated_conv))
        layers += [get_activation("snake" if use_snake else "none", antialias=False, channels=dims[0]),
                   WNConv1d(dims[0], out_channels, kernel_size=7, padding=3, bias=False)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
