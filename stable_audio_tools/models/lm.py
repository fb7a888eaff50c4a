"""Multi-codebook audio language model and the ``lm`` model type (see
docs/training.md#audio-language-models-model_type-lm, docs/inference.md).

* :class:`AudioLanguageModel` — per-codebook embeddings (``embeds.{q}``, ``codebook_size + 1``
  entries, the last one the special/masked token), a backbone (``backbone``) and per-codebook
  output heads (``quantizer_heads.{q}``); the codebook pattern interleaves codes ``[B, Q, T]``
  into the model's sequence and back (:meth:`AudioLanguageModel.compute_logits`).
* :class:`AudioLanguageModelWrapper` — what ``create_model_from_config`` returns for ``lm``:
  children ``pretransform`` (a frozen discrete autoencoder / codec), ``conditioner`` and ``lm``
  (keys ``lm.backbone.model.*``, ``lm.embeds.*``, ``lm.quantizer_heads.*``); it routes conditioner
  outputs (cross-attention, prepend, global), applies CFG dropout in training and CFG at inference,
  and generates codes / audio.

The ``lm`` builder is :func:`.builders.lm.create_audio_lm_from_config` (importable from here too).

Codes are always ``[B, num_quantizers, T]`` int64 here; the autoencoder pretransform's
``tokenize`` / ``decode_tokens`` convert bottlenecks whose tokens are ``[B, T, Q]`` (rvq,
dithered_fsq).

Differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelslm.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn
from tqdm.auto import trange

from ..allocator import tune_malloc
from ..audio import set_audio_channels
from .codebook_patterns import CodebooksPatternProvider
from .lm_backbone import AudioLMBackbone, ContinuousTransformerAudioLMBackbone, XTransformersAudioLMBackbone
from .sampling_utils import multinomial, sample_top_k, sample_top_p

__all__ = ["LMOutput", "AudioLanguageModel", "AudioLanguageModelWrapper", "create_audio_lm_from_config",
           "LM_BACKBONES"]


_BUILDERS = ('create_audio_lm_from_config',)


def __getattr__(name: str) -> Any:
    """Re-export the builder (it lives in :mod:`.builders.lm`) at upstream's path, lazily, so this module never
    imports a builder."""
    if name in _BUILDERS:
        from .builders import lm

        return getattr(lm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

log = logging.getLogger(__name__)

UNKNOWN_TOKEN = -1

LM_BACKBONES = {
    "continuous_transformer": ContinuousTransformerAudioLMBackbone,
    "x_transformers": XTransformersAudioLMBackbone,
    "x-transformers": XTransformersAudioLMBackbone,  # upstream's spelling
}


@dataclass
class LMOutput:
    """Logits re-aligned with the input codes (no extra shift needed for the cross-entropy)."""

    logits: torch.Tensor  # [B, Q, T, codebook_size], NaN where the pattern defines no prediction
    mask: torch.Tensor  # [B, Q, T] bool, True where logits are valid


class AudioLanguageModel(nn.Module):
    """Embeddings + backbone + output heads over a codebook pattern (see
    docs/training.md#audio-language-models-model_type-lm)."""

    def __init__(self, pattern_provider: CodebooksPatternProvider, backbone: AudioLMBackbone, num_quantizers: int,
                 codebook_size: int) -> None:
        super().__init__()
        if pattern_provider.n_q != num_quantizers:
            raise ValueError(f"the codebook pattern is for {pattern_provider.n_q} codebooks but the model has "
                             f"{num_quantizers}")
        self.pattern_provider = pattern_provider
        self.backbone = backbone
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.masked_token_id = codebook_size
        self.embeds = nn.ModuleList([nn.Embedding(codebook_size + 1, backbone.embed_dim)
                                     for _ in range(num_quantizers)])
        self.quantizer_heads = nn.ModuleList([nn.Linear(backbone.embed_dim, codebook_size)
                                              for _ in range(num_quantizers)])

    def forward(self, sequence: torch.Tensor, prepend_cond: Optional[torch.Tensor] = None,
                prepend_cond_mask: Optional[torch.Tensor] = None, cross_attn_cond: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        """Pattern sequence ``[B, Q, S]`` (ids ``0..codebook_size``) -> logits ``[B, Q, S, codebook_size]``.

        ``kwargs`` go to the backbone (``mask``, ``kv_cache``).
        """
        if sequence.dim() != 3 or sequence.shape[1] != self.num_quantizers:
            raise ValueError(f"expected a [batch, {self.num_quantizers}, steps] token sequence, got "
                             f"{list(sequence.shape)}")
        dtype = self.quantizer_heads[0].weight.dtype
        x = sum(self.embeds[q](sequence[:, q]) for q in range(self.num_quantizers)).to(dtype)
        cross_attn_cond = cross_attn_cond.to(dtype) if cross_attn_cond is not None else None
        prepend_cond = prepend_cond.to(dtype) if prepend_cond is not None else None
        global_cond = global_cond.to(dtype) if global_cond is not None else None
        out = self.backbone(x, cross_attn_cond=cross_attn_cond, prepend_cond=prepend_cond,
                            prepend_cond_mask=prepend_cond_mask, global_cond=global_cond, **kwargs)
        return torch.stack([head(out) for head in self.quantizer_heads], dim=1)

    def compute_logits(self, codes: torch.Tensor, **kwargs: Any) -> LMOutput:
        """Codes ``[B, Q, T]`` -> :class:`LMOutput` (logits ``[B, Q, T, K]``, mask ``[B, Q, T]``).

        Builds the pattern sequence (valid steps only, special token ``codebook_size``), runs the
        model and reverts the logits so that ``logits[:, q, t]`` predicts ``codes[:, q, t]``.
        """
        batch, _, length = codes.shape
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        pattern = self.pattern_provider.get_pattern(length)
        sequence, _, _ = pattern.build_pattern_sequence(codes.long(), self.masked_token_id, keep_only_valid_steps=True)
        logits = self(sequence, **kwargs).permute(0, 3, 1, 2)  # [B, K, Q, S]
        logits, _, mask = pattern.revert_pattern_logits(logits, float("nan"), keep_only_valid_steps=True)
        return LMOutput(logits=logits.permute(0, 2, 3, 1), mask=mask[None].expand(batch, -1, -1))


def _with_sequence_axis(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.dim() == 2 else t


class AudioLanguageModelWrapper(nn.Module):
    """Root of an ``lm`` model: pretransform, conditioner and LM (see
    docs/training.md#audio-language-models-model_type-lm, docs/inference.md#loading-a-model-get_pretrained_model)."""

    def __init__(self, pretransform: nn.Module, lm: AudioLanguageModel, sample_rate: int, min_input_length: int,
                 conditioner: Optional[nn.Module] = None, cross_attn_cond_ids: Sequence[str] = (),
                 prepend_cond_ids: Sequence[str] = (), global_cond_ids: Sequence[str] = ()) -> None:
        super().__init__()
        if not getattr(pretransform, "is_discrete", False):
            raise ValueError(f"the audio LM needs a discrete pretransform (codes), got {type(pretransform).__name__}")
        self.pretransform = pretransform
        self.pretransform.requires_grad_(False).eval()
        self.num_quantizers = int(pretransform.num_quantizers)
        self.codebook_size = int(pretransform.codebook_size)
        if (lm.num_quantizers, lm.codebook_size) != (self.num_quantizers, self.codebook_size):
            raise ValueError(f"the LM models {lm.num_quantizers} codebooks of {lm.codebook_size} but the pretransform "
                             f"has {self.num_quantizers} of {self.codebook_size}")
        self.conditioner = conditioner
        self.lm = lm
        self.sample_rate = sample_rate
        self.min_input_length = min_input_length
        self.cross_attn_cond_ids = list(cross_attn_cond_ids)
        self.prepend_cond_ids = list(prepend_cond_ids)
        self.global_cond_ids = list(global_cond_ids)

    def train(self, mode: bool = True) -> "AudioLanguageModelWrapper":
        """As ``nn.Module.train``, but the frozen pretransform stays in eval mode (no VQ codebook updates,
        no quantizer dropout while tokenizing training audio)."""
        super().train(mode)
        self.pretransform.eval()
        return self

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pretransform tokens in the bottleneck's own layout (e.g. pre-encoded with ``pre_encode.py
        --is-discrete``; ``[B, T, Q]`` for rvq / dithered_fsq) -> int64 codes ``[B, Q, T]``."""
        convert = getattr(self.pretransform, "tokens_to_codes", None)
        return convert(tokens) if convert is not None else tokens.long()

    # ------------------------------------------------------------------ conditioning
    def get_conditioning_inputs(self, cond: Mapping[str, Any], negative: bool = False) -> Dict[str, Any]:
        """Conditioner outputs -> ``cross_attn_cond`` (concatenated along the sequence), ``prepend_cond`` /
        ``prepend_cond_mask`` (sequence) and ``global_cond`` (features; a singleton sequence axis squeezed).
        ``negative=True`` prefixes the keys with ``negative_``."""
        cross = prepend = prepend_mask = global_cond = None
        if self.cross_attn_cond_ids:
            cross = torch.cat([_with_sequence_axis(cond[key][0]) for key in self.cross_attn_cond_ids], dim=1)
        if self.prepend_cond_ids:
            prepend = torch.cat([_with_sequence_axis(cond[key][0]) for key in self.prepend_cond_ids], dim=1)
            masks = [cond[key][1] for key in self.prepend_cond_ids]
            prepend_mask = torch.cat(masks, dim=1) if all(m is not None for m in masks) else None
        if self.global_cond_ids:
            global_cond = torch.cat([cond[key][0] for key in self.global_cond_ids], dim=-1)
            if global_cond.dim() == 3:
                global_cond = global_cond.squeeze(1)
        inputs = {"cross_attn_cond": cross, "prepend_cond": prepend, "prepend_cond_mask": prepend_mask,
                  "global_cond": global_cond}
        return {f"negative_{k}": v for k, v in inputs.items()} if negative else inputs

    def compute_logits(self, codes: torch.Tensor, condition_tensors: Optional[Mapping[str, Any]] = None,
                       cfg_dropout_prob: float = 0.0, **kwargs: Any) -> LMOutput:
        """Training forward: :meth:`AudioLanguageModel.compute_logits` with CFG dropout.

        With ``cfg_dropout_prob > 0`` each batch item's cross-attention, prepend and global
        conditioning are independently replaced by zeros with that probability.
        """
        inputs = self.get_conditioning_inputs(condition_tensors or {})
        if cfg_dropout_prob > 0.0:
            for key in ("cross_attn_cond", "prepend_cond", "global_cond"):
                value = inputs[key]
                if value is not None:
                    shape = (value.shape[0],) + (1,) * (value.dim() - 1)
                    drop = torch.bernoulli(torch.full(shape, cfg_dropout_prob, device=value.device)).to(torch.bool)
                    inputs[key] = torch.where(drop, torch.zeros_like(value), value)
        return self.lm.compute_logits(codes, **inputs, **kwargs)

    # ------------------------------------------------------------------ generation
    def _sample_next_token(self, sequence: torch.Tensor, inputs: Mapping[str, Any], cfg_scale: float,
                           use_cfg: Mapping[str, bool], top_k: int, top_p: float, temp: float,
                           generator: Optional[torch.Generator], kv_cache: Any = None) -> torch.Tensor:
        """Logits of the last step (CFG-combined) -> sampled tokens ``[B, Q, 1]``."""
        inputs = dict(inputs)
        guided = cfg_scale != 1.0 and any(inputs[k] is not None and use_cfg[k] for k in use_cfg)
        if guided:
            sequence = torch.cat([sequence, sequence], dim=0)
            for key, value in inputs.items():
                if value is None:
                    continue
                null = torch.zeros_like(value) if key in use_cfg and use_cfg[key] else value
                inputs[key] = torch.cat([value, null], dim=0)
        logits = self.lm(sequence, kv_cache=kv_cache, **inputs)[:, :, -1, :]  # [B, Q, K]
        if guided:
            cond_logits, uncond_logits = logits.chunk(2, dim=0)
            logits = uncond_logits + (cond_logits - uncond_logits) * cfg_scale
        if temp <= 0:
            return torch.argmax(logits, dim=-1, keepdim=True)
        probs = torch.softmax(logits.float() / temp, dim=-1)
        if top_p > 0.0:
            return sample_top_p(probs, p=top_p, generator=generator)
        if top_k > 0:
            return sample_top_k(probs, k=top_k, generator=generator)
        return multinomial(probs, num_samples=1, generator=generator)

    def _prompt_codes(self, init_data: Optional[torch.Tensor], init_audio: Optional[torch.Tensor],
                      device: torch.device) -> Optional[torch.Tensor]:
        if init_data is not None and init_audio is not None:
            raise ValueError("give either init_data (codes) or init_audio, not both")
        if init_audio is not None:
            audio = init_audio.to(device)
            audio = audio.reshape(1, 1, -1) if audio.dim() == 1 else audio[None] if audio.dim() == 2 else audio
            audio = set_audio_channels(audio.float(), self.pretransform.io_channels)
            init_data = self.pretransform.tokenize(audio)
        if init_data is None:
            return None
        if init_data.dim() != 3 or init_data.shape[1] != self.num_quantizers:
            raise ValueError(f"init_data must be codes [batch, {self.num_quantizers}, frames], got "
                             f"{list(init_data.shape)}")
        return init_data.to(device).long()

    @staticmethod
    def _batch_size(batch_size: Optional[int], init_data: Optional[torch.Tensor],
                    conditioning_tensors: Optional[Mapping[str, Any]]) -> int:
        sizes = {}
        if batch_size is not None:
            sizes["batch_size"] = int(batch_size)
        if init_data is not None:
            sizes["init data"] = init_data.shape[0]
        for key, value in (conditioning_tensors or {}).items():
            if value[0] is not None:
                sizes[f"conditioning '{key}'"] = value[0].shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inconsistent batch sizes: {sizes}")
        size = next(iter(sizes.values()), 1)
        if size <= 0:
            raise ValueError(f"batch size must be positive, got {size}")
        return size

    @torch.no_grad()
    def generate(self, max_gen_len: int = 256, batch_size: Optional[int] = None,
                 init_data: Optional[torch.Tensor] = None, conditioning: Optional[List[Dict[str, Any]]] = None,
                 conditioning_tensors: Optional[Mapping[str, Any]] = None,
                 callback: Optional[Callable[[int, int], None]] = None, use_cache: bool = True,
                 cfg_scale: float = 1.0, top_k: int = 250, top_p: float = 0.0, temp: float = 1.0,
                 cross_attn_use_cfg: bool = True, prepend_use_cfg: bool = True, global_use_cfg: bool = True,
                 init_audio: Optional[torch.Tensor] = None, seed: int = -1,
                 disable_tqdm: bool = False) -> torch.Tensor:
        """Generate codes ``[B, Q, max_gen_len]`` (see docs/inference.md).

        Args:
            max_gen_len: length in code frames (``audio samples / pretransform.downsampling_ratio``).
            batch_size: defaults to the batch of ``init_data`` / the conditioning, else 1.
            init_data: prompt codes ``[B, Q, T0]`` (``T0 < max_gen_len``) kept verbatim in the output.
            conditioning: a list of metadata dicts for the conditioner (or ``conditioning_tensors``,
                the conditioner's output, directly).
            callback: called as ``callback(step, total_steps)`` after each step.
            use_cache: incremental decoding with a KV cache when the backbone supports it.
            cfg_scale: classifier-free guidance (null branch: zeroed conditioning of the kinds whose
                ``*_use_cfg`` flag is set), batched with the conditional branch.
            top_k, top_p, temp: ``temp <= 0`` is greedy (argmax); else softmax(logits / temp) then
                nucleus sampling if ``top_p > 0``, else top-k if ``top_k > 0``, else the full distribution.
            init_audio: a prompt as audio ``[B, C, N]`` (tokenized with the pretransform) instead of ``init_data``.
            seed: seeds the sampling generator; ``-1`` draws one from torch's global RNG (logged).
            disable_tqdm: hide the progress bar.
        """
        tune_malloc()
        device = next(self.lm.parameters()).device
        if conditioning_tensors is None and conditioning is not None:
            if self.conditioner is None:
                raise ValueError("conditioning was given but this model has no conditioner")
            conditioning_tensors = self.conditioner(conditioning, device)
        init_data = self._prompt_codes(init_data, init_audio, device)
        batch_size = self._batch_size(batch_size, init_data, conditioning_tensors)
        start = 0 if init_data is None else init_data.shape[-1]
        if start >= max_gen_len:
            raise ValueError(f"the prompt has {start} frames; max_gen_len ({max_gen_len}) must be longer")

        if seed == -1:
            seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
            log.info("LM generation seed: %d", seed)
        generator = torch.Generator(device=device).manual_seed(int(seed))

        pattern = self.lm.pattern_provider.get_pattern(max_gen_len)
        codes = torch.full((batch_size, self.num_quantizers, max_gen_len), UNKNOWN_TOKEN, device=device,
                           dtype=torch.long)
        if init_data is not None:
            codes[..., :start] = init_data
        sequence, _, valid = pattern.build_pattern_sequence(codes, self.lm.masked_token_id)
        first_step = pattern.get_first_step_with_timesteps(start)
        if first_step is None:
            raise ValueError(f"the codebook pattern has no step for timestep {start}")

        inputs = self.get_conditioning_inputs(conditioning_tensors or {})
        use_cfg = {"cross_attn_cond": cross_attn_use_cfg, "prepend_cond": prepend_use_cfg,
                   "global_cond": global_use_cfg}
        kv_cache = self.lm.backbone.init_kv_cache() if use_cache else None
        total = sequence.shape[-1]
        fed = 0
        for step in trange(first_step, total, disable=disable_tqdm):
            next_token = self._sample_next_token(sequence[..., fed:step], inputs, cfg_scale, use_cfg, top_k, top_p,
                                                 temp, generator, kv_cache)
            next_token[~valid[..., step:step + 1].expand(batch_size, -1, -1)] = self.lm.masked_token_id
            current = sequence[..., step:step + 1]
            sequence[..., step:step + 1] = torch.where(current == UNKNOWN_TOKEN, next_token, current)
            if kv_cache is not None:
                fed = step
            if callback is not None:
                callback(1 + step - first_step, total - first_step)

        if bool((sequence == UNKNOWN_TOKEN).any()):
            raise RuntimeError("generation left unknown tokens in the sequence (inconsistent codebook pattern)")
        out, _, _ = pattern.revert_pattern_sequence(sequence, special_token=UNKNOWN_TOKEN)
        if bool((out[..., :max_gen_len] == UNKNOWN_TOKEN).any()):
            raise RuntimeError("the reverted codes contain unknown tokens (inconsistent codebook pattern)")
        return out[..., :max_gen_len]

    @torch.no_grad()
    def generate_audio(self, **kwargs: Any) -> torch.Tensor:
        """:meth:`generate` then ``pretransform.decode_tokens`` -> audio ``[B, io_channels, N]``."""
        return self.pretransform.decode_tokens(self.generate(**kwargs))
