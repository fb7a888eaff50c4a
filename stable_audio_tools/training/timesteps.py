"""Training-time noise levels and diffusion objectives (see docs/diffusion.md#training,
docs/diffusion.md#diffusion_cond--diffusion_cond_inpaint-training, docs/diffusion.md#arc-post-training-trainingarc).

``TimestepSampler`` draws the per-item diffusion time ``t`` in [0, 1]; ``noise_inputs`` mixes clean data and
noise at ``t`` and returns the regression target of the model's objective.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Union

import torch

from ..config import ConfigError, check_choice, require_mapping, warn_unknown_keys
from ..samplers import get_alphas_sigmas, sample_timesteps_logsnr, truncated_logistic_normal_rescaled

__all__ = [
    "TIMESTEP_SAMPLERS",
    "ARC_NOISE_DISTS",
    "DIFFUSION_OBJECTIVES",
    "TimestepSampler",
    "NoisedInputs",
    "alphas_sigmas",
    "noise_inputs",
]

TIMESTEP_SAMPLERS = ("uniform", "logit_normal", "trunc_logit_normal", "log_snr")
"""Accepted ``training.timestep_sampler`` values of the diffusion_cond wrapper."""

ARC_NOISE_DISTS = ("uniform", "logit_normal", "trunc_logit_normal", "one_shot", "denoised", "logsnr_uniform")
"""Accepted ``training.arc.noise_dist.{generator,discriminator}`` values."""

DIFFUSION_OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")

_OPTIONS = {"log_snr": {"mean_logsnr": -1.2, "std_logsnr": 2.0}}


class TimestepSampler:
    """Draws training timesteps ``t`` of shape ``[batch]`` (float32, in [0, 1]).

    Kinds:

    * ``uniform``: a scrambled 1-D Sobol sequence (low-discrepancy uniform), as upstream;
    * ``logit_normal``: ``sigmoid(N(0, 1))``;
    * ``trunc_logit_normal``: ``1 - truncated_logistic_normal_rescaled`` (mass pushed towards high noise);
    * ``log_snr``: ``sigmoid(-(N(0,1) * std_logsnr + mean_logsnr))`` clamped to ``[1e-4, 1 - 1e-4]``
      (options ``mean_logsnr`` -1.2, ``std_logsnr`` 2.0);
    * ``one_shot`` (t = 1), ``denoised`` (t = 0) and ``logsnr_uniform`` (``sigmoid(-U(-6, 2))``), used by ARC.

    Args:
        kind: one of the kinds above.
        options: extra options (only ``log_snr`` takes any).
        path: config path used in error messages.
    """

    def __init__(self, kind: str = "uniform", options: Optional[Mapping[str, Any]] = None,
                 path: str = "training.timestep_sampler") -> None:
        check_choice(kind, TIMESTEP_SAMPLERS + ARC_NOISE_DISTS[3:], path)
        self.kind = kind
        options = dict(require_mapping(options or {}, f"{path}_options"))
        defaults = _OPTIONS.get(kind, {})
        warn_unknown_keys(options, defaults, f"{path}_options")
        self.options = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
        for key, value in self.options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}_options.{key}", f"expected a number, got {value!r}")
        self.sobol = torch.quasirandom.SobolEngine(1, scramble=True) if kind == "uniform" else None

    def __call__(self, batch_size: int, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
        return self.sample(batch_size, device)

    def sample(self, batch_size: int, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
        """``batch_size`` timesteps on ``device``."""
        kind = self.kind
        if kind == "uniform":
            t = self.sobol.draw(batch_size)[:, 0].float()
        elif kind == "logit_normal":
            t = torch.sigmoid(torch.randn(batch_size))
        elif kind == "trunc_logit_normal":
            t = 1 - truncated_logistic_normal_rescaled(batch_size)
        elif kind == "log_snr":
            t = sample_timesteps_logsnr(batch_size, mean_logsnr=self.options["mean_logsnr"],
                                        std_logsnr=self.options["std_logsnr"])
        elif kind == "one_shot":
            t = torch.ones(batch_size)
        elif kind == "denoised":
            t = torch.zeros(batch_size)
        else:  # logsnr_uniform
            t = torch.sigmoid(-(torch.rand(batch_size) * 8.0 - 6.0))
        return t.to(device=device, dtype=torch.float32)


class NoisedInputs(NamedTuple):
    """``noised = alphas * x0 + sigmas * noise``; ``targets`` is what the model regresses."""

    noised: torch.Tensor
    targets: torch.Tensor
    alphas: torch.Tensor
    sigmas: torch.Tensor
    noise: torch.Tensor


def alphas_sigmas(t: torch.Tensor, objective: str) -> "tuple[torch.Tensor, torch.Tensor]":
    """Signal and noise scales at ``t``: ``(cos(πt/2), sin(πt/2))`` for ``v``, ``(1 - t, t)`` for the RF ones."""
    if objective == "v":
        return get_alphas_sigmas(t)
    if objective in ("rectified_flow", "rf_denoiser"):
        return 1 - t, t
    raise ValueError(f"unknown diffusion objective {objective!r}; accepted: {', '.join(DIFFUSION_OBJECTIVES)}")


def noise_inputs(x0: torch.Tensor, t: torch.Tensor, objective: str,
                 noise: Optional[torch.Tensor] = None) -> NoisedInputs:
    """Noise ``x0 [B, C, L]`` to per-item times ``t [B]`` and compute the target (see docs/diffusion.md#training).

    ``v``: ``x_t = α x0 + σ ε``, target ``α ε − σ x0``; ``rectified_flow`` / ``rf_denoiser``:
    ``x_t = (1 − t) x0 + t ε``, target ``ε − x0``.
    """
    alphas, sigmas = alphas_sigmas(t, objective)
    alphas, sigmas = alphas[:, None, None], sigmas[:, None, None]
    if noise is None:
        noise = torch.randn_like(x0)
    noised = x0 * alphas + noise * sigmas
    targets = noise * alphas - x0 * sigmas if objective == "v" else noise - x0
    return NoisedInputs(noised, targets, alphas, sigmas, noise)
