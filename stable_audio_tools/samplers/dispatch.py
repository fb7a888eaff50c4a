"""Sampling entry points: :func:`sample_k` for v-objective models, :func:`sample_rf` for rectified-flow models
(both dispatch through the sampler registry, :mod:`.registry`), plus timestep samplers used in training and
soft-mask and guidance helpers.

Pure functions of tensors and model callables: this package imports nothing from the rest of
``stable_audio_tools``, so models may use it. ``stable_audio_tools.inference.sampling`` re-exports every name, as
upstream keeps them there (see ``docs/inference.md``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.distributions as dist

from . import k_samplers as K
from .flow_samplers import (
    DistributionShift, alpha_sigma_to_t, get_alphas_sigmas, linear_time_schedule, sample, sample_discrete_euler,
    sample_flow_dpmpp, sample_flow_pingpong, sample_rf_dpmpp_2m, sample_rf_euler, sample_rf_pingpong, sample_rf_rk4,
    sample_rk4, sample_v_ddim, t_to_alpha_sigma,
)
from .k_samplers import (
    BrownianTreeNoiseSampler, VDenoiser, get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential,
)
from .registry import get_sampler, rf_logsnr_schedule, sampler_names

__all__ = [
    "get_alphas_sigmas", "alpha_sigma_to_t", "t_to_alpha_sigma", "DistributionShift", "sample_timesteps_logsnr",
    "truncated_logistic_normal_rescaled", "get_bmask", "make_cond_model_fn", "make_cond_velocity_fn",
    "sample_k", "sample_rf", "sample", "sample_discrete_euler", "sample_rk4", "sample_flow_dpmpp",
    "sample_flow_pingpong", "sample_v_ddim", "sample_rf_euler", "sample_rf_rk4", "sample_rf_dpmpp_2m",
    "sample_rf_pingpong", "get_sigmas_polyexponential", "get_sigmas_karras", "get_sigmas_exponential",
    "rf_logsnr_schedule", "VDenoiser", "BrownianTreeNoiseSampler", "K_SAMPLER_TYPES", "V_SAMPLER_TYPES",
    "RF_SAMPLER_TYPES",
]

# The built-in names per family (samplers registered later are accepted by the dispatchers too).
K_SAMPLER_TYPES = sampler_names(("k",))
V_SAMPLER_TYPES = sampler_names(("v",))
RF_SAMPLER_TYPES = sampler_names(("rf",))


# ---------------------------------------------------------------------------------------------- training timesteps
def sample_timesteps_logsnr(batch_size: int, mean_logsnr: float = -1.2, std_logsnr: float = 2.0) -> torch.Tensor:
    """Diffusion times from a Gaussian over logSNR: ``t = sigmoid(-logsnr)``, clamped to ``[1e-4, 1 - 1e-4]``
    (logSNR = log((1 - t) / t) for rectified flow)."""
    logsnr = torch.randn(batch_size) * std_logsnr + mean_logsnr
    return torch.sigmoid(-logsnr).clamp(1e-4, 1 - 1e-4)


def truncated_logistic_normal_rescaled(shape: Union[int, Sequence[int]], left_trunc: float = 0.075,
                                       right_trunc: float = 1) -> torch.Tensor:
    """Logit-normal samples truncated to ``[left_trunc, right_trunc]`` and rescaled to ``[0, 1]``.

    A standard normal is pushed through its CDF, squeezed into ``[Phi(logit(left)), Phi(logit(right))]``, mapped
    back through ``sigmoid(Phi^-1(.))`` and rescaled by ``(s - left) / (right - left)``.
    """
    normal = dist.Normal(0, 1)
    cdf = normal.cdf(torch.randn(shape))
    lower = normal.cdf(torch.logit(torch.tensor(left_trunc)))
    upper = normal.cdf(torch.logit(torch.tensor(right_trunc)))
    truncated = torch.sigmoid(normal.icdf(lower + (upper - lower) * cdf))
    return (truncated - left_trunc) / (right_trunc - left_trunc)


# ---------------------------------------------------------------------------------------------- masks / guidance
def get_bmask(i: int, steps: int, mask: torch.Tensor) -> torch.Tensor:
    """Binary mask for step ``i`` of ``steps`` from a soft mask in [0, 1]: positions whose mask value is below the
    step's strength ``(i + 1) / steps`` become 0 (regenerate), the rest 1 (keep)."""
    strength = (i + 1) / steps
    return torch.where(mask < strength, 0, 1)


def make_cond_model_fn(model: Callable[..., torch.Tensor], cond_fn: Callable[..., torch.Tensor]):
    """Gradient guidance for a denoiser: ``denoised + cond_fn(x, sigma, denoised=...) * sigma**2``.

    ``cond_fn(x, sigma, denoised=denoised, **kwargs)`` returns d log p(y | x) / dx (it may differentiate through
    ``denoised``, which is computed with gradients enabled).
    """
    def cond_model_fn(x, sigma, **kwargs):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            denoised = model(x, sigma, **kwargs)
            cond_grad = cond_fn(x, sigma, denoised=denoised, **kwargs).detach()
            return denoised.detach() + cond_grad * K.append_dims(sigma ** 2, x.ndim)
    return cond_model_fn


def make_cond_velocity_fn(model: Callable[..., torch.Tensor], cond_fn: Callable[..., torch.Tensor]):
    """Gradient guidance for a rectified-flow velocity model: the data prediction ``x - t v`` is moved by
    ``cond_fn(x, t, denoised=...) * t**2``, i.e. ``v' = v - grad * t``."""
    def cond_velocity_fn(x, t, **kwargs):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            v = model(x, t, **kwargs)
            t_b = K.append_dims(t, x.ndim)
            cond_grad = cond_fn(x, t, denoised=x - t_b * v, **kwargs).detach()
            return v.detach() - cond_grad * t_b
    return cond_velocity_fn


def _unknown_sampler(sampler_type: str, accepted: Sequence[str], hint: str) -> ValueError:
    return ValueError(f"Unknown sampler type {sampler_type!r}; accepted: {', '.join(accepted)} ({hint})")


def _with_time(callback: Optional[Callable[[dict], Any]]):
    """Add the v-objective time ``t = atan(sigma) * 2 / pi`` to k-diffusion callback dicts (which lack it)."""
    if callback is None:
        return None

    def wrapped(info: dict) -> Any:
        if "t" not in info and "sigma" in info:
            info = {**info, "t": torch.as_tensor(info["sigma"]).atan() / math.pi * 2}
        return callback(info)
    return wrapped


# ---------------------------------------------------------------------------------------------- dispatchers
def sample_k(model_fn: Callable[..., torch.Tensor], noise: torch.Tensor, init_data: Optional[torch.Tensor] = None,
             steps: int = 100, sampler_type: str = "dpmpp-2m-sde", sigma_min: float = 0.01, sigma_max: float = 100,
             rho: float = 1.0, device: Optional[Union[str, torch.device]] = None,
             callback: Optional[Callable[[dict], Any]] = None, cond_fn: Optional[Callable[..., torch.Tensor]] = None,
             disable_tqdm: bool = False, **extra_args: Any) -> torch.Tensor:
    """Sample a v-objective model ``model_fn(x, t, **extra_args)`` (t in [0, 1]).

    k-diffusion types (:data:`K_SAMPLER_TYPES`) wrap the model in :class:`VDenoiser` and integrate over
    ``get_sigmas_polyexponential(steps, sigma_min, sigma_max, rho)``; the start is ``noise * sigma_max``
    (``+ init_data`` for variations: pass a smaller ``sigma_max``). ``k-dpm-fast`` uses (sigma_min, sigma_max,
    steps) and ``k-dpm-adaptive`` rtol = atol = 0.01. v-DDIM types (``v-ddim``, ``v-ddim-cfgpp``) treat
    ``min(sigma_max, 1)`` as the start time (``init * cos + noise * sin`` for variations).

    ``device`` is where the schedule lives (default: ``noise.device``; upstream defaulted to "cuda").
    ``cond_fn`` adds gradient guidance (:func:`make_cond_model_fn`); callbacks receive ``x``, ``i``, ``sigma``,
    ``t``, ``denoised`` (+ ``sigma_hat`` for k-diffusion types); ``disable_tqdm`` hides the progress bar.
    Unknown ``sampler_type`` raises ValueError.
    """
    device = noise.device if device is None else device
    entry = get_sampler(sampler_type)
    if entry is not None and entry.family == "k":
        denoiser = VDenoiser(model_fn)
        if cond_fn is not None:
            denoiser = make_cond_model_fn(denoiser, cond_fn)
        sigmas = get_sigmas_polyexponential(steps, sigma_min, sigma_max, rho, device=device)
        noise = noise * sigmas[0]
        x = init_data + noise if init_data is not None else noise
        return entry.run(denoiser, x, sigmas, sigma_min=sigma_min, sigma_max=sigma_max, steps=steps,
                         extra_args=extra_args, callback=_with_time(callback), disable=disable_tqdm)
    if entry is not None and entry.family == "v":
        sigma_max = min(sigma_max, 1)
        if cond_fn is not None:
            model_fn = make_cond_model_fn(model_fn, cond_fn)
        alpha, sigma = t_to_alpha_sigma(torch.tensor(sigma_max))
        x = init_data * alpha + noise * sigma if init_data is not None else noise
        return entry.run(model_fn, x, steps=steps, sigma_max=sigma_max, callback=callback, disable_tqdm=disable_tqdm,
                         extra_args=extra_args)
    raise _unknown_sampler(sampler_type, sampler_names(("k", "v")),
                           "rectified-flow models use sample_rf with " + ", ".join(sampler_names(("rf",))))


def sample_rf(model_fn: Callable[..., torch.Tensor], noise: torch.Tensor, init_data: Optional[torch.Tensor] = None,
              steps: int = 100, sampler_type: str = "euler", sigma_max: float = 1,
              device: Optional[Union[str, torch.device]] = None, callback: Optional[Callable[[dict], Any]] = None,
              cond_fn: Optional[Callable[..., torch.Tensor]] = None, disable_tqdm: bool = False,
              **extra_args: Any) -> torch.Tensor:
    """Sample a rectified-flow model ``model_fn(x, t, **extra_args) -> velocity`` (t = 1 noise, t = 0 data).

    ``sigma_max`` (clamped to 1) is the start time; variations start at ``init * (1 - sigma_max) + noise *
    sigma_max``. ``euler``, ``dpmpp`` and ``pingpong`` use :func:`rf_logsnr_schedule`; ``rk4`` uses
    ``linspace(sigma_max, 0, steps + 1)``, time-shifted by a ``dist_shift`` keyword when one is given (the other
    types ignore it, as upstream). ``cond_fn`` adds gradient guidance (:func:`make_cond_velocity_fn`; broken
    upstream). ``device`` is accepted for API compatibility (the schedule is built on the CPU as upstream).
    Unknown ``sampler_type`` raises ValueError.
    """
    entry = get_sampler(sampler_type)
    if entry is None or entry.family != "rf":
        raise _unknown_sampler(sampler_type, sampler_names(("rf",)),
                               "v-objective models use sample_k with " + ", ".join(sampler_names(("k", "v"))))
    dist_shift = extra_args.pop("dist_shift", None)
    sigma_max = min(sigma_max, 1)
    if cond_fn is not None:
        model_fn = make_cond_velocity_fn(model_fn, cond_fn)
    x = init_data * (1 - sigma_max) + noise * sigma_max if init_data is not None else noise
    t = entry.schedule(steps, sigma_max, x.shape[-1], dist_shift)
    return entry.run(model_fn, x, t, extra_args, callback, disable_tqdm)
