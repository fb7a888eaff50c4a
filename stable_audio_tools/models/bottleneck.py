"""Autoencoder bottlenecks (upstream ``models/bottleneck.py``) and their config factory.

Every bottleneck has ``encode(x, return_info=False, **kwargs)`` (``x`` or ``(x, info)``) and
``decode(x)`` on ``[B, C, T]`` latents. Discrete bottlenecks (:class:`DiscreteBottleneck`) also have
``num_quantizers``, ``codebook_size``, ``tokens_id`` (the info key holding their tokens) and
``decode_tokens(tokens)``, which returns exactly what ``decode(encode(x))`` returns for the
tokens produced by ``encode`` (eval mode), i.e. latents ready for the autoencoder's decoder.

Info keys read by the training losses: ``kl`` (VAE variants), ``quantizer_loss`` (rvq),
``vq/commitment_loss`` / ``vq/codebook_loss`` (dac_rvq), ``mmd`` (wasserstein, training only).

Upstream bugs fixed here (numerics of every working path are unchanged):

* ``decode_tokens`` works for every discrete bottleneck and returns ``[B, C, T]`` (upstream's rvq
  variants call a non-existent ``get_outputs_from_indices``; fsq/dithered_fsq return ``[B, T, C]``).
* FSQ with ``num_codebooks=1`` no longer crashes when rearranging its indices to ``[B, Q, T]``.
* DAC ``quantize_on_decode``: ``encode`` returns a tuple only when ``return_info`` is true, and
  ``decode_tokens`` does not quantize the already-quantized latents a second time.
* Noise-augment channels are drawn directly on the latents' device/dtype.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from .quantizers import FSQ, DitheredFSQ, ResidualVectorQuantize, ResidualVQ

__all__ = [
    "Bottleneck",
    "DiscreteBottleneck",
    "TanhBottleneck",
    "VAEBottleneck",
    "L2Bottleneck",
    "WassersteinBottleneck",
    "RVQBottleneck",
    "RVQVAEBottleneck",
    "DACRVQBottleneck",
    "DACRVQVAEBottleneck",
    "FSQBottleneck",
    "DitheredFSQBottleneck",
    "SoftNormBottleneck",
    "vae_sample",
    "compute_mean_kernel",
    "compute_mmd",
    "create_bottleneck_from_config",
    "BOTTLENECK_TYPES",
]

EncodeOutput = Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]


def _out(x: torch.Tensor, info: Dict[str, Any], return_info: bool) -> EncodeOutput:
    return (x, info) if return_info else x


def _append_noise(x: torch.Tensor, noise_dim: int, scale: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """Concatenate ``noise_dim`` standard-normal channels (times ``scale``) to ``x [B, C, T]``."""
    if noise_dim <= 0:
        return x
    noise = torch.randn(x.shape[0], noise_dim, x.shape[-1], device=x.device, dtype=x.dtype)
    return torch.cat([x, scale * noise], dim=1)


class Bottleneck(nn.Module):
    """Base class: ``is_discrete`` plus the encode/decode interface."""

    def __init__(self, is_discrete: bool = False) -> None:
        super().__init__()
        self.is_discrete = is_discrete

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        """Map encoder output ``[B, C, T]`` to latents; with ``return_info`` also return an info dict."""
        raise NotImplementedError(f"{type(self).__name__} does not implement encode()")

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Map latents ``[B, C, T]`` to the decoder's input."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode()")


class DiscreteBottleneck(Bottleneck):
    """Base of quantizing bottlenecks: ``num_quantizers``, ``codebook_size``, ``tokens_id``."""

    def __init__(self, num_quantizers: int, codebook_size: int, tokens_id: str) -> None:
        super().__init__(is_discrete=True)
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.tokens_id = tokens_id

    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Tokens (as in ``info[self.tokens_id]``) -> the latents ``decode(encode(x))`` would give."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode_tokens()")


# ----------------------------------------------------------------------------- continuous
class TanhBottleneck(Bottleneck):
    """``x -> tanh(x / scale) * scale``; decode is the identity."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(is_discrete=False)
        self.scale = scale

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        return _out(torch.tanh(x / self.scale) * self.scale, {}, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x


def vae_sample(mean: torch.Tensor, scale: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample and KL term.

    ``stdev = softplus(scale) + 1e-4``; ``z = mean + stdev * N(0, 1)``;
    ``kl = mean over batch and time of sum over channels of (mean^2 + var - log var - 1)``.
    """
    stdev = F.softplus(scale) + 1e-4
    var = stdev * stdev
    logvar = torch.log(var)
    latents = torch.randn_like(mean) * stdev + mean
    kl = (mean * mean + var - logvar - 1).sum(1).mean()
    return latents, kl


def _split_mean_scale(x: torch.Tensor, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if x.shape[1] % 2 != 0:
        raise ValueError(f"{name} expects an even number of channels (mean and scale halves), got {x.shape[1]}; "
                         "make the encoder output 2 x latent_dim channels")
    mean, scale = x.chunk(2, dim=1)
    return mean, scale


class VAEBottleneck(Bottleneck):
    """Gaussian VAE: channels split into mean/scale halves; always samples (also in eval, as upstream)."""

    def __init__(self) -> None:
        super().__init__(is_discrete=False)

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        x, kl = vae_sample(*_split_mean_scale(x, "VAEBottleneck"))
        return _out(x, {"kl": kl}, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x


def compute_mean_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian kernel ``exp(-mean_c (x_i - y_j)^2 / C)`` over all pairs of rows of ``x`` and ``y`` ``[N, C]``."""
    kernel_input = (x[:, None] - y[None]).pow(2).mean(2) / x.shape[-1]
    return torch.exp(-kernel_input).mean()


def compute_mmd(latents: torch.Tensor) -> torch.Tensor:
    """MMD between latents ``[B, C, T]`` (as ``[(B*T), C]`` samples) and as many Gaussian samples."""
    flat = latents.permute(0, 2, 1).reshape(-1, latents.shape[1])
    noise = torch.randn_like(flat)
    mmd = compute_mean_kernel(flat, flat) + compute_mean_kernel(noise, noise) - 2 * compute_mean_kernel(flat, noise)
    return mmd.mean()


class WassersteinBottleneck(Bottleneck):
    """Identity latents with an MMD-to-Gaussian regulariser (``info['mmd']``, training only).

    Optional soft clip ``tanh(x / tanh_scale) * tanh_scale``; decode appends ``noise_augment_dim``
    Gaussian channels.
    """

    def __init__(self, noise_augment_dim: int = 0, bypass_mmd: bool = False, use_tanh: bool = False,
                 tanh_scale: float = 5.0) -> None:
        super().__init__(is_discrete=False)
        self.noise_augment_dim = noise_augment_dim
        self.bypass_mmd = bypass_mmd
        self.use_tanh = use_tanh
        self.tanh_scale = tanh_scale

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        info: Dict[str, Any] = {}
        if self.training and return_info:
            info["mmd"] = x.new_zeros(()) if self.bypass_mmd else compute_mmd(x)
        if self.use_tanh:
            x = torch.tanh(x / self.tanh_scale) * self.tanh_scale
        return _out(x, info, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return _append_noise(x, self.noise_augment_dim)


class L2Bottleneck(Bottleneck):
    """L2-normalise over the channel dim in both encode and decode."""

    def __init__(self) -> None:
        super().__init__(is_discrete=False)

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        return _out(F.normalize(x, dim=1), {}, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class SoftNormBottleneck(Bottleneck):
    """Learned per-channel affine with an optional running-std normaliser (not in the factory).

    Parameters ``scaling_factor [1, dim, 1]``, ``bias [1, dim, 1]``, ``noise_scaling_factor
    [1, noise_augment_dim, 1]`` and, with ``auto_scale``, a frozen ``running_std [1]`` updated as an
    EMA (0.999) of the latents' std in training. Training info: ``softnorm_loss`` (KL-like penalty
    towards zero mean / unit variance over time, plus 0.4x the same over channels).
    """

    def __init__(self, dim: int = 32, noise_augment_dim: int = 0, noise_regularize: bool = False,
                 auto_scale: bool = False, freeze: bool = False) -> None:
        super().__init__(is_discrete=False)
        self.noise_augment_dim = noise_augment_dim
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.noise_scaling_factor = nn.Parameter(torch.ones(1, noise_augment_dim, 1))
        self.noise_regularize = noise_regularize
        self.freeze = freeze
        if freeze:
            for p in (self.scaling_factor, self.bias, self.noise_scaling_factor):
                p.requires_grad = False
        if auto_scale:
            self.register_parameter("running_std", nn.Parameter(torch.ones(1), requires_grad=False))

    @staticmethod
    def _kl_like(x: torch.Tensor, dim: int) -> torch.Tensor:
        var = (x.std(dim=dim) ** 2).clip(min=1e-4)
        mean = x.mean(dim=dim)
        return (mean * mean + var - torch.log(var) - 1).mean()

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        info: Dict[str, Any] = {}
        x = x * self.scaling_factor + self.bias
        has_std = hasattr(self, "running_std")
        if self.training and has_std and not self.freeze:
            self.running_std.data = (self.running_std.data * 0.999 + x.std().detach() * 0.001).clamp(min=1e-4)
        if has_std:
            x = x / self.running_std
        if self.training and return_info:
            info["softnorm_loss"] = self._kl_like(x, -1) + 0.4 * self._kl_like(x, -2)
        return _out(x, info, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        has_std = hasattr(self, "running_std")
        if has_std:
            x = x * self.running_std
        if self.noise_regularize:
            scaling = self.running_std if has_std else x.std(dim=-1).unsqueeze(-1)
            x = x + torch.randn_like(x) * scaling * (5e-2 if self.training else 1e-3)
        return _append_noise(x, self.noise_augment_dim, self.noise_scaling_factor)


# ----------------------------------------------------------------------------- EMA RVQ
class RVQBottleneck(DiscreteBottleneck):
    """Residual VQ (child ``quantizer`` = :class:`ResidualVQ`) over ``[B, C, T]`` latents.

    Info: ``quantizer_indices [B, T, Q]`` (upstream layout, *not* ``[B, Q, T]``) and
    ``quantizer_loss`` (mean commitment loss; 0 in eval). ``decode_tokens`` takes ``[B, T, Q]``.
    Defaults are upstream's factory defaults.
    """

    def __init__(self, dim: int = 128, codebook_size: int = 1024, num_quantizers: int = 8, decay: float = 0.99,
                 kmeans_init: bool = True, kmeans_iters: int = 50, threshold_ema_dead_code: float = 2,
                 commitment_weight: float = 1.0, codebook_dim: Optional[int] = None, shared_codebook: bool = False,
                 quantize_dropout: bool = False, quantize_dropout_cutoff_index: int = 0,
                 quantize_dropout_multiple_of: int = 1, eps: float = 1e-5, ema_update: bool = True,
                 stochastic_sample_codes: bool = False, sample_codebook_temp: float = 1.0,
                 sync_codebook: Optional[bool] = None) -> None:
        super().__init__(num_quantizers=num_quantizers, codebook_size=codebook_size, tokens_id="quantizer_indices")
        self.quantizer = ResidualVQ(
            dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, codebook_dim=codebook_dim,
            shared_codebook=shared_codebook, quantize_dropout=quantize_dropout,
            quantize_dropout_cutoff_index=quantize_dropout_cutoff_index,
            quantize_dropout_multiple_of=quantize_dropout_multiple_of, decay=decay, eps=eps, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, ema_update=ema_update,
            stochastic_sample_codes=stochastic_sample_codes, sample_codebook_temp=sample_codebook_temp,
            sync_codebook=sync_codebook)

    def _quantize(self, x: torch.Tensor, info: Dict[str, Any]) -> torch.Tensor:
        x, indices, loss = self.quantizer(x.transpose(1, 2))
        info["quantizer_indices"] = indices
        info["quantizer_loss"] = loss.mean()
        return x.transpose(1, 2)

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        info: Dict[str, Any] = {}
        x = self._quantize(x, info)
        return _out(x, info, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T, Q]`` (Q may be fewer than num_quantizers) -> latents ``[B, C, T]``."""
        return self.decode(self.quantizer.get_output_from_indices(codes).transpose(1, 2))


class RVQVAEBottleneck(RVQBottleneck):
    """VAE sample (``info['kl']``) followed by the residual VQ of :class:`RVQBottleneck`."""

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        x, kl = vae_sample(*_split_mean_scale(x, "RVQVAEBottleneck"))
        info: Dict[str, Any] = {"kl": kl}
        x = self._quantize(x, info)
        return _out(x, info, return_info)


# ----------------------------------------------------------------------------- DAC RVQ
class DACRVQBottleneck(DiscreteBottleneck):
    """DAC residual VQ (child ``quantizer`` = :class:`ResidualVectorQuantize`).

    Info: ``pre_quantizer``, ``z``, ``codes [B, Q, T]``, ``latents`` (projected latents),
    ``vq/commitment_loss`` and ``vq/codebook_loss`` (each divided by ``n_codebooks``). ``n_quantizers``
    limits the codebooks used in eval. With ``quantize_on_decode`` encode returns the un-quantized
    latents and decode quantizes; decode appends ``noise_augment_dim`` Gaussian channels.
    """

    def __init__(self, input_dim: int = 512, n_codebooks: int = 9, codebook_size: int = 1024,
                 codebook_dim: Union[int, Sequence[int]] = 8, quantizer_dropout: float = 0.0,
                 quantize_on_decode: bool = False, noise_augment_dim: int = 0) -> None:
        super().__init__(num_quantizers=n_codebooks, codebook_size=codebook_size, tokens_id="codes")
        self.quantizer = ResidualVectorQuantize(input_dim=input_dim, n_codebooks=n_codebooks,
                                                codebook_size=codebook_size, codebook_dim=codebook_dim,
                                                quantizer_dropout=quantizer_dropout)
        self.quantize_on_decode = quantize_on_decode
        self.noise_augment_dim = noise_augment_dim

    def _quantize(self, x: torch.Tensor, info: Dict[str, Any], n_quantizers: Optional[int]) -> torch.Tensor:
        z, codes, latents, commitment_loss, codebook_loss = self.quantizer(x, n_quantizers=n_quantizers)
        info.update({"z": z, "codes": codes, "latents": latents,
                     "vq/commitment_loss": commitment_loss / self.num_quantizers,
                     "vq/codebook_loss": codebook_loss / self.num_quantizers})
        return z

    def encode(self, x: torch.Tensor, return_info: bool = False, n_quantizers: Optional[int] = None,
               **kwargs: Any) -> EncodeOutput:
        info: Dict[str, Any] = {"pre_quantizer": x}
        if not self.quantize_on_decode:
            x = self._quantize(x, info, n_quantizers)
        return _out(x, info, return_info)

    def _post_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return _append_noise(x, self.noise_augment_dim)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_on_decode:
            x = self.quantizer(x)[0]
        return self._post_quantize(x)

    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, Q, T]`` -> quantized latents (never re-quantized) passed through decode's tail."""
        latents, _, _ = self.quantizer.from_codes(codes)
        return self._post_quantize(latents)


class DACRVQVAEBottleneck(DACRVQBottleneck):
    """VAE sample (``info['kl']``) followed by the DAC residual VQ (no noise augmentation)."""

    def __init__(self, input_dim: int = 512, n_codebooks: int = 9, codebook_size: int = 1024,
                 codebook_dim: Union[int, Sequence[int]] = 8, quantizer_dropout: float = 0.0,
                 quantize_on_decode: bool = False) -> None:
        super().__init__(input_dim=input_dim, n_codebooks=n_codebooks, codebook_size=codebook_size,
                         codebook_dim=codebook_dim, quantizer_dropout=quantizer_dropout,
                         quantize_on_decode=quantize_on_decode, noise_augment_dim=0)

    def encode(self, x: torch.Tensor, return_info: bool = False, n_quantizers: Optional[int] = None,
               **kwargs: Any) -> EncodeOutput:
        x, kl = vae_sample(*_split_mean_scale(x, "DACRVQVAEBottleneck"))
        info: Dict[str, Any] = {"pre_quantizer": x, "kl": kl}
        if not self.quantize_on_decode:
            x = self._quantize(x, info, n_quantizers)
        return _out(x, info, return_info)


# ----------------------------------------------------------------------------- FSQ
class FSQBottleneck(DiscreteBottleneck):
    """Finite scalar quantization (child ``quantizer`` = :class:`FSQ`), computed in float32.

    Info ``quantizer_indices [B, Q, T]`` (int32, Q = ``num_codebooks``); decode appends
    ``noise_augment_dim`` Gaussian channels. ``decode_tokens`` takes ``[B, Q, T]``.
    """

    def __init__(self, levels: Sequence[int], num_codebooks: int = 1, dim: Optional[int] = None,
                 noise_augment_dim: int = 0, keep_num_codebooks_dim: Optional[bool] = None,
                 scale: Optional[float] = None, projection_has_bias: bool = True) -> None:
        super().__init__(num_quantizers=num_codebooks, codebook_size=int(math.prod(levels)),
                         tokens_id="quantizer_indices")
        self.noise_augment_dim = noise_augment_dim
        self.quantizer = FSQ(levels=levels, dim=dim, num_codebooks=num_codebooks,
                             keep_num_codebooks_dim=keep_num_codebooks_dim, scale=scale,
                             projection_has_bias=projection_has_bias)

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        orig_dtype = x.dtype
        x, indices = self.quantizer(x.float().transpose(1, 2))
        x = x.transpose(1, 2).to(orig_dtype)
        if indices.ndim == 2:
            indices = indices.unsqueeze(-1)
        return _out(x, {"quantizer_indices": indices.transpose(1, 2)}, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return _append_noise(x, self.noise_augment_dim)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, Q, T]`` -> latents ``[B, C, T]`` (float32) passed through decode."""
        indices = tokens.transpose(1, 2)
        if not self.quantizer.keep_num_codebooks_dim:
            indices = indices.squeeze(-1)
        return self.decode(self.quantizer.indices_to_codes(indices).transpose(1, 2))


class DitheredFSQBottleneck(DiscreteBottleneck):
    """Upstream's dithered FSQ over ``dim * num_codebooks`` channels (no parameters).

    ``levels`` is an int (same for all ``dim`` channels) or a list of ``dim`` ints. Info
    ``quantizer_indices [B, T, Q]`` (int64, upstream layout); ``decode_tokens`` takes ``[B, T, Q]``.
    """

    def __init__(self, dim: int, levels: Union[int, Sequence[int]], num_codebooks: int = 1,
                 dither_inference: bool = True, noise_dropout: float = 0.05) -> None:
        if isinstance(levels, bool) or not isinstance(levels, (int, list, tuple)):
            raise ValueError(f"levels must be an int or a list of {dim} ints, got {levels!r}")
        if isinstance(levels, int):
            quantizer_levels = [levels] * dim
        else:
            if len(levels) != dim:
                raise ValueError(f"Length of levels list ({len(levels)}) must match dim ({dim}).")
            quantizer_levels = [int(level) for level in levels]
        super().__init__(num_quantizers=num_codebooks, codebook_size=int(math.prod(quantizer_levels)),
                         tokens_id="quantizer_indices")
        self.quantizer = DitheredFSQ(levels=quantizer_levels, dither_inference=dither_inference,
                                     num_codebooks=num_codebooks, noise_dropout=noise_dropout)

    @staticmethod
    def norm_std_loss(x: torch.Tensor) -> torch.Tensor:
        return (x.std() - 1.0) ** 2

    def encode(self, x: torch.Tensor, return_info: bool = False, **kwargs: Any) -> EncodeOutput:
        x, indices = self.quantizer(x.transpose(1, 2))
        return _out(x.transpose(1, 2), {"quantizer_indices": indices}, return_info)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T, Q]`` -> latents ``[B, C, T]``."""
        return self.decode(self.quantizer.indices_to_codes(tokens).transpose(1, 2))


# ----------------------------------------------------------------------------- factory
BOTTLENECK_TYPES: Dict[str, type] = {
    "tanh": TanhBottleneck,
    "vae": VAEBottleneck,
    "rvq": RVQBottleneck,
    "rvq_vae": RVQVAEBottleneck,
    "dac_rvq": DACRVQBottleneck,
    "dac_rvq_vae": DACRVQVAEBottleneck,
    "l2_norm": L2Bottleneck,
    "wasserstein": WassersteinBottleneck,
    "fsq": FSQBottleneck,
    "dithered_fsq": DitheredFSQBottleneck,
}

_NO_CONFIG_TYPES = ("vae", "l2_norm")


def create_bottleneck_from_config(bottleneck_config: Mapping, path: str = "model.bottleneck") -> Bottleneck:
    """Build a bottleneck from ``{type, config?, requires_grad?}`` (the dict is never mutated).

    ``config`` is checked against the class signature (unknown keys raise a ConfigError naming
    ``path.config.<key>``); ``vae``/``l2_norm`` take no options and ignore ``config`` with a warning,
    as upstream ignores it. ``requires_grad: false`` freezes the parameters, except for
    ``dithered_fsq`` (upstream returns it before that step; it has no parameters anyway).
    Unknown types raise a ConfigError listing the accepted values.
    """
    spec = require_mapping(bottleneck_config, path)
    btype = require(spec, "type", path, "one of: " + ", ".join(BOTTLENECK_TYPES), (str,))
    check_choice(btype, BOTTLENECK_TYPES, f"{path}.type")
    warn_unknown_keys(spec, ("type", "config", "requires_grad"), path)
    config = spec.get("config")
    cls = BOTTLENECK_TYPES[btype]
    if btype in _NO_CONFIG_TYPES:
        if config is not None:
            warn_unknown_keys(require_mapping(config, f"{path}.config"), (), f"{path}.config")
        bottleneck = cls()
    else:
        bottleneck = build_from_config(cls, config, f"{path}.config")
    if btype == "dithered_fsq":
        return bottleneck
    requires_grad = spec.get("requires_grad", True)
    if not isinstance(requires_grad, bool):
        raise ConfigError(f"{path}.requires_grad", f"expected true or false, got {requires_grad!r}")
    if not requires_grad:
        for param in bottleneck.parameters():
            param.requires_grad = False
    return bottleneck
