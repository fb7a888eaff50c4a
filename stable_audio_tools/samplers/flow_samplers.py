"""Time-parameterised samplers: v-objective DDIM and rectified-flow ODE/consistency samplers.

The cores share the k-diffusion signature ``sampler(model_fn, x, sigmas, extra_args=None, callback=None,
disable=None, ...)`` where ``sigmas`` is a decreasing schedule of diffusion times in [0, 1] ending in 0 and
``model_fn(x, t, **extra_args)`` predicts v (v-objective: ``x_t = cos(pi t/2) x0 + sin(pi t/2) eps``, target
``cos * eps - sin * x0``) or the flow velocity (rectified flow: ``x_t = (1 - t) x0 + t eps``, target ``eps - x0``).
Callbacks receive ``{"x", "i", "t", "sigma", "denoised"}`` dicts. The upstream-named entry points
(:func:`sample`, :func:`sample_discrete_euler`, :func:`sample_rk4`, :func:`sample_flow_dpmpp`,
:func:`sample_flow_pingpong`) keep upstream's signatures and build the schedule themselves.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from tqdm.auto import trange

__all__ = [
    "get_alphas_sigmas", "alpha_sigma_to_t", "t_to_alpha_sigma", "DistributionShift", "linear_time_schedule",
    "sample_v_ddim", "sample_rf_euler", "sample_rf_rk4", "sample_rf_dpmpp_2m", "sample_rf_pingpong",
    "sample", "sample_discrete_euler", "sample_rk4", "sample_flow_dpmpp", "sample_flow_pingpong",
]

ModelFn = Callable[..., Any]
Callback = Optional[Callable[[Dict[str, Any]], None]]


def get_alphas_sigmas(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """v-objective scaling factors ``(alpha, sigma) = (cos(pi t / 2), sin(pi t / 2))`` for the data and the noise."""
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def t_to_alpha_sigma(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Alias of :func:`get_alphas_sigmas` (diffusion time -> (alpha, sigma))."""
    return get_alphas_sigmas(t)


def alpha_sigma_to_t(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`get_alphas_sigmas`: ``t = atan2(sigma, alpha) * 2 / pi``."""
    return torch.atan2(sigma, alpha) / math.pi * 2


class DistributionShift:
    """Sequence-length dependent time shift for rectified-flow models (SD3/Flux-style resolution shift).

    ``time_shift(t, L)``: ``L`` is clamped to ``[min_length, max_length]``,
    ``mu = -(base_shift + (max_shift - base_shift) (L - min_length) / (max_length - min_length))`` and
    ``t' = 1 - e^mu / (e^mu + (1 / (1 - t) - 1))`` (pushes times towards 1 for long sequences);
    with ``use_sine`` the result is further mapped through ``sin(pi t' / 2)``.
    """

    def __init__(self, base_shift: float = 0.5, max_shift: float = 1.15, max_length: int = 4096,
                 min_length: int = 256, use_sine: bool = False) -> None:
        if max_length <= min_length:
            raise ValueError(f"DistributionShift needs max_length > min_length, got {max_length} <= {min_length}")
        self.base_shift = base_shift
        self.max_shift = max_shift
        self.max_length = max_length
        self.min_length = min_length
        self.use_sine = use_sine

    def time_shift(self, t: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Shift diffusion times ``t`` (tensor or float in [0, 1]) for a latent sequence of ``seq_len`` frames."""
        seq_len = min(max(seq_len, self.min_length), self.max_length)
        frac = (seq_len - self.min_length) / (self.max_length - self.min_length)
        mu = -(self.base_shift + (self.max_shift - self.base_shift) * frac)
        t_out = 1 - math.exp(mu) / (math.exp(mu) + (1 / (1 - t) - 1) ** 1.0)
        if self.use_sine:
            t_out = torch.sin(t_out * math.pi / 2)
        return t_out

    def __repr__(self) -> str:
        return (f"DistributionShift(base_shift={self.base_shift}, max_shift={self.max_shift}, "
                f"max_length={self.max_length}, min_length={self.min_length}, use_sine={self.use_sine})")


def linear_time_schedule(steps: int, sigma_max: float = 1.0, length: Optional[int] = None,
                         dist_shift: Optional[DistributionShift] = None) -> torch.Tensor:
    """``linspace(sigma_max, 0, steps + 1)``, time-shifted for a sequence of ``length`` frames when given."""
    t = torch.linspace(sigma_max, 0, steps + 1)
    if dist_shift is not None:
        t = dist_shift.time_shift(t, length)
    return t


def _batch_times(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t * torch.ones((x.shape[0],), dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------------- v-objective
@torch.no_grad()
def sample_v_ddim(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                  callback: Callback = None, disable: Optional[bool] = None, eta: float = 0.0,
                  cfg_pp: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12) for v-prediction models, over the
    times ``sigmas`` (the final 0 is never evaluated). Returns the last prediction of x0.

    ``eta`` > 0 adds DDPM-like fresh noise. ``cfg_pp`` = CFG++ (Chung et al. 2024): the model is called with
    ``return_info=True`` and the unconditional output in ``info["uncond_output"]`` (when present) re-estimates the
    noise, while the guided output gives the x0 prediction.
    """
    extra_args = extra_args or {}
    ts = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    alphas, sigs = get_alphas_sigmas(sigmas)
    pred = x
    for i in trange(steps, disable=disable):
        if cfg_pp:
            v, info = model_fn(x, ts * sigmas[i], return_info=True, **extra_args)
            v_eps = info.get("uncond_output", v)
        else:
            v = v_eps = model_fn(x, ts * sigmas[i], **extra_args)
        pred = x * alphas[i] - v * sigs[i]
        eps = x * sigs[i] + v_eps * alphas[i]
        if i < steps - 1:
            ddim_sigma = eta * (sigs[i + 1] ** 2 / sigs[i] ** 2).sqrt() * (1 - alphas[i] ** 2 / alphas[i + 1] ** 2).sqrt()
            adjusted_sigma = (sigs[i + 1] ** 2 - ddim_sigma ** 2).sqrt()
            x = pred * alphas[i + 1] + eps * adjusted_sigma
            if eta:
                x = x + torch.randn_like(x) * ddim_sigma
        if callback is not None:
            callback({"x": x, "t": sigmas[i], "sigma": sigs[i], "i": i, "denoised": pred})
    return pred


@torch.no_grad()
def sample(model: ModelFn, x: torch.Tensor, steps: int, eta: float, callback: Callback = None,
           sigma_max: float = 1.0, dist_shift: Optional[DistributionShift] = None, cfg_pp: bool = False,
           disable_tqdm: bool = False, **extra_args: Any) -> torch.Tensor:
    """v-DDIM from time ``sigma_max`` in ``steps`` steps (upstream entry point, see :func:`sample_v_ddim`).

    ``x`` is the starting point at time ``sigma_max`` (pure noise when it is 1); ``extra_args`` go to the model.
    """
    t = linear_time_schedule(steps, sigma_max, x.shape[-1], dist_shift)
    return sample_v_ddim(model, x, t, extra_args, callback, disable_tqdm, eta=eta, cfg_pp=cfg_pp)


# ---------------------------------------------------------------------------------------------- rectified flow
@torch.no_grad()
def sample_rf_euler(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                    callback: Callback = None, disable: Optional[bool] = None) -> torch.Tensor:
    """Explicit Euler integration of the rectified-flow ODE dx/dt = v (Liu et al. 2022, "Flow Straight and Fast")
    from ``sigmas[0]`` down to ``sigmas[-1]``. The callback's ``i`` counts from 1, as upstream."""
    extra_args = extra_args or {}
    for i in trange(len(sigmas) - 1, disable=disable):
        t_curr, t_next = sigmas[i], sigmas[i + 1]
        dt = t_next - t_curr
        v = model_fn(x, _batch_times(t_curr, x), **extra_args)
        x = x + dt * v
        if callback is not None:
            callback({"x": x, "t": t_curr, "sigma": t_curr, "i": i + 1, "denoised": x - t_next * v})
    return x


@torch.no_grad()
def sample_rf_rk4(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                  callback: Callback = None, disable: Optional[bool] = None) -> torch.Tensor:
    """Classical 4th-order Runge-Kutta integration of the rectified-flow ODE (four model calls per step)."""
    extra_args = extra_args or {}
    ts = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        t_curr, t_next = sigmas[i], sigmas[i + 1]
        dt = t_next - t_curr
        k1 = model_fn(x, t_curr * ts, **extra_args)
        k2 = model_fn(x + dt / 2 * k1, (t_curr + dt / 2) * ts, **extra_args)
        k3 = model_fn(x + dt / 2 * k2, (t_curr + dt / 2) * ts, **extra_args)
        k4 = model_fn(x + dt * k3, t_next * ts, **extra_args)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if callback is not None:
            callback({"x": x, "t": t_curr, "sigma": t_curr, "i": i + 1, "denoised": x - t_next * k4})
    return x


@torch.no_grad()
def sample_rf_dpmpp_2m(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                       callback: Callback = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2) for rectified flow: data prediction
    ``x - t v``, half-log-SNR ``lambda = log((1 - t) / t)``; first-order on the first and the final step."""
    extra_args = extra_args or {}
    ts = x.new_ones([x.shape[0]])
    old_denoised = None

    def log_snr(t):
        return ((1 - t) / t).log()

    for i in trange(len(sigmas) - 1, disable=disable):
        t_curr, t_next = sigmas[i], sigmas[i + 1]
        denoised = x - t_curr * model_fn(x, t_curr * ts, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "t": t_curr, "sigma": t_curr, "denoised": denoised})
        alpha_next = 1 - t_next
        h = log_snr(t_next) - log_snr(t_curr)
        if old_denoised is not None and t_next != 0:
            r = (log_snr(t_curr) - log_snr(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (t_next / t_curr) * x - alpha_next * (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_rf_pingpong(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                       callback: Callback = None, disable: Optional[bool] = None) -> torch.Tensor:
    """Ping-pong sampling for distilled (``rf_denoiser``) models, as in consistency-model multistep sampling (Song
    et al. 2023, Algorithm 1): predict x0 = x - t v, then re-noise to the next time with fresh N(0, 1) noise."""
    extra_args = extra_args or {}
    ts = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = x - sigmas[i] * model_fn(x, sigmas[i] * ts, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "t": sigmas[i], "sigma": sigmas[i], "sigma_hat": sigmas[i],
                      "denoised": denoised})
        t_next = sigmas[i + 1]
        x = (1 - t_next) * denoised + t_next * torch.randn_like(x)
    return x


def _schedule_or(steps: Optional[int], sigmas: Optional[torch.Tensor], sigma_max: float, x: torch.Tensor,
                 dist_shift: Optional[DistributionShift]) -> torch.Tensor:
    if sigmas is not None:
        return sigmas
    if steps is None:
        raise ValueError("pass either steps (a linspace(sigma_max, 0, steps + 1) schedule is built) or sigmas")
    return linear_time_schedule(steps, sigma_max, x.shape[-1], dist_shift)


def sample_discrete_euler(model: ModelFn, x: torch.Tensor, steps: Optional[int] = None, sigma_max: float = 1,
                          sigmas: Optional[torch.Tensor] = None, callback: Callback = None,
                          dist_shift: Optional[DistributionShift] = None, disable_tqdm: bool = False,
                          **extra_args: Any) -> torch.Tensor:
    """Rectified-flow Euler sampling (upstream entry point). Without ``sigmas`` the schedule is
    ``linspace(sigma_max, 0, steps + 1)``, time-shifted by ``dist_shift`` for the latent length."""
    t = _schedule_or(steps, sigmas, sigma_max, x, dist_shift)
    return sample_rf_euler(model, x, t, extra_args, callback, disable_tqdm)


def sample_rk4(model: ModelFn, x: torch.Tensor, steps: Optional[int] = None, sigma_max: float = 1,
               sigmas: Optional[torch.Tensor] = None, callback: Callback = None,
               dist_shift: Optional[DistributionShift] = None, disable_tqdm: bool = False,
               **extra_args: Any) -> torch.Tensor:
    """Rectified-flow RK4 sampling (upstream entry point; schedule as :func:`sample_discrete_euler`)."""
    t = _schedule_or(steps, sigmas, sigma_max, x, dist_shift)
    return sample_rf_rk4(model, x, t, extra_args, callback, disable_tqdm)


def sample_flow_dpmpp(model: ModelFn, x: torch.Tensor, steps: Optional[int] = None, sigma_max: float = 1,
                      sigmas: Optional[torch.Tensor] = None, callback: Callback = None,
                      dist_shift: Optional[DistributionShift] = None, disable_tqdm: bool = False,
                      **extra_args: Any) -> torch.Tensor:
    """Rectified-flow DPM-Solver++(2M) (upstream entry point; schedule as :func:`sample_discrete_euler`)."""
    t = _schedule_or(steps, sigmas, sigma_max, x, dist_shift)
    return sample_rf_dpmpp_2m(model, x, t, extra_args, callback, disable_tqdm)


def sample_flow_pingpong(model: ModelFn, x: torch.Tensor, steps: Optional[int] = None, sigma_max: float = 1,
                         sigmas: Optional[torch.Tensor] = None, callback: Callback = None,
                         dist_shift: Optional[DistributionShift] = None, disable_tqdm: bool = False,
                         **extra_args: Any) -> torch.Tensor:
    """Ping-pong sampling for distilled RF models (upstream entry point; schedule as
    :func:`sample_discrete_euler`)."""
    t = _schedule_or(steps, sigmas, sigma_max, x, dist_shift)
    return sample_rf_pingpong(model, x, t, extra_args, callback, disable_tqdm)
