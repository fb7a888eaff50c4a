"""Exponential moving average of a model's weights, state-dict compatible with ema-pytorch 0.2.3.

Keys: ``initted`` [1] (float), ``step`` [1] (int64), ``ema_model.*`` and, with ``include_online_model``
(the default, as upstream), ``online_model.*`` (the tracked model itself, so its weights appear twice in a
training checkpoint, exactly like upstream's). Unlike ema-pytorch, a model that cannot be deep-copied raises
a clear error instead of calling ``exit()``.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

__all__ = ["EMA"]

_EMA_DTYPES = (torch.float32, torch.float16)


class EMA(nn.Module):
    """Keeps ``ema_model`` as a moving average of ``model``.

    ``update()`` (call once per optimizer step): the step counter increments; only every ``update_every``
    calls does anything; up to ``update_after_step`` the weights are copied; afterwards
    ``ema <- lerp(ema, online, 1 - decay)`` with ``decay = clamp(1 - (1 + e / inv_gamma) ** -power,
    min_value, beta)`` and ``e = step - update_after_step - 1`` (decay 0 while ``e <= 0``).
    Only float32/float16 parameters and buffers are averaged.
    """

    def __init__(self, model: nn.Module, ema_model: Optional[nn.Module] = None, beta: float = 0.9999,
                 update_after_step: int = 100, update_every: int = 10, inv_gamma: float = 1.0,
                 power: float = 2 / 3, min_value: float = 0.0, include_online_model: bool = True) -> None:
        super().__init__()
        self.beta = beta
        self.update_after_step = update_after_step
        self.update_every = update_every
        self.inv_gamma = inv_gamma
        self.power = power
        self.min_value = min_value
        self.include_online_model = include_online_model
        if include_online_model:
            self.online_model = model
        else:
            self._online = [model]  # a list keeps it out of the module tree and the state dict
        if ema_model is None:
            try:
                ema_model = copy.deepcopy(model)
            except Exception as e:
                raise TypeError(f"cannot deep-copy {type(model).__name__} to create its EMA copy ({e}); pass "
                                f"ema_model= explicitly or make the model copyable (e.g. no legacy weight_norm "
                                f"hooks, no LazyLinear)") from e
        self.ema_model = ema_model
        self.ema_model.requires_grad_(False)
        self.register_buffer("initted", torch.Tensor([False]))
        self.register_buffer("step", torch.tensor([0]))

    @property
    def model(self) -> nn.Module:
        return self.online_model if self.include_online_model else self._online[0]

    def _pairs(self):
        online = dict(self.model.named_parameters())
        online.update(self.model.named_buffers())
        for name, ema_t in list(self.ema_model.named_parameters()) + list(self.ema_model.named_buffers()):
            src = online.get(name)
            if src is not None and ema_t.dtype in _EMA_DTYPES and src.dtype in _EMA_DTYPES:
                yield ema_t, src

    @torch.no_grad()
    def copy_params_from_model_to_ema(self) -> None:
        for ema_t, src in self._pairs():
            ema_t.copy_(src)

    def get_current_decay(self) -> float:
        epoch = max(self.step.item() - self.update_after_step - 1, 0.0)
        if epoch <= 0:
            return 0.0
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        return min(max(value, self.min_value), self.beta)

    @torch.no_grad()
    def update(self) -> None:
        step = self.step.item()
        self.step += 1
        if step % self.update_every != 0:
            return
        if step <= self.update_after_step:
            self.copy_params_from_model_to_ema()
            return
        if not self.initted.item():
            self.copy_params_from_model_to_ema()
            self.initted.fill_(True)
        weight = 1.0 - self.get_current_decay()
        pairs = list(self._pairs())
        if pairs:
            torch._foreach_lerp_([e for e, _ in pairs], [s.to(e.dtype) for e, s in pairs], weight)

    def forward(self, *args, **kwargs):
        return self.ema_model(*args, **kwargs)
