"""Stop (or skip) training steps whose loss or gradients are NaN or infinite, for every training wrapper.

:class:`NonFiniteGuard` is a Lightning callback. It works through hooks that Lightning calls for automatic and
manual optimization alike (``manual_backward`` and ``optimizer.step()`` in the autoencoder and ARC wrappers run
them too):

* ``on_before_backward``: the loss about to be backpropagated is checked;
* ``on_before_optimizer_step``: the gradients of the optimizer about to step are checked (after mixed-precision
  unscaling and before clipping). When the loss or the gradients are not finite, the gradients are dropped
  (set to ``None``), which makes every ``torch.optim`` optimizer leave those parameters and their state untouched:
  the update is skipped;
* ``on_train_batch_end``: the values the wrapper logged for this step (``train/loss``, ``train/mse_loss``, ...)
  are known; the guard reports which of them are non-finite with their last finite values, then either counts
  the step as skipped (``skip_steps`` > 0) or raises :class:`NonFiniteTrainingError`, which stops training.
  The guard runs before the checkpoint callback, so no checkpoint of a failed step is written.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch

from .export import NonFiniteError

__all__ = ["NonFiniteGuard", "NonFiniteTrainingError"]

log = logging.getLogger(__name__)

_MAX_LISTED = 5


class NonFiniteTrainingError(NonFiniteError):
    """Training stopped because the loss or the gradients became NaN or infinite."""


def _format(value: float) -> str:
    return f"{value:.6g}"


def _listed(names: List[str], total: Optional[int] = None) -> str:
    total = len(names) if total is None else total
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {total - _MAX_LISTED} more" if total > _MAX_LISTED else "")


class NonFiniteGuard(pl.Callback):
    """Detects NaN/inf losses and gradients; stops training at once or after ``skip_steps`` skipped steps.

    Args:
        skip_steps (int, default 0): how many training steps with non-finite values may be skipped (their optimizer
            updates are not applied) before training stops; 0 stops at the first one. Counted over the whole run.

    Gradients are not checked when a float16 ``GradScaler`` is active (``--precision 16-mixed`` on a GPU): it skips
    overflowing steps itself. With DeepSpeed the optimizer step cannot be skipped, so the first event stops the run.
    """

    def __init__(self, skip_steps: int = 0) -> None:
        if isinstance(skip_steps, bool) or not isinstance(skip_steps, int) or skip_steps < 0:
            raise ValueError(f"skip_steps must be an integer >= 0, got {skip_steps!r}")
        self.skip_steps = skip_steps
        self.skipped = 0
        self._check_grads = True
        self._can_skip = True
        self._loss_bad: Optional[torch.Tensor] = None
        self._stepped = False
        self._events: List[Dict[str, Any]] = []
        self._previous: Dict[str, torch.Tensor] = {}
        self._last_finite: Dict[str, Tuple[float, int]] = {}
        self._window_bad: Dict[str, float] = {}

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_grads = getattr(trainer.precision_plugin, "scaler", None) is None
        if not self._check_grads:
            log.info("non-finite check: gradients are left to the float16 GradScaler; the loss is still checked")
        self._can_skip = "deepspeed" not in type(trainer.strategy).__name__.lower()
        if self.skip_steps and not self._can_skip:
            log.warning("--nonfinite-skip-steps: DeepSpeed applies the optimizer step itself, so a non-finite step "
                        "cannot be skipped; training stops at the first one")

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else (self._loss_bad | bad)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._stepped = True
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        device = grads[0].device if grads else pl_module.device
        flags = torch.zeros(2, device=device)
        if self._loss_bad is not None:
            flags[0] = self._loss_bad.to(device).float()
        self._loss_bad = None
        if self._check_grads and grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=math.inf)
            flags[1] = (~torch.isfinite(norm)).float().to(device)
        if trainer.world_size > 1:  # the same decision on every device (losses differ between devices)
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
        loss_bad, grads_bad = (bool(v > 0) for v in flags.tolist())
        if not (loss_bad or grads_bad):
            return
        event: Dict[str, Any] = {"optimizer": self._optimizer_label(trainer, pl_module, optimizer), "loss": loss_bad,
                                 "grads": [], "n_grads": len(grads)}
        if grads_bad:
            names = {id(p): n for n, p in pl_module.named_parameters()}
            event["grads"] = [names.get(id(p), "?") for p in params
                              if p.grad is not None and not torch.isfinite(p.grad).all()]
        if self._can_skip:
            for p in params:
                p.grad = None
        self._events.append(event)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._record_logged_values(trainer, pl_module)
        if not self._stepped:  # accumulating gradients: the step is not over yet
            return
        events, window_bad = self._events, self._window_bad
        self._events, self._window_bad, self._stepped = [], {}, False
        if events:
            self._handle(trainer.global_step, events, window_bad, trainer.is_global_zero)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _optimizer_label(trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> str:
        optimizers = list(trainer.optimizers)
        index = next((i for i, o in enumerate(optimizers) if o is optimizer), None)
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        modules = sorted({n.split(".", 1)[0] for n, p in pl_module.named_parameters() if id(p) in owned})
        where = f"parameters of {', '.join(modules)}" if modules else "no named parameters"
        if index is None or len(optimizers) == 1:
            return f"optimizer ({where})"
        return f"optimizer {index} of {len(optimizers)} ({where})"

    def _record_logged_values(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Track the values logged during this batch: the last finite value of each, and the non-finite ones."""
        current = {k: v for k, v in trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor) and v.numel() == 1 and not k.startswith("val/")}
        # A value logged in this batch is a new tensor; one that was not logged again is a view of the same
        # storage as in the previous batch (which this dict still references, so its memory cannot be reused).
        fresh = {k: v for k, v in current.items() if k not in self._previous
                 or v.untyped_storage().data_ptr() != self._previous[k].untyped_storage().data_ptr()}
        self._previous = current
        if not fresh:
            return
        values = torch.stack([v.detach().float().reshape(()).to(pl_module.device) for v in fresh.values()]).tolist()
        for key, value in zip(fresh, values):
            if math.isfinite(value):
                self._last_finite[key] = (value, trainer.global_step)
            else:
                self._window_bad[key] = value

    def _describe_terms(self, window_bad: Dict[str, float]) -> str:
        parts = []
        for key in sorted(window_bad, key=lambda k: (not k.endswith("/loss"), k)):
            last = self._last_finite.get(key)
            before = f"last finite value {_format(last[0])} at step {last[1]}" if last else "never finite"
            parts.append(f"{key} = {window_bad[key]} ({before})")
        return "; ".join(parts)

    def _handle(self, step: int, events: List[Dict[str, Any]], window_bad: Dict[str, float],
                is_global_zero: bool = True) -> None:
        lines = []
        for event in events:
            what = " and ".join(w for w, on in (("loss", event["loss"]), ("gradients", bool(event["grads"]))) if on)
            line = f"non-finite {what} at training step {step}, {event['optimizer']}"
            if event["grads"]:
                line += (f"; NaN/inf gradients in {len(event['grads'])} of {event['n_grads']} parameters: "
                         f"{_listed(event['grads'])}")
            lines.append(line)
        if window_bad:
            lines.append(f"non-finite logged values: {self._describe_terms(window_bad)}")
        elif any(e["loss"] for e in events):
            lines.append("the loss returned by training_step is non-finite while every logged value is finite")
        else:
            finite = [f"{k} = {_format(v)}" for k, (v, s) in sorted(self._last_finite.items()) if s == step]
            lines.append("all logged loss terms were finite" + (f" ({_listed(finite)})" if finite else ""))
        report = ". ".join(lines)
        self.skipped += 1
        if self._can_skip and self.skipped <= self.skip_steps:
            if is_global_zero:
                log.warning("%s. Skipped this step's update (%d of at most %d, --nonfinite-skip-steps).", report,
                            self.skipped, self.skip_steps)
            return
        budget = (f"more than --nonfinite-skip-steps {self.skip_steps} steps had non-finite values"
                  if self.skip_steps else "--nonfinite-skip-steps is 0")
        raise NonFiniteTrainingError(
            f"{report}. Training stopped ({budget}); the failed update was not applied and no checkpoint of it is "
            f"written. Lower the learning rate, set --gradient-clip-val, check the data for NaN/inf audio, or allow "
            f"a few bad steps with --nonfinite-skip-steps N; resume from the last checkpoint with --ckpt-path.")
