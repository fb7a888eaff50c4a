"""``AudioAutoencoder`` (the root of an ``autoencoder`` model), the encoder/decoder factories (see
docs/model_config.md#encoders-and-decoders-type, docs/model_config.md#autoencoder--model) and
``DiffusionAutoencoder`` (``diffusion_autoencoder`` models: an optional encoder/decoder pair whose latents
condition a diffusion decoder through input concatenation).

As upstream's ``models/autoencoders.py``, this module also exposes the encoder and decoder classes, whose code lives
in :mod:`.oobleck` (Oobleck), :mod:`.dac` (DAC wrappers) and :mod:`.taae` (TAAE), and the helpers they use
(:mod:`.wn`, :mod:`.activations`, :mod:`.common`).
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..samplers import sample
from .activations import get_activation
from .common import checkpoint, fold_channels_into_batch, unfold_channels_from_batch
from ..config import get_bool, raise_errors
from .config import ConfigError, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from .coder_types import DECODER_TYPES, ENCODER_TYPES
from .config_geometry import autoencoder_errors
from .dac import DACDecoderWrapper, DACEncoderWrapper
from .oobleck import DecoderBlock, EncoderBlock, OobleckDecoder, OobleckEncoder, ResidualUnit
from .taae import TAAEBlock, TAAEDecoder, TAAEEncoder, Transpose
from .wn import WNConv1d, WNConvTranspose1d

__all__ = [
    "AudioAutoencoder",
    "ENCODER_TYPES",
    "DECODER_TYPES",
    "create_encoder_from_config",
    "create_decoder_from_config",
    "create_autoencoder_from_config",
    "DiffusionAutoencoder",
    "create_diffAE_from_config",
    "DIFFAE_BACKBONES",
    # defined elsewhere, importable from here as from upstream's models/autoencoders.py
    "WNConv1d",
    "WNConvTranspose1d",
    "checkpoint",
    "get_activation",
    "fold_channels_into_batch",
    "unfold_channels_from_batch",
    "ResidualUnit",
    "EncoderBlock",
    "DecoderBlock",
    "OobleckEncoder",
    "OobleckDecoder",
    "Transpose",
    "TAAEBlock",
    "TAAEEncoder",
    "TAAEDecoder",
    "DACEncoderWrapper",
    "DACDecoderWrapper",
]

_VAE_LIKE = ("vae", "rvq_vae", "dac_rvq_vae")


def _import(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _build_coder(spec: Mapping, registry: Mapping[str, str], path: str, extra_keys: Tuple[str, ...]) -> nn.Module:
    spec = require_mapping(spec, path)
    kind = check_choice(require(spec, "type", path, f"one of {', '.join(registry)}"), registry, f"{path}.type")
    warn_unknown_keys(spec, ("type", "config", "requires_grad") + extra_keys, path)
    module = build_from_config(_import(registry[kind]), spec.get("config", {}), f"{path}.config")
    if not get_bool(spec, "requires_grad", True, path):
        module.requires_grad_(False)
    return module


def create_encoder_from_config(encoder_config: Mapping, path: str = "model.encoder") -> nn.Module:
    """Build an encoder from ``{"type", "config", "requires_grad"?}`` (types: ``ENCODER_TYPES``)."""
    return _build_coder(encoder_config, ENCODER_TYPES, path, ())


def create_decoder_from_config(decoder_config: Mapping, path: str = "model.decoder") -> nn.Module:
    """Build a decoder from ``{"type", "config", "requires_grad"?, "soft_clip"?}`` (types: ``DECODER_TYPES``)."""
    return _build_coder(decoder_config, DECODER_TYPES, path, ("soft_clip",))


def _fix_channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, C, T] -> [B, channels, T]: mono duplicated, extra channels dropped, mean for mono targets."""
    have = audio.shape[1]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(dim=1, keepdim=True)
    if have == 1:
        return audio.repeat(1, channels, 1)
    if have > channels:
        return audio[:, :channels]
    raise ValueError(f"cannot convert {have}-channel audio to {channels} channels")


class AudioAutoencoder(nn.Module):
    """Encoder -> optional bottleneck -> decoder, with an optional pretransform around both.

    Children (state-dict prefixes): ``encoder``, ``decoder``, ``bottleneck``, ``pretransform``. A ``None``
    encoder is the identity (diffusion autoencoders may have none).
    """

    def __init__(self, encoder: Optional[nn.Module], decoder: Optional[nn.Module], latent_dim: int, downsampling_ratio: int,
                 sample_rate: int, io_channels: int = 2, bottleneck: Optional[nn.Module] = None,
                 pretransform: Optional[nn.Module] = None, in_channels: Optional[int] = None,
                 out_channels: Optional[int] = None, soft_clip: bool = False) -> None:
        super().__init__()
        self.downsampling_ratio = downsampling_ratio
        self.sample_rate = sample_rate
        self.latent_dim = latent_dim
        self.io_channels = io_channels
        self.in_channels = in_channels if in_channels is not None else io_channels
        self.out_channels = out_channels if out_channels is not None else io_channels
        self.min_length = downsampling_ratio
        self.soft_clip = soft_clip
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck
        self.pretransform = pretransform
        self.is_discrete = bool(bottleneck is not None and getattr(bottleneck, "is_discrete", False))

    # ------------------------------------------------------------------ encode / decode
    def _pretransform_encode(self, audio: torch.Tensor, iterate_batch: bool) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.pretransform.enable_grad):
            if iterate_batch:
                return torch.cat([self.pretransform.encode(audio[i:i + 1]) for i in range(audio.shape[0])])
            return self.pretransform.encode(audio)

    def encode(self, audio: torch.Tensor, skip_bottleneck: bool = False, return_info: bool = False,
               skip_pretransform: bool = False, iterate_batch: bool = False,
               **kwargs: Any) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]:
        """Audio ``[B, in_channels, T]`` -> latents ``[B, latent_dim, T / downsampling_ratio]``.

        ``kwargs`` go to the bottleneck (e.g. ``n_quantizers`` for DAC RVQ). With ``return_info`` the
        bottleneck's info dict (``kl``, ``quantizer_indices``...) and ``pre_bottleneck_latents`` are returned.
        """
        info: Dict[str, Any] = {}
        if self.pretransform is not None and not skip_pretransform:
            audio = self._pretransform_encode(audio, iterate_batch)
        if self.encoder is None:
            latents = audio
        elif iterate_batch:
            latents = torch.cat([self.encoder(audio[i:i + 1]) for i in range(audio.shape[0])])
        else:
            latents = self.encoder(audio)
        info["pre_bottleneck_latents"] = latents
        if self.bottleneck is not None and not skip_bottleneck:
            latents, bottleneck_info = self.bottleneck.encode(latents, return_info=True, **kwargs)
            info.update(bottleneck_info)
        return (latents, info) if return_info else latents

    def decode(self, latents: torch.Tensor, skip_bottleneck: bool = False, iterate_batch: bool = False,
               **kwargs: Any) -> torch.Tensor:
        """Latents ``[B, latent_dim, L]`` -> audio ``[B, out_channels, L * downsampling_ratio]``."""
        if self.bottleneck is not None and not skip_bottleneck:
            latents = self.bottleneck.decode(latents)
        if iterate_batch:
            decoded = torch.cat([self.decoder(latents[i:i + 1], **kwargs) for i in range(latents.shape[0])])
        else:
            decoded = self.decoder(latents, **kwargs)
        if self.pretransform is not None:
            # No no_grad here (unlike upstream): a frozen pretransform's parameters get no gradient anyway,
            # but the loss on the decoded audio must reach the decoder through it.
            if iterate_batch:
                decoded = torch.cat([self.pretransform.decode(decoded[i:i + 1]) for i in range(decoded.shape[0])])
            else:
                decoded = self.pretransform.decode(decoded)
        if self.soft_clip:
            decoded = torch.tanh(decoded)
        return decoded

    def decode_tokens(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Decode discrete tokens (the bottleneck's ``tokens_id`` info entry) to audio."""
        if not self.is_discrete:
            raise ValueError("decode_tokens needs a discrete bottleneck (rvq, rvq_vae, dac_rvq, dac_rvq_vae, fsq, "
                             f"dithered_fsq); this model's bottleneck is {type(self.bottleneck).__name__}")
        latents = self.bottleneck.decode_tokens(tokens)
        return self.decode(latents, skip_bottleneck=True, **kwargs)

    # ------------------------------------------------------------------ audio preparation
    def preprocess_audio_for_encoder(self, audio: torch.Tensor, in_sr: int) -> torch.Tensor:
        """One clip ``[C, T]`` (or ``[T]``, or ``[1, C, T]``) at ``in_sr`` -> ``[1, in_channels, T']`` ready to encode."""
        return self.preprocess_audio_list_for_encoder([audio], [in_sr])

    def preprocess_audio_list_for_encoder(self, audio_list: Sequence[torch.Tensor],
                                          in_sr_list: Union[int, Sequence[int]]) -> torch.Tensor:
        """Resample, pad (to the longest clip, rounded up to ``min_length``) and channel-convert a list of clips."""
        if isinstance(in_sr_list, int):
            in_sr_list = [in_sr_list] * len(audio_list)
        if len(in_sr_list) != len(audio_list):
            raise ValueError(f"got {len(audio_list)} clips but {len(in_sr_list)} sample rates")
        import julius

        prepared = []
        for audio, sr in zip(audio_list, in_sr_list):
            if audio.dim() == 3:
                if audio.shape[0] != 1:
                    raise ValueError(f"expected one clip [C, T], got a batch of shape {tuple(audio.shape)}")
                audio = audio[0]
            if audio.dim() == 1:
                audio = audio.unsqueeze(0)
            if sr != self.sample_rate:
                audio = julius.resample_frac(audio.float(), int(sr), int(self.sample_rate))
            prepared.append(_fix_channels(audio.unsqueeze(0), self.in_channels)[0])
        longest = max(a.shape[-1] for a in prepared)
        target = int(math.ceil(longest / self.min_length) * self.min_length)
        return torch.stack([nn.functional.pad(a, (0, target - a.shape[-1])) for a in prepared])

    # ------------------------------------------------------------------ chunked encode / decode
    @staticmethod
    def _windows(total: int, chunk: int, hop: int) -> List[int]:
        starts = list(range(0, total - chunk + 1, hop))
        if starts[-1] + chunk != total:
            starts.append(total - chunk)
        return starts

    def _paste(self, out: torch.Tensor, pieces: List[torch.Tensor], starts: List[int], trim: int) -> torch.Tensor:
        last = len(pieces) - 1
        for i, (piece, start) in enumerate(zip(pieces, starts)):
            t_start, t_end = start, start + piece.shape[-1]
            if i == last:  # the final window is right-aligned with the end
                t_end = out.shape[-1]
                t_start = t_end - piece.shape[-1]
            c_start, c_end = 0, piece.shape[-1]
            if i > 0:
                t_start += trim
                c_start += trim
            if i < last:
                t_end -= trim
                c_end -= trim
            out[..., t_start:t_end] = piece[..., c_start:c_end]
        return out

    def encode_audio(self, audio: torch.Tensor, chunked: bool = False, overlap: int = 32, chunk_size: int = 128,
                     **kwargs: Any) -> torch.Tensor:
        """Encode, optionally in overlapping windows of ``chunk_size`` latent frames to bound memory.

        ``audio`` should be a multiple of ``downsampling_ratio`` long (``preprocess_audio_for_encoder``
        ensures it). Audio shorter than one chunk is encoded in one go.
        """
        ratio = self.downsampling_ratio
        if chunk_size <= overlap:
            raise ValueError(f"chunk_size ({chunk_size}) must be larger than overlap ({overlap})")
        chunk, ovl = chunk_size * ratio, overlap * ratio
        total = audio.shape[-1]
        if not chunked or total <= chunk:
            return self.encode(audio, **kwargs)
        starts = self._windows(total, chunk, chunk - ovl)
        pieces = [self.encode(audio[..., s:s + chunk], **kwargs) for s in starts]
        out = pieces[0].new_zeros((audio.shape[0], pieces[0].shape[1], total // ratio))
        return self._paste(out, pieces, [s // ratio for s in starts], ovl // ratio // 2)

    def decode_audio(self, latents: torch.Tensor, chunked: bool = False, overlap: int = 32, chunk_size: int = 128,
                     **kwargs: Any) -> torch.Tensor:
        """Decode, optionally in overlapping windows of ``chunk_size`` latent frames (long outputs, low memory)."""
        if chunk_size <= overlap:
            raise ValueError(f"chunk_size ({chunk_size}) must be larger than overlap ({overlap})")
        total = latents.shape[-1]
        if not chunked or total <= chunk_size:
            return self.decode(latents, **kwargs)
        ratio = self.downsampling_ratio
        starts = self._windows(total, chunk_size, chunk_size - overlap)
        pieces = [self.decode(latents[..., s:s + chunk_size], **kwargs) for s in starts]
        out = pieces[0].new_zeros((latents.shape[0], pieces[0].shape[1], total * ratio))
        return self._paste(out, pieces, [s * ratio for s in starts], (overlap // 2) * ratio)


# ---------------------------------------------------------------------- factory
_AE_MODEL_KEYS = ("encoder", "decoder", "bottleneck", "pretransform", "latent_dim", "downsampling_ratio",
                  "io_channels", "in_channels", "out_channels")


def create_autoencoder_from_config(config: Mapping, path: str = "") -> AudioAutoencoder:
    """Build an ``AudioAutoencoder`` from a full model config (``{"model": {...}, "sample_rate": ...}``).

    ``path`` is the JSON path of the ``model`` block in error messages (default ``model``; an autoencoder
    pretransform passes ``model.pretransform.config``).
    """
    from .bottleneck import create_bottleneck_from_config
    from .factory import create_pretransform_from_config

    config = require_mapping(config, "<root>")
    mpath = path or "model"
    ae = require_mapping(require(config, "model", ""), mpath)
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    latent_dim = require(ae, "latent_dim", mpath, "number of latent channels", (int,))
    ratio = require(ae, "downsampling_ratio", mpath, "audio samples per latent frame", (int,))
    io_channels = require(ae, "io_channels", mpath, "audio channels", (int,))
    if ratio <= 0:
        raise ConfigError(f"{mpath}.downsampling_ratio", f"must be a positive integer, got {ratio}")
    warn_unknown_keys(ae, _AE_MODEL_KEYS, mpath)
    bottleneck_cfg = ae.get("bottleneck")
    encoder_cfg = require_mapping(require(ae, "encoder", mpath), f"{mpath}.encoder")
    decoder_cfg = require_mapping(require(ae, "decoder", mpath), f"{mpath}.decoder")
    raise_errors(autoencoder_errors(ae, mpath))
    encoder = create_encoder_from_config(encoder_cfg, f"{mpath}.encoder")
    decoder = create_decoder_from_config(decoder_cfg, f"{mpath}.decoder")
    bottleneck = None
    if bottleneck_cfg is not None:
        bottleneck = create_bottleneck_from_config(bottleneck_cfg, f"{mpath}.bottleneck")
    pretransform = None
    if ae.get("pretransform") is not None:
        pretransform = create_pretransform_from_config(ae["pretransform"], sample_rate, f"{mpath}.pretransform")
    return AudioAutoencoder(encoder, decoder, latent_dim=latent_dim, downsampling_ratio=ratio,
                            sample_rate=sample_rate, io_channels=io_channels, bottleneck=bottleneck,
                            pretransform=pretransform, in_channels=ae.get("in_channels"),
                            out_channels=ae.get("out_channels"),
                            soft_clip=get_bool(decoder_cfg, "soft_clip", False, f"{mpath}.decoder"))


# ---------------------------------------------------------------------- diffusion autoencoder
DIFFAE_BACKBONES = ("DAU1d", "adp_1d", "dit")


class DiffusionAutoencoder(AudioAutoencoder):
    """An ``AudioAutoencoder`` whose decoding ends with v-DDIM sampling of ``diffusion`` conditioned on the latents.

    Fixes upstream's recursion when a decoder exists (it called ``self.decode`` instead of ``self.decoder``).
    ``encoder`` / ``decoder`` may be ``None`` (identity).
    """

    def __init__(self, diffusion: nn.Module, diffusion_downsampling_ratio: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.diffusion = diffusion
        self.min_length = self.downsampling_ratio * diffusion_downsampling_ratio
        if self.encoder is not None:
            with torch.no_grad():
                for param in self.encoder.parameters():
                    param.mul_(0.5)

    def decode(self, latents: torch.Tensor, steps: int = 100, **kwargs: Any) -> torch.Tensor:
        upsampled_length = latents.shape[2] * self.downsampling_ratio
        if self.bottleneck is not None:
            latents = self.bottleneck.decode(latents)
        if self.decoder is not None:
            latents = self.decoder(latents)
        if latents.shape[2] != upsampled_length:
            latents = F.interpolate(latents, size=upsampled_length, mode="nearest")
        noise = torch.randn(latents.shape[0], self.io_channels, upsampled_length, device=latents.device,
                            dtype=latents.dtype)
        decoded = sample(self.diffusion, noise, steps, 0, input_concat_cond=latents)
        if self.pretransform is not None:
            decoded = self.pretransform.decode(decoded)
        return decoded


def create_diffAE_from_config(config: Mapping) -> DiffusionAutoencoder:
    """Build a ``diffusion_autoencoder`` model from its full config (``{"model": {...}, "sample_rate": ...}``)."""
    from .bottleneck import create_bottleneck_from_config
    from .diffusion import DAU1DCondWrapper, UNet1DCondWrapper
    from .dit import DiTWrapper
    from .factory import create_pretransform_from_config

    model = require_mapping(require(config, "model", ""), "model")
    warn_unknown_keys(model, ("encoder", "decoder", "diffusion", "bottleneck", "pretransform", "latent_dim",
                              "downsampling_ratio", "io_channels"), "model")
    diffusion = require_mapping(require(model, "diffusion", "model", "the diffusion decoder"), "model.diffusion")
    kind = check_choice(require(diffusion, "type", "model.diffusion", f"one of {', '.join(DIFFAE_BACKBONES)}"),
                        DIFFAE_BACKBONES, "model.diffusion.type")
    backbone_config = dict(require(diffusion, "config", "model.diffusion", "the backbone options"))
    if kind == "dit":
        # upstream required diffusion_objective inside config; the diffusion decoder is always v-objective
        backbone_config.setdefault("diffusion_objective", "v")
    classes = {"DAU1d": DAU1DCondWrapper, "adp_1d": UNet1DCondWrapper, "dit": DiTWrapper}
    backbone = build_from_config(classes[kind], backbone_config, "model.diffusion.config")
    if kind == "DAU1d":
        factor = int(math.prod(backbone_config.get("strides", [2] * (backbone_config.get("depth", 14) - 1))))
    elif kind == "adp_1d":
        factor = int(math.prod(backbone_config.get("factors", [1])))
    else:
        factor = 1
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    encoder = create_encoder_from_config(model["encoder"], "model.encoder") if "encoder" in model else None
    decoder = create_decoder_from_config(model["decoder"], "model.decoder") if "decoder" in model else None
    bottleneck = create_bottleneck_from_config(model["bottleneck"], "model.bottleneck") \
        if model.get("bottleneck") is not None else None
    pretransform: Optional[nn.Module] = create_pretransform_from_config(model["pretransform"], sample_rate,
                                                                        "model.pretransform") \
        if model.get("pretransform") is not None else None
    return DiffusionAutoencoder(
        backbone, factor, encoder=encoder, decoder=decoder,
        latent_dim=require(model, "latent_dim", "model", "latent channels", (int,)),
        downsampling_ratio=require(model, "downsampling_ratio", "model", "audio samples per latent frame", (int,)),
        sample_rate=sample_rate, io_channels=require(model, "io_channels", "model", "audio channels", (int,)),
        bottleneck=bottleneck, pretransform=pretransform)
