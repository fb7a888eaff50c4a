"""General training callbacks used by train.py."""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Mapping

import pytorch_lightning as pl

__all__ = ["ExceptionCallback", "ModelConfigEmbedderCallback"]

log = logging.getLogger(__name__)


class ExceptionCallback(pl.Callback):
    """Logs the exception that stops training (type and message) before Lightning re-raises it."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        log.error("training stopped at step %d by %s: %s", trainer.global_step, type(exception).__name__, exception)


class ModelConfigEmbedderCallback(pl.Callback):
    """Stores the model config in every checkpoint under the top-level key ``model_config``."""

    def __init__(self, model_config: Mapping[str, Any]) -> None:
        self.model_config = copy.deepcopy(dict(model_config))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint["model_config"] = copy.deepcopy(self.model_config)
