"""Pretransforms: fixed or frozen transforms applied before an encoder / diffusion model (see
docs/model_config.md#pretransforms-modelpretransform).

Every pretransform exposes ``enable_grad``, ``io_channels``, ``is_discrete``, ``encoded_channels`` and
``downsampling_ratio`` and the methods ``encode`` / ``decode`` (continuous latents) and ``tokenize`` /
``decode_tokens`` (discrete ones); unsupported methods raise ``NotImplementedError`` saying so.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import julius
import torch
from einops import rearrange
from torch import nn

from .bottleneck import DitheredFSQBottleneck, RVQBottleneck
from .pqmf import PQMF
from .wavelets import WaveletDecode1d, WaveletEncode1d

__all__ = [
    "Pretransform",
    "AutoencoderPretransform",
    "WaveletPretransform",
    "PQMFPretransform",
    "PatchedPretransform",
    "PretrainedDACPretransform",
    "AudiocraftCompressionPretransform",
]


class Pretransform(nn.Module):
    """Base class. ``downsampling_ratio`` / ``encoded_channels`` are ``None`` until a subclass sets them."""

    def __init__(self, enable_grad: bool = False, io_channels: int = 2, is_discrete: bool = False) -> None:
        super().__init__()
        self.enable_grad = enable_grad
        self.io_channels = io_channels
        self.is_discrete = is_discrete
        self.encoded_channels: Optional[int] = None
        self.downsampling_ratio: Optional[int] = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, io_channels, T]`` -> latents ``[B, encoded_channels, T / downsampling_ratio]``."""
        raise NotImplementedError(f"{type(self).__name__} does not support continuous encode()")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> audio (inverse of :meth:`encode`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support continuous decode()")

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Audio -> discrete codes (discrete pretransforms only)."""
        raise NotImplementedError(f"{type(self).__name__} is not discrete: tokenize() is unavailable")

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Discrete codes -> audio (discrete pretransforms only)."""
        raise NotImplementedError(f"{type(self).__name__} is not discrete: decode_tokens() is unavailable")


class AutoencoderPretransform(Pretransform):
    """A frozen :class:`~stable_audio_tools.models.autoencoders.AudioAutoencoder` used as a pretransform.

    Child ``model`` (keys ``pretransform.model.*`` in the parent); the model is put in eval mode with
    ``requires_grad=False``. :meth:`load_state_dict` loads into the inner model, so a pretransform
    checkpoint is a plain autoencoder checkpoint. Latents are divided by ``scale`` on encode and
    multiplied by it on decode. ``model_half`` runs the autoencoder in float16 (inputs are cast, outputs
    returned as float32); ``chunked`` / ``iterate_batch`` are forwarded to ``encode_audio`` / ``decode_audio``.
    """

    def __init__(self, model: nn.Module, scale: float = 1.0, model_half: bool = False, iterate_batch: bool = False,
                 chunked: bool = False) -> None:
        bottleneck = model.bottleneck
        discrete = bottleneck is not None and bool(bottleneck.is_discrete)
        super().__init__(enable_grad=False, io_channels=model.io_channels, is_discrete=discrete)
        self.model = model
        self.model.requires_grad_(False).eval()
        self.scale = scale
        self.downsampling_ratio = model.downsampling_ratio
        self.sample_rate = model.sample_rate
        self.encoded_channels = model.latent_dim
        self.model_half = model_half
        self.iterate_batch = iterate_batch
        self.chunked = chunked
        self.num_quantizers = bottleneck.num_quantizers if discrete else None
        self.codebook_size = bottleneck.codebook_size if discrete else None
        if model_half:
            self.model.half()

    def encode(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.model_half:
            x = x.half()
            self.model.to(torch.float16)
        encoded = self.model.encode_audio(x, chunked=self.chunked, iterate_batch=self.iterate_batch, **kwargs)
        if self.model_half:
            encoded = encoded.float()
        return encoded / self.scale

    def decode(self, z: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        z = z * self.scale
        if self.model_half:
            z = z.half()
            self.model.to(torch.float16)
        decoded = self.model.decode_audio(z, chunked=self.chunked, iterate_batch=self.iterate_batch, **kwargs)
        if self.model_half:
            decoded = decoded.float()
        return decoded

    def _require_discrete(self, what: str) -> None:
        if not self.model.is_discrete:
            raise NotImplementedError(f"cannot {what} with a continuous autoencoder (its bottleneck is not "
                                      "discrete); use encode()/decode() instead")

    def _tokens_time_major(self) -> bool:
        """Whether the bottleneck's tokens are ``[B, T, Q]`` (rvq, rvq_vae, dithered_fsq) rather than ``[B, Q, T]``."""
        return isinstance(self.model.bottleneck, (RVQBottleneck, DitheredFSQBottleneck))

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bottleneck tokens (``info[tokens_id]``, e.g. pre-encoded with ``--is-discrete``) -> int64 ``[B, Q, T]``."""
        self._require_discrete("convert tokens")
        return (tokens.transpose(-1, -2) if self._tokens_time_major() else tokens).long()

    def tokenize(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Codes ``[B, num_quantizers, T]`` (int64) of ``info[model.bottleneck.tokens_id]``.

        Upstream returns the bottleneck's own layout, which is ``[B, T, Q]`` for rvq / rvq_vae /
        dithered_fsq; here every bottleneck gives ``[B, Q, T]``, the layout the audio LM works on.
        """
        self._require_discrete("tokenize")
        _, info = self.model.encode(x, return_info=True, **kwargs)
        return self.tokens_to_codes(info[self.model.bottleneck.tokens_id])

    def decode_tokens(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Codes ``[B, Q, T]`` (as :meth:`tokenize` returns them) -> audio."""
        self._require_discrete("decode tokens")
        if self._tokens_time_major():
            tokens = tokens.transpose(-1, -2)
        return self.model.decode_tokens(tokens, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load an autoencoder state dict (keys without the ``model.`` prefix) into the inner model."""
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)


class WaveletPretransform(Pretransform):
    """Fixed wavelet packet transform: ``[B, C, T] -> [B, C * 2**levels, T / 2**levels]``.

    Children ``encoder`` / ``decoder`` (:mod:`~stable_audio_tools.models.wavelets`, buffer ``kernel``).
    """

    def __init__(self, channels: int, levels: int, wavelet: str) -> None:
        super().__init__(enable_grad=False, io_channels=channels, is_discrete=False)
        self.encoder = WaveletEncode1d(channels, levels, wavelet)
        self.decoder = WaveletDecode1d(channels, levels, wavelet)
        self.downsampling_ratio = 2 ** levels
        self.encoded_channels = channels * self.downsampling_ratio

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class PQMFPretransform(Pretransform):
    """PQMF sub-band split: ``[B, C, T] -> [B, C * num_bands, ceil(T / num_bands)]`` (channel-major).

    Child ``pqmf`` (:class:`~stable_audio_tools.models.pqmf.PQMF`, buffers ``filter_bank``, ``prototype``).
    Upstream leaves ``downsampling_ratio`` / ``encoded_channels`` unset (None); here they are
    ``num_bands`` and ``channels * num_bands``, which is what the transform produces.
    """

    def __init__(self, attenuation: float = 100, num_bands: int = 16, channels: int = 1) -> None:
        super().__init__(enable_grad=False, io_channels=channels, is_discrete=False)
        self.pqmf = PQMF(attenuation, num_bands)
        self.downsampling_ratio = num_bands
        self.encoded_channels = channels * num_bands

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.pqmf(x), "b c n t -> b (c n) t")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.pqmf.inverse(rearrange(z, "b (c n) t -> b c n t", n=self.pqmf.num_bands))


class _Resampler(nn.Module):
    """Integer-ratio band-limited resampler (julius' windowed-sinc ``ResampleFrac``).

    Uses torchaudio ``Resample``'s default filter shape (6 zero crossings, roll-off 0.99, Hann window);
    the kernel is a non-persistent buffer, so it adds no state-dict keys (as upstream's torchaudio module).
    """

    def __init__(self, old_sr: int, new_sr: int) -> None:
        super().__init__()
        self.resample = julius.ResampleFrac(old_sr, new_sr, zeros=6, rolloff=0.99)
        kernel = self.resample.kernel
        del self.resample.kernel
        self.resample.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(x)


class PatchedPretransform(Pretransform):
    """Fold patches of ``patch_size`` samples into channels: ``[B, C, L * p] -> [B, C * p, L]`` (``(c h)`` order).

    The input is zero-padded on the right to a multiple of ``patch_size``. With ``oversampling`` > 1 the
    audio is first upsampled by that integer factor (and downsampled back after decoding). As upstream,
    ``downsampling_ratio`` is ``patch_size`` regardless of ``oversampling``.
    """

    def __init__(self, channels: int, patch_size: int, oversampling: int = 1) -> None:
        super().__init__(enable_grad=False, io_channels=channels, is_discrete=False)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not isinstance(oversampling, int) or oversampling < 1:
            raise ValueError(f"oversampling must be a positive integer, got {oversampling!r}")
        self.channels = channels
        self.patch_size = patch_size
        self.oversampling = oversampling
        self.downsampling_ratio = patch_size
        self.encoded_channels = channels * patch_size
        if oversampling > 1:
            self.input_upsampler = _Resampler(1, oversampling)
            self.output_downsampler = _Resampler(oversampling, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.oversampling > 1:
            x = self.input_upsampler(x)
        remainder = x.shape[-1] % self.patch_size
        if remainder:
            x = torch.nn.functional.pad(x, (0, self.patch_size - remainder))
        return rearrange(x, "b c (l h) -> b (c h) l", h=self.patch_size)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = rearrange(z, "b (c h) l -> b c (l h)", h=self.patch_size)
        if self.oversampling > 1:
            x = self.output_downsampler(x)
        return x


class PretrainedDACPretransform(Pretransform):
    """Official Descript Audio Codec weights (needs ``pip install descript-audio-codec``; downloads them).

    ``encode`` = DAC encoder (followed by the RVQ unless ``quantize_on_decode``) / ``scale``; ``decode`` =
    ``* scale``, RVQ if ``quantize_on_decode``, DAC decoder. ``tokenize`` gives the ``[B, n_codebooks, T]``
    codes. ``chunked`` is stored for config compatibility (upstream does not use it either).
    """

    def __init__(self, model_type: str = "44khz", model_bitrate: str = "8kbps", scale: float = 1.0,
                 quantize_on_decode: bool = True, chunked: bool = True) -> None:
        super().__init__(enable_grad=False, io_channels=1, is_discrete=True)
        try:
            import dac
        except ImportError as err:
            raise ImportError("the 'dac_pretrained' pretransform needs the Descript Audio Codec package: "
                              "pip install descript-audio-codec") from err
        model_path = dac.utils.download(model_type=model_type, model_bitrate=model_bitrate)
        self.model = dac.DAC.load(model_path)
        self.quantize_on_decode = quantize_on_decode
        self.downsampling_ratio = 512 if model_type == "44khz" else 320
        self.scale = scale
        self.chunked = chunked
        self.sample_rate = self.model.sample_rate
        self.encoded_channels = self.model.latent_dim
        self.num_quantizers = self.model.n_codebooks
        self.codebook_size = self.model.codebook_size

    def _quantize(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer(latents, n_quantizers=self.model.n_codebooks)[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model.encoder(x)
        if not self.quantize_on_decode:
            output = self._quantize(output)
        if self.scale != 1.0:
            output = output / self.scale
        return output

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            z = z * self.scale
        if self.quantize_on_decode:
            z = self._quantize(z)
        return self.model.decode(z)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)[1]

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        # from_codes returns (z_q, z_p, codes); upstream passed the whole tuple to decode (see
        # docs/compatibility.md#upstream-quirks).
        latents = self.model.quantizer.from_codes(tokens)[0]
        return self.model.decode(latents)


class AudiocraftCompressionPretransform(Pretransform):
    """An AudioCraft ``CompressionModel`` (e.g. EnCodec 32 kHz) run in float16 (needs ``pip install audiocraft``).

    Only the discrete interface works: ``tokenize`` -> codes ``[B, K, T]``, ``decode_tokens`` -> audio.
    """

    def __init__(self, model_type: str = "facebook/encodec_32khz", scale: float = 1.0,
                 quantize_on_decode: bool = True) -> None:
        super().__init__(enable_grad=False, io_channels=1, is_discrete=True)
        try:
            from audiocraft.models import CompressionModel
        except ImportError as err:
            raise ImportError("the 'audiocraft_pretrained' pretransform needs AudioCraft: "
                              "pip install audiocraft") from err
        self.model = CompressionModel.get_pretrained(model_type)
        self.quantize_on_decode = quantize_on_decode
        self.downsampling_ratio = round(self.model.sample_rate / self.model.frame_rate)
        self.sample_rate = self.model.sample_rate
        self.io_channels = self.model.channels
        self.scale = scale
        self.num_quantizers = self.model.num_codebooks
        self.codebook_size = self.model.cardinality
        self.model.to(torch.float16).eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("AudioCraft compression models do not support continuous encoding; "
                                  "use tokenize()")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("AudioCraft compression models do not support continuous decoding; "
                                  "use decode_tokens()")

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.model.encode(x.to(torch.float16))[0]

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return self.model.decode(tokens)
