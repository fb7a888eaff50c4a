"""Lightning training wrapper for ``lm`` models (multi-codebook audio language models, see
docs/training.md#audio-language-models-model_type-lm).

The LM learns to predict the discrete tokens of its (frozen) pretransform: for every codebook, a masked
cross-entropy between the pattern-reverted logits and the codes, averaged over the codebooks.

Differences from upstream: see docs/compatibility.md#stable_audio_toolstraininglm.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_bool, get_number, resolve_learning_rate, warn_unknown_keys
from .common import OptimizerGroupsMixin, padding_masks_from_metadata, split_batch
from .ema import EMA
from .export import save_unwrapped
from .lm_demos import AudioLanguageModelDemoCallback

__all__ = [
    "AudioLanguageModelTrainingWrapper",
    "codebook_cross_entropy",
    "tokens_to_codes",
    "create_lm_training_wrapper",
    "LM_TRAINING_KEYS",
    "AudioLanguageModelDemoCallback",  # defined in .lm_demos, importable from here as from upstream's training/lm.py
]

LM_TRAINING_KEYS = ("learning_rate", "optimizer_configs", "use_ema", "pre_encoded", "cfg_dropout_prob", "demo",
                    "validation_metrics")


def codebook_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           mask: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Cross-entropy per codebook over the valid positions, and its mean over the codebooks.

    Args:
        logits: ``[B, Q, T, K]`` (NaN where the pattern has no prediction is fine: those positions are masked).
        targets: codes ``[B, Q, T]``.
        mask: boolean ``[B, Q, T]``, True where a target counts.

    Returns:
        ``(mean cross-entropy, [per-codebook cross-entropy (detached)])``. A codebook without any valid
        target gets NaN in the list and is left out of the mean.

    Raises:
        ValueError: on mismatched shapes, or when no position at all is valid.
    """
    if logits.shape[:-1] != targets.shape or mask.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, Q, T, K] and mask {tuple(mask.shape)} "
                         f"[B, Q, T] for codes {tuple(targets.shape)}")
    if not bool(mask.any()):
        raise ValueError("no valid target position (the pattern and padding masks exclude everything)")
    total = logits.new_zeros((), dtype=torch.float32)
    counted = 0
    per_codebook: List[torch.Tensor] = []
    for q in range(targets.shape[1]):
        mask_q = mask[:, q].reshape(-1)
        if not bool(mask_q.any()):
            per_codebook.append(torch.full((), float("nan"), device=logits.device))
            continue
        logits_q = logits[:, q].reshape(-1, logits.shape[-1])[mask_q].float()
        ce_q = F.cross_entropy(logits_q, targets[:, q].reshape(-1)[mask_q].long())
        total = total + ce_q
        counted += 1
        per_codebook.append(ce_q.detach())
    return total / counted, per_codebook


def tokens_to_codes(tokens: torch.Tensor, model: nn.Module, pre_encoded: bool = False) -> torch.Tensor:
    """Long codes ``[B, Q, T]`` for ``model`` (an ``AudioLanguageModelWrapper``).

    ``pre_encoded`` tokens (``pre_encode.py --is-discrete``) may be in the bottleneck's own layout, which is
    ``[B, T, Q]`` for ``rvq`` / ``rvq_vae`` / ``dithered_fsq``: unless axis 1 already holds the codebooks they
    go through the pretransform's ``tokens_to_codes`` when it has one. Tokens from ``pretransform.tokenize``
    are already ``[B, Q, T]``.

    Raises:
        ValueError: floating-point tokens, or no axis of ``model.num_quantizers`` codebooks.
    """
    if tokens.is_floating_point():
        raise ValueError("the LM trains on integer token codes, got a floating-point tensor; pre-encode the "
                         "dataset with `pre_encode.py --is-discrete` (or set training.pre_encoded to false to "
                         "tokenize audio on the fly)")
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens [batch, codebooks, frames], got shape {tuple(tokens.shape)}")
    convert = getattr(model.pretransform, "tokens_to_codes", None)
    if pre_encoded and convert is not None and tokens.shape[1] != model.num_quantizers:
        tokens = convert(tokens)
    if tokens.shape[1] != model.num_quantizers:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not have the model's {model.num_quantizers} "
                         f"codebooks on axis 1; were they encoded with this model's pretransform?")
    return tokens.long().contiguous()


class AudioLanguageModelTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Trains an ``AudioLanguageModelWrapper`` (pretransform frozen).

    Attributes (state-dict prefixes): ``model`` and, with ``use_ema``, ``model_ema`` (ema-pytorch-compatible
    EMA of the whole ``model``, online model included: beta 0.99, update every 10 optimizer steps, after step
    100, power 2/3).

    Step: codes = ``pretransform.tokenize(audio)`` (or the pre-encoded tokens) -> padding masks resized
    (nearest) to the code length -> conditioner outputs -> ``model.compute_logits(codes, condition_tensors,
    cfg_dropout_prob)`` -> loss = mean over codebooks of the cross-entropy over positions valid in both the
    pattern mask and the padding mask. Logs ``train/loss``, ``train/cross_entropy``, ``train/perplexity``,
    ``train/lr`` and ``cross_entropy_q{k}`` / ``perplexity_q{k}`` (k from 1).

    Args:
        model: the LM (``AudioLanguageModelWrapper``).
        lr: AdamW learning rate (betas (0.9, 0.95), weight decay 0.1), used when ``optimizer_configs`` is None.
        use_ema: keep an EMA copy of the model.
        ema_copy: module to hold the EMA weights (default: a deep copy of ``model``).
        optimizer_configs: ``{"lm": {"optimizer": ..., "scheduler"?: ...}}``.
        pre_encoded: batches hold tokens from ``pre_encode.py --is-discrete`` instead of audio.
        cfg_dropout_prob: per-item probability of zeroing the conditioning (classifier-free guidance).
    """

    def __init__(self, model: nn.Module, lr: Optional[float] = 1e-4, use_ema: bool = False,
                 ema_copy: Optional[nn.Module] = None, optimizer_configs: Optional[Mapping[str, Any]] = None,
                 pre_encoded: bool = False, cfg_dropout_prob: float = 0.1) -> None:
        super().__init__()
        if lr is None and optimizer_configs is None:
            raise ValueError("AudioLanguageModelTrainingWrapper needs lr or optimizer_configs "
                             "(training.learning_rate or training.optimizer_configs)")
        if not 0.0 <= cfg_dropout_prob <= 1.0:
            raise ValueError(f"cfg_dropout_prob must be in [0, 1], got {cfg_dropout_prob}")
        self.model = model
        self.model.pretransform.requires_grad_(False)
        self.model_ema = EMA(self.model, ema_model=ema_copy, beta=0.99, update_every=10) if use_ema else None
        if optimizer_configs is None:
            optimizer_configs = {"lm": {"optimizer": {"type": "AdamW", "config": {
                "lr": lr, "betas": (0.9, 0.95), "weight_decay": 0.1}}}}
        self.optimizer_configs = optimizer_configs
        self.pre_encoded = pre_encoded
        self.cfg_dropout_prob = cfg_dropout_prob

    # ------------------------------------------------------------------ optimizers
    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("lm", self.model.parameters())]

    # ------------------------------------------------------------------ shared pieces
    def codes_from_batch(self, reals: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, Q, T]`` of a batch: the pre-encoded tokens, or the frozen pretransform's tokens."""
        if self.pre_encoded:
            return tokens_to_codes(reals, self.model, pre_encoded=True)
        pretransform = self.model.pretransform
        pretransform.eval()
        with torch.no_grad():
            return tokens_to_codes(pretransform.tokenize(reals), self.model)

    def _loss(self, batch: Any, cfg_dropout_prob: float) -> Optional[Tuple[torch.Tensor, List[torch.Tensor], int]]:
        reals, metadata = split_batch(batch)
        codes = self.codes_from_batch(reals)
        padding = padding_masks_from_metadata(metadata, codes.shape[-1], self.device) if metadata else None
        conditioner = self.model.conditioner
        condition_tensors = conditioner(list(metadata), self.device) if conditioner is not None else None
        output = self.model.compute_logits(codes, condition_tensors=condition_tensors,
                                           cfg_dropout_prob=cfg_dropout_prob)
        mask = output.mask.to(self.device).bool()
        if padding is not None:
            mask = mask & padding[:, None, :]
        if not bool(mask.any()):
            warnings.warn("skipping an LM batch with no valid target (all padding, or sequences shorter than "
                          "the codebook pattern's delay)", RuntimeWarning, stacklevel=2)
            return None
        loss, per_codebook = codebook_cross_entropy(output.logits, codes, mask)
        return loss, per_codebook, codes.shape[0]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        result = self._loss(batch, self.cfg_dropout_prob)
        if result is None:
            return None
        loss, per_codebook, batch_size = result
        log_dict: Dict[str, Any] = {
            "train/loss": loss.detach(),
            "train/cross_entropy": loss.detach(),
            "train/perplexity": torch.exp(loss.detach()),
            "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
        }
        for k, ce in enumerate(per_codebook, start=1):
            log_dict[f"cross_entropy_q{k}"] = ce
            log_dict[f"perplexity_q{k}"] = torch.exp(ce)
        self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=batch_size)
        return loss

    def on_before_zero_grad(self, *args: Any, **kwargs: Any) -> None:
        if self.model_ema is not None:
            self.model_ema.update()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            result = self._loss(batch, 0.0)
        if result is None:
            return
        loss, _, batch_size = result
        self.log_dict({"val/cross_entropy": loss, "val/perplexity": torch.exp(loss)}, on_epoch=True,
                      batch_size=batch_size, sync_dist=True)

    # ------------------------------------------------------------------ export
    def export_model(self, path: str, use_safetensors: bool = False) -> None:
        """Save the bare LM (the EMA copy when there is one): keys ``pretransform.*``, ``lm.*``,
        ``conditioner.*``."""
        model = self.model_ema.ema_model if self.model_ema is not None else self.model
        save_unwrapped(model, path, use_safetensors)


def create_lm_training_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                               **overrides: Any) -> pl.LightningModule:
    """``AudioLanguageModelTrainingWrapper`` from ``model_config["training"]`` (see
    docs/training.md#audio-language-models-model_type-lm): ``learning_rate``
    or ``optimizer_configs`` (group ``lm``; wins with a warning when both are set), ``use_ema`` (false),
    ``pre_encoded`` (false), ``cfg_dropout_prob`` (0.1). ``overrides`` go to the wrapper."""
    warn_unknown_keys(training, LM_TRAINING_KEYS, "training")
    lr, optimizer_configs = resolve_learning_rate(training, ("lm",))
    params: Dict[str, Any] = dict(
        lr=lr,
        use_ema=get_bool(training, "use_ema", False, "training"),
        optimizer_configs=optimizer_configs,
        pre_encoded=get_bool(training, "pre_encoded", False, "training"),
        cfg_dropout_prob=get_number(training, "cfg_dropout_prob", 0.1, "training", low=0.0, high=1.0),
    )
    params.update(overrides)
    return AudioLanguageModelTrainingWrapper(model, **params)
