"""General training callbacks used by train.py."""
from __future__ import annotations

import copy
import logging
import signal
import threading
from typing import Any, Dict, Mapping, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .export import NonFiniteError

__all__ = ["ExceptionCallback", "ModelConfigEmbedderCallback", "RunCheckpoint"]

log = logging.getLogger(__name__)


class ExceptionCallback(pl.Callback):
    """Logs the exception that stops training (type and message) before Lightning re-raises it; SIGTERM/SIGINT
    stops and NaN/inf errors, whose messages are complete reports, are left to the caller."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, NonFiniteError)):
            return  # a requested stop (reported by RunCheckpoint) / a complete report of its own
        log.error("training stopped at step %d by %s: %s", trainer.global_step, type(exception).__name__, exception)


class ModelConfigEmbedderCallback(pl.Callback):
    """Stores the model config in every checkpoint under the top-level key ``model_config``."""

    def __init__(self, model_config: Mapping[str, Any]) -> None:
        self.model_config = copy.deepcopy(dict(model_config))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint["model_config"] = copy.deepcopy(self.model_config)


class RunCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` that also writes a checkpoint when training ends and when it is told to stop.

    Besides the periodic checkpoints (``every_n_train_steps``), a checkpoint of the last step is written

    * when training ends normally (``max_steps`` reached), unless that step was just saved;
    * on SIGTERM (SLURM preemption, ``kill``) and on the first Ctrl+C / SIGINT: training finishes the current step,
      saves it and stops; :attr:`stop_signal` then names the signal (``train.py`` exits non-zero). A second
      Ctrl+C stops at once, without a checkpoint.

    Other errors write no checkpoint (their state may be half-updated). All saves go through the Trainer's
    checkpoint IO (atomic, refuses NaN/inf weights) and respect ``save_top_k``. Takes ModelCheckpoint's arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_signal: Optional[str] = None
        self.final_checkpoint: Optional[str] = None
        self._previous_sigint: Any = None
        self._is_global_zero = True

    # ------------------------------------------------------------------ signals
    def _install_sigint(self, trainer: pl.Trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._is_global_zero = trainer.is_global_zero
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:
            if self._is_global_zero:  # other ranks also get the signal forwarded by rank 0: ignore repeats there
                raise KeyboardInterrupt
            return
        self.stop_signal = "SIGINT"
        log.warning("received SIGINT: finishing the current step, then writing a checkpoint and stopping "
                    "(press Ctrl+C again to stop at once without a checkpoint)")
        # Lightning's SIGTERM handler stops the loop after the current step, in step on every device
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._install_sigint(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()
        super().on_train_end(trainer, pl_module)
        self._save_final(trainer, "training finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException):
            self.stop_signal = self.stop_signal or "SIGTERM"
            self._save_final(trainer, f"stopped by {self.stop_signal}")

    def _save_final(self, trainer: pl.Trainer, reason: str) -> None:
        if trainer.global_step == 0 or self.save_top_k == 0 or trainer.sanity_checking:
            return
        if self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            # with save_last (train.py --monitor) a monitored top-k may skip this step; last.ckpt never does
            self._save_last_checkpoint(trainer, candidates)
        if self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            self.final_checkpoint = self._last_checkpoint_saved
            if trainer.is_global_zero:
                log.info("%s at step %d; checkpoint: %s", reason, trainer.global_step, self.final_checkpoint)
