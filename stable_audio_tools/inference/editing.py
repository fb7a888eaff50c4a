"""Editing existing audio during sampling: known-region replacement (continuation / inpainting with plain models)
and deterministic ODE inversion (audio-to-audio that keeps the input's structure).

Both work on the backbone function ``model_fn(x, t, **kwargs)`` that the samplers call (v-prediction for the
``"v"`` objective, flow velocity for rectified flow), so every sampler of :mod:`.sampling` can use them unchanged:

* :class:`KnownRegionModel` wraps ``model_fn``. At each call (time ``t``) the known latent frames of the input are
  replaced by the known latents re-noised to ``t`` (RePaint, Lugmayr et al. 2022, with one fixed noise draw), and
  the prediction there is replaced by the one whose clean estimate is exactly the known latents. The sampler thus
  keeps the known frames on their noisy trajectory while the model sees them as context for the rest.
* :func:`invert_to_start` integrates the probability-flow ODE (v-objective, as DDIM inversion) or the flow ODE
  (rectified flow) backwards, from clean latents up to the sampler's start time, along the reverse of the time grid
  the sampler will use, and returns the ``(init, noise)`` pair that makes the sampler start exactly there.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from ..samplers.flow_samplers import get_alphas_sigmas, linear_time_schedule
from ..samplers.k_samplers import get_sigmas_polyexponential
from ..samplers.registry import rf_logsnr_schedule

__all__ = ["KnownRegionModel", "latent_keep_mask", "inversion_times", "invert_to_start", "INIT_MODES",
           "RF_OBJECTIVES", "SAMPLER_KEYS"]

INIT_MODES = ("noise", "invert")
# sampler keywords of sample_k / sample_rf; every other keyword is passed on to the model
SAMPLER_KEYS = ("sampler_type", "sigma_min", "sigma_max", "rho", "callback", "cond_fn", "disable_tqdm", "device",
                "dist_shift")
RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")
ModelFn = Callable[..., torch.Tensor]


def _coefficients(t: torch.Tensor, objective: str, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-item ``(alpha, sigma)`` of ``x_t = alpha x0 + sigma eps``, shaped to broadcast over ``x``."""
    t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if objective in RF_OBJECTIVES:
        alpha, sigma = 1 - t, t
    else:
        alpha, sigma = get_alphas_sigmas(t)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return alpha.view(shape).to(x.dtype), sigma.view(shape).to(x.dtype)


def latent_keep_mask(keep: torch.Tensor, latent_length: int) -> torch.Tensor:
    """Audio-rate keep mask ``[samples]`` or ``[B, samples]`` (1 = known) -> latent mask ``[B or 1, 1, frames]``.

    A latent frame is known only when every audio sample it covers is kept (the samples are cut into
    ``latent_length`` equal runs; a shorter mask counts as generated beyond its end)."""
    keep = keep.float()
    if keep.dim() == 1:
        keep = keep.unsqueeze(0)
    ratio = max(1, math.ceil(keep.shape[-1] / latent_length))
    total = ratio * latent_length
    if keep.shape[-1] < total:
        keep = torch.nn.functional.pad(keep, (0, total - keep.shape[-1]))
    frames = keep[..., :total].reshape(keep.shape[0], latent_length, ratio).amin(-1)
    return (frames > 0.5).float().unsqueeze(1)


class KnownRegionModel:
    """``model_fn`` with known latent frames imposed (RePaint-style known-region replacement).

    Args:
        model_fn (callable): the backbone, ``model_fn(x, t, **kwargs)`` -> v (``"v"``) or velocity (rectified flow).
        known (torch.Tensor): clean latents ``[B, C, L]`` whose frames with ``mask == 1`` are kept.
        mask (torch.Tensor): ``[B or 1, 1, L]``, 1 = known, 0 = generate.
        objective (str): ``"v"``, ``"rectified_flow"`` or ``"rf_denoiser"``.
        noise (torch.Tensor): fixed standard-normal noise ``[B, C, L]`` used to re-noise the known frames.
    """

    def __init__(self, model_fn: ModelFn, known: torch.Tensor, mask: torch.Tensor, objective: str,
                 noise: torch.Tensor) -> None:
        if known.shape != noise.shape:
            raise ValueError(f"known latents {tuple(known.shape)} and noise {tuple(noise.shape)} differ in shape")
        if mask.shape[-1] != known.shape[-1]:
            raise ValueError(f"known-region mask has {mask.shape[-1]} frames, the latents {known.shape[-1]}")
        self.model_fn = model_fn
        self.known = known
        self.mask = mask.to(known.dtype)
        self.objective = objective
        self.noise = noise

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any:
        alpha, sigma = _coefficients(t, self.objective, x)
        known, noise, mask = self.known.to(x.dtype), self.noise.to(x.dtype), self.mask.to(x.dtype)
        renoised = alpha * known + sigma * noise
        out = self.model_fn(x * (1 - mask) + renoised * mask, t, **kwargs)
        info = None
        if isinstance(out, tuple):  # return_info=True (v-ddim-cfgpp)
            out, info = out
        sigma = sigma.clamp_min(1e-6)
        if self.objective in RF_OBJECTIVES:
            exact = (x - known) / sigma            # velocity whose x0 estimate x - t v is `known`
        else:
            exact = (alpha * x - known) / sigma    # v whose x0 estimate alpha x - sigma v is `known`
        out = out * (1 - mask) + exact * mask
        if info is not None:
            if torch.is_tensor(info.get("uncond_output")):
                info = {**info, "uncond_output": info["uncond_output"] * (1 - mask) + exact * mask}
            return out, info
        return out


def inversion_times(objective: str, steps: int, sampler_kwargs: Mapping[str, Any], length: int,
                    dist_shift: Any = None) -> torch.Tensor:
    """The decreasing model-time grid (ending in 0) that the sampler of ``sampler_kwargs`` integrates over."""
    sampler_type = sampler_kwargs.get("sampler_type")
    if objective in RF_OBJECTIVES:
        sigma_max = min(float(sampler_kwargs.get("sigma_max", 1)), 1.0)
        if sampler_type == "rk4":
            return linear_time_schedule(steps, sigma_max, length, dist_shift)
        return rf_logsnr_schedule(steps, sigma_max)
    sigma_max = float(sampler_kwargs.get("sigma_max", 100))
    if sampler_type in ("v-ddim", "v-ddim-cfgpp"):
        return linear_time_schedule(steps, min(sigma_max, 1.0))
    sigmas = get_sigmas_polyexponential(steps, float(sampler_kwargs.get("sigma_min", 0.01)), sigma_max,
                                        float(sampler_kwargs.get("rho", 1.0)))
    return sigmas.atan() / math.pi * 2


@torch.no_grad()
def invert_to_start(model_fn: ModelFn, objective: str, clean: torch.Tensor, times: torch.Tensor,
                    model_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map clean latents to the sampler's start point by deterministic ODE inversion.

    Args:
        model_fn (callable): the backbone (as the sampler calls it).
        objective (str): ``"v"`` (probability-flow ODE, integrated as DDIM inversion: ``x0``/``eps`` estimates at
            the lower time, re-mixed at the higher one) or rectified flow (Euler steps of ``dx/dt = v`` backwards).
        clean (torch.Tensor): clean latents ``[B, C, L]`` (time 0).
        times (torch.Tensor): the sampler's decreasing time grid ending in 0 (:func:`inversion_times`); it is
            walked from its end to its start.
        model_kwargs (dict | None, default None): the model keywords of sampling (conditioning, CFG).

    Returns:
        ``(init, noise)`` for the samplers' ``init_data`` / ``noise`` arguments: ``init`` is zero and ``noise`` is
        the inverted latent divided by the noise coefficient of the start time, so every sampler type (which starts
        from ``init`` mixed with ``noise`` at its start time) starts exactly from the inverted latent.
    """
    model_kwargs = model_kwargs or {}
    grid = times.flip(0).to(clean.device, torch.float32)
    x = clean
    ones = clean.new_ones([clean.shape[0]])
    for i in range(len(grid) - 1):
        t_lo, t_hi = grid[i], grid[i + 1]
        out = model_fn(x, ones * t_lo.to(clean.dtype), **model_kwargs)
        if objective in RF_OBJECTIVES:
            x = x + (t_hi - t_lo).to(x.dtype) * out
        else:
            (a_lo, s_lo), (a_hi, s_hi) = get_alphas_sigmas(t_lo), get_alphas_sigmas(t_hi)
            x0 = a_lo.to(x.dtype) * x - s_lo.to(x.dtype) * out
            eps = s_lo.to(x.dtype) * x + a_lo.to(x.dtype) * out
            x = a_hi.to(x.dtype) * x0 + s_hi.to(x.dtype) * eps
    t_start = grid[-1]
    sigma = t_start if objective in RF_OBJECTIVES else get_alphas_sigmas(t_start)[1]
    if float(sigma) <= 0:
        raise ValueError("cannot invert to time 0: the init noise level / strength must be above 0")
    return torch.zeros_like(x), x / sigma.to(x.dtype)
