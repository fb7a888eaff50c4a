"""What every training family shares: batch splitting, latents and padding masks from a batch, one
``configure_optimizers`` body over named optimizer groups (``training.optimizer_configs``) and the losses a
bottleneck contributes (autoencoders and diffusion autoencoders).

Family modules (``autoencoders``, ``diffusion``, ``diffusion_cond``, ``arc``, ``lm``) import from here and never from
each other (see ``docs/architecture.md``).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..models.bottleneck import (DACRVQBottleneck, DACRVQVAEBottleneck, RVQBottleneck, RVQVAEBottleneck, VAEBottleneck,
                                 WassersteinBottleneck)
from .losses import ValueLoss
from .utils import create_optimizer_from_config, create_scheduler_from_config

__all__ = ["split_batch", "encode_to_latents", "padding_masks_from_metadata", "swapped_child", "adam_configs",
           "build_optimizers", "OptimizerGroupsMixin", "create_loss_modules_from_bottleneck"]

OPTIMIZER_CONFIGS_PATH = "training.optimizer_configs"


def split_batch(batch: Any) -> Tuple[torch.Tensor, Sequence[Dict[str, Any]]]:
    """``(audio_or_latents [B, C, L], metadata)`` of a collated batch; a leading WebDataset singleton dim is
    removed and a bare tensor gets empty metadata."""
    if isinstance(batch, (list, tuple)):
        reals = batch[0]
        metadata = batch[1] if len(batch) > 1 else ()
    else:
        reals, metadata = batch, ()
    if not isinstance(reals, torch.Tensor):
        raise TypeError(f"diffusion training batches must start with an audio/latent tensor, got "
                        f"{type(reals).__name__}")
    if reals.ndim == 4 and reals.shape[0] == 1:
        reals = reals[0]
    if reals.ndim != 3:
        raise ValueError(f"diffusion training expects [batch, channels, length] inputs, got shape "
                         f"{tuple(reals.shape)}")
    return reals, metadata


def encode_to_latents(model: nn.Module, reals: torch.Tensor, pre_encoded: bool) -> torch.Tensor:
    """What the diffusion model is trained on: ``model.pretransform.encode(reals)`` (with gradients only for a
    trainable pretransform), or for ``pre_encoded`` data the stored latents divided by the pretransform's
    ``scale`` (encode would have applied it); ``reals`` unchanged without a pretransform."""
    pretransform = getattr(model, "pretransform", None)
    if pretransform is None:
        return reals
    if pre_encoded:
        scale = getattr(pretransform, "scale", 1.0)
        return reals / scale if scale != 1.0 else reals
    trainable = bool(getattr(pretransform, "enable_grad", False))
    pretransform.train(trainable)
    with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
        return pretransform.encode(reals)


def padding_masks_from_metadata(metadata: Sequence[Dict[str, Any]], length: int, device: torch.device,
                                required: bool = False) -> torch.Tensor:
    """Boolean ``[B, length]`` masks (True = real data) from each item's ``padding_mask``.

    A mask is a tensor or list (pre-encoded datasets store lists), possibly wrapped in a 1-element list; it is
    nearest-resized to ``length`` (audio-rate masks become latent-rate masks). Items without a
    ``padding_mask`` count as all real unless ``required``, which raises a ValueError instead.
    """
    masks = []
    for index, info in enumerate(metadata):
        mask = info.get("padding_mask") if isinstance(info, dict) else None
        if mask is None:
            if required:
                raise ValueError(f"batch item {index} has no 'padding_mask' in its metadata, which "
                                 f"training.mask_padding needs; use a dataset that provides it (audio_dir and "
                                 f"pre_encoded do) or set mask_padding to false")
            masks.append(torch.ones(length))
            continue
        if isinstance(mask, (list, tuple)) and len(mask) == 1 and isinstance(mask[0], (torch.Tensor, list, tuple)):
            mask = mask[0]
        mask = torch.as_tensor(mask).float().flatten()
        if mask.shape[0] != length:
            mask = F.interpolate(mask[None, None], size=length, mode="nearest")[0, 0]
        masks.append(mask)
    return torch.stack(masks).to(device).bool()


@contextlib.contextmanager
def swapped_child(parent: nn.Module, name: str, replacement: Optional[nn.Module]) -> Iterator[nn.Module]:
    """Temporarily replace the child module ``parent.<name>`` by ``replacement`` (no-op when None)."""
    original = getattr(parent, name)
    if replacement is not None:
        setattr(parent, name, replacement)
    try:
        yield parent
    finally:
        setattr(parent, name, original)


def adam_configs(group: str, lr: float) -> Dict[str, Dict[str, Any]]:
    """``optimizer_configs`` of a single Adam group at learning rate ``lr`` (the wrappers that only take
    ``learning_rate``)."""
    return {group: {"optimizer": {"type": "Adam", "config": {"lr": lr}}}}


def build_optimizers(optimizer_configs: Mapping[str, Mapping[str, Any]],
                     groups: Sequence[Tuple[str, Iterable[torch.nn.Parameter]]],
                     path: str = OPTIMIZER_CONFIGS_PATH, fused_default: bool = False
                     ) -> Tuple[List[torch.optim.Optimizer], List[Dict[str, Any]], Dict[str, int]]:
    """One optimizer per ``(group name, parameters)`` from ``optimizer_configs[group]["optimizer"]``, plus a
    per-step scheduler for each group whose config has a ``scheduler``; ``fused_default``: see
    :func:`~stable_audio_tools.training.utils.create_optimizer_from_config`.

    Returns ``(optimizers, Lightning scheduler dicts, {group: index into the scheduler list})``; errors name
    ``<path>.<group>.optimizer`` / ``.scheduler``."""
    optimizers: List[torch.optim.Optimizer] = []
    schedulers: List[Dict[str, Any]] = []
    scheduler_index: Dict[str, int] = {}
    for group, parameters in groups:
        config = optimizer_configs[group]
        optimizer = create_optimizer_from_config(config["optimizer"], parameters, f"{path}.{group}.optimizer",
                                                 fused_default=fused_default)
        optimizers.append(optimizer)
        if "scheduler" in config:
            scheduler_index[group] = len(schedulers)
            schedulers.append({"scheduler": create_scheduler_from_config(config["scheduler"], optimizer,
                                                                         f"{path}.{group}.scheduler"),
                               "interval": "step"})
    return optimizers, schedulers, scheduler_index


class OptimizerGroupsMixin:
    """``configure_optimizers`` for a LightningModule with named optimizer groups.

    The module sets ``optimizer_configs`` (``{group: {"optimizer": ..., "scheduler"?: ...}}``) and implements
    :meth:`optimizer_groups`; :meth:`scheduler_for` returns a group's scheduler (for manual optimization).
    Put the mixin before ``pl.LightningModule`` in the bases.
    """

    optimizer_configs: Mapping[str, Mapping[str, Any]]

    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        """``[(group name, parameters), ...]`` in optimizer order."""
        raise NotImplementedError(f"{type(self).__name__} must define optimizer_groups()")

    def configure_optimizers(self) -> Union[List[torch.optim.Optimizer], Tuple[list, list]]:
        """The optimizers (and schedulers) of :meth:`optimizer_groups`; under ``bf16-mixed`` precision (fast mode)
        Adam / AdamW default to torch's fused kernels."""
        trainer = getattr(self, "_trainer", None)
        fast = str(getattr(trainer, "precision", "")) == "bf16-mixed"
        optimizers, schedulers, self._scheduler_index = build_optimizers(self.optimizer_configs,
                                                                         self.optimizer_groups(), fused_default=fast)
        return (optimizers, schedulers) if schedulers else optimizers

    def scheduler_for(self, group: str) -> Optional[Any]:
        """The scheduler of ``group`` (as ``lr_schedulers()`` returns it), or None when it has none."""
        index = getattr(self, "_scheduler_index", {}).get(group)
        if index is None:
            return None
        schedulers = self.lr_schedulers()
        return schedulers[index] if isinstance(schedulers, list) else schedulers


def create_loss_modules_from_bottleneck(bottleneck: nn.Module, loss_config: Mapping) -> List[nn.Module]:
    """The regularisation losses a bottleneck contributes (kl, quantizer, codebook/commitment, mmd)."""
    weights = (loss_config.get("bottleneck") or {}).get("weights", {})
    losses: List[nn.Module] = []
    if isinstance(bottleneck, (VAEBottleneck, DACRVQVAEBottleneck, RVQVAEBottleneck)):
        losses.append(ValueLoss(key="kl", weight=weights.get("kl", 1e-6), name="kl_loss"))
    if isinstance(bottleneck, (RVQBottleneck, RVQVAEBottleneck)):
        losses.append(ValueLoss(key="quantizer_loss", weight=1.0, name="quantizer_loss"))
    if isinstance(bottleneck, (DACRVQBottleneck, DACRVQVAEBottleneck)):
        losses.append(ValueLoss(key="vq/codebook_loss", weight=1.0, name="codebook_loss"))
        losses.append(ValueLoss(key="vq/commitment_loss", weight=0.25, name="commitment_loss"))
    if isinstance(bottleneck, WassersteinBottleneck):
        losses.append(ValueLoss(key="mmd", weight=weights.get("mmd", 100), name="mmd_loss"))
    return losses
