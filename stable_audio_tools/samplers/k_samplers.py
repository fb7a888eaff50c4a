"""Karras-style (sigma-parameterised) samplers, reimplemented to match k-diffusion 0.1.1 numerically.

Every sampler here integrates the probability-flow ODE / reverse SDE of a denoiser ``model(x, sigma) ->
denoised`` over a decreasing noise schedule ``sigmas`` (ending in 0) and shares the signature
``sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, ...)``; ``x`` must already be
scaled to ``sigmas[0]``. ``extra_args`` are forwarded to the model, ``callback`` receives a dict
``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once per step and ``disable`` turns the tqdm progress bar off.
The DPM-Solver samplers, which take ``(sigma_min, sigma_max, n)`` instead of a schedule, are in :mod:`.dpm_solver`.

v-objective models are turned into denoisers by :class:`VDenoiser`. Stochastic samplers draw their noise from
:class:`BrownianTreeNoiseSampler` (torchsde), whose seed is drawn from the global torch RNG when the sampler is
constructed, so ``torch.manual_seed`` makes every sampler reproducible.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from scipy import integrate
from torch import nn
from tqdm.auto import trange

__all__ = [
    "append_dims", "append_zero", "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential",
    "to_d", "get_ancestral_step", "default_noise_sampler", "BatchedBrownianTree", "BrownianTreeNoiseSampler",
    "VDenoiser", "sample_heun", "sample_dpm_2", "sample_lms", "linear_multistep_coeff", "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde",
]

Denoiser = Callable[..., torch.Tensor]
Callback = Optional[Callable[[Dict[str, Any]], None]]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------- small helpers
def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Add trailing singleton dimensions to ``x`` until it has ``target_dims`` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x.reshape(*x.shape, *([1] * missing))


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """Append a final 0 to a 1-D schedule."""
    return torch.cat([x, x.new_zeros([1])])


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative dx/dsigma = (x - denoised) / sigma."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor,
                       eta: float = 1.0) -> Tuple[Any, Any]:
    """Split a step ``sigma_from -> sigma_to`` into a deterministic step down to ``sigma_down`` plus fresh noise of
    std ``sigma_up`` (``sigma_down**2 + sigma_up**2 == sigma_to**2``); ``eta`` scales the noise (0 = deterministic)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """Independent standard-normal noise shaped like ``x`` at every call (global torch RNG)."""
    return lambda sigma, sigma_next: torch.randn_like(x)


# ---------------------------------------------------------------------------------------------- schedules
def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Karras et al. (2022) schedule: ``n`` sigmas evenly spaced in ``sigma**(1/rho)``, plus a trailing 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return append_zero(sigmas.to(device))


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float,
                           device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """``n`` sigmas evenly spaced in log-sigma from ``sigma_max`` to ``sigma_min``, plus a trailing 0."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Polynomial-in-log-sigma schedule: ``sigma_i = exp(r_i (ln sigma_max - ln sigma_min) + ln sigma_min)`` with
    ``r = linspace(1, 0, n) ** rho`` (rho=1 is exponential), plus a trailing 0."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    log_min = math.log(sigma_min)
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min))


# ---------------------------------------------------------------------------------------------- noise samplers
class BatchedBrownianTree:
    """One ``torchsde.BrownianTree`` per seed over ``[t0, t1]``; queries return the Brownian increment.

    ``seed`` may be an int, ``None`` (drawn from the global torch RNG with ``torch.randint(0, 2**63 - 1, [])``) or a
    list with one seed per batch item (then each item gets its own tree).
    """

    def __init__(self, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor,
                 seed: Optional[Union[int, Sequence[int]]] = None, **kwargs: Any) -> None:
        import torchsde

        t0, t1, self.sign = self._ordered(t0, t1)
        w0 = kwargs.pop("w0", torch.zeros_like(x))
        if seed is None:
            seed = torch.randint(0, 2 ** 63 - 1, []).item()
        self.batched = isinstance(seed, (list, tuple))
        if self.batched:
            if len(seed) != x.shape[0]:
                raise ValueError(f"got {len(seed)} seeds for a batch of {x.shape[0]}; pass one seed per batch "
                                 "item or a single int")
            seeds, w0 = list(seed), w0[0]
        else:
            seeds = [seed]
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s, **kwargs) for s in seeds]

    @staticmethod
    def _ordered(a, b) -> Tuple[Any, Any, int]:
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        t0, t1, sign = self._ordered(t0, t1)
        w = torch.stack([tree(t0, t1) for tree in self.trees]) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Noise for SDE steps from a Brownian tree, so results barely depend on the step count.

    Args:
        x: tensor whose shape, dtype and device the noise takes.
        sigma_min, sigma_max: the interval the tree covers (the schedule's smallest positive and largest sigma).
        seed: int, list of per-item ints, or ``None`` to draw one from the global torch RNG (at construction).
        transform: maps sigma to the tree's internal time.
    Calling it with ``(sigma, sigma_next)`` returns unit-variance noise ``(W(t1) - W(t0)) / sqrt(|t1 - t0|)``.
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: Optional[Union[int, Sequence[int]]] = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] = lambda s: s) -> None:
        self.transform = transform
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        with warnings.catch_warnings():
            # torchsde rounds the tree's end points, so querying exactly at sigma_min/sigma_max can look out of range
            warnings.filterwarnings("ignore", message=r"Should have (ta>=t0|tb<=t1)", category=UserWarning)
            increment = self.tree(t0, t1)
        return increment / (t1 - t0).abs().sqrt()


def _brownian_sampler_for(x: torch.Tensor, sigmas: torch.Tensor) -> BrownianTreeNoiseSampler:
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max())


# ---------------------------------------------------------------------------------------------- model wrapper
class VDenoiser(nn.Module):
    """Turn a v-prediction model ``inner_model(x_t, t)`` (alpha=cos, sigma=sin in t*pi/2) into a Karras denoiser.

    With ``sigma_data = 1``: ``c_skip = 1/(sigma^2+1)``, ``c_out = -sigma/sqrt(sigma^2+1)``,
    ``c_in = 1/sqrt(sigma^2+1)`` and model time ``t = atan(sigma) * 2 / pi``;
    ``denoised = inner_model(x * c_in, t) * c_out + x * c_skip``.
    """

    def __init__(self, inner_model: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.inner_model = inner_model
        self.sigma_data = 1.0

    def get_scalings(self, sigma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(c_skip, c_out, c_in)`` for noise level ``sigma``."""
        total = sigma ** 2 + self.sigma_data ** 2
        c_skip = self.sigma_data ** 2 / total
        c_out = -sigma * self.sigma_data / total ** 0.5
        c_in = 1 / total ** 0.5
        return c_skip, c_out, c_in

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Karras sigma -> v-diffusion time in [0, 1)."""
        return sigma.atan() / math.pi * 2

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """v-diffusion time -> Karras sigma."""
        return (t * math.pi / 2).tan()

    def forward(self, input: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        c_skip, c_out, c_in = (append_dims(c, input.ndim) for c in self.get_scalings(sigma))
        return self.inner_model(input * c_in, self.sigma_to_t(sigma), **kwargs) * c_out + input * c_skip


# ---------------------------------------------------------------------------------------------- ODE samplers
def _churned_sigma(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise):
    """Karras 'churn': optionally raise the noise level of step ``i`` before denoising (Algorithm 2, lines 4-6)."""
    gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    eps = torch.randn_like(x) * s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def _report(callback: Callback, x, i, sigma, sigma_hat, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_heun(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                callback: Callback = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """Heun's second-order method, Algorithm 2 of Karras et al. (2022), "Elucidating the Design Space of
    Diffusion-Based Generative Models" (Euler on the final step to sigma=0)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churned_sigma(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_euler = x + d * dt
        d_next = to_d(x_euler, sigmas[i + 1], model(x_euler, sigmas[i + 1] * s_in, **extra_args))
        x = x + (d + d_next) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                 callback: Callback = None, disable: Optional[bool] = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 style midpoint steps (midpoint at the geometric mean of the two sigmas) inside Algorithm 2 of
    Karras et al. (2022); Euler on the final step."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churned_sigma(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
            continue
        sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
        x_mid = x + d * (sigma_mid - sigma_hat)
        d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
        x = x + d_mid * (sigmas[i + 1] - sigma_hat)
    return x


def linear_multistep_coeff(order: int, t: Sequence[float], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial through t_i, t_{i-1}, ... (LMS weights)."""
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")

    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
               callback: Callback = None, disable: Optional[bool] = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth in sigma, up to ``order``) as in k-diffusion / Karras et al. (2022)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    history: List[torch.Tensor] = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        history.append(to_d(x, sigmas[i], denoised))
        if len(history) > order:
            history.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        cur_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history)))
    return x


# ---------------------------------------------------------------------------------------------- DPM-Solver++
def _sigma_fn(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t_fn(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                              extra_args: Optional[dict] = None, callback: Callback = None,
                              disable: Optional[bool] = None, eta: float = 1.0, s_noise: float = 1.0,
                              noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022, arXiv:2211.01095, Algorithm 1 single-step, r=1/2)."""
    extra_args = extra_args or {}
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_mid = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * r).expm1() * denoised
            denoised_mid = model(x_mid, _sigma_fn(s) * s_in, **extra_args)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                    callback: Callback = None, disable: Optional[bool] = None) -> torch.Tensor:
    """DPM-Solver++(2M), the multistep second-order data-prediction solver (Lu et al. 2022, arXiv:2211.01095,
    Algorithm 2)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is not None and sigmas[i + 1] != 0:
            r = (t - _t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                        callback: Callback = None, disable: Optional[bool] = None, eta: float = 1.0,
                        s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                        solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv:2211.01095, SDE variant; ``solver_type`` midpoint|heun);
    noise from a Brownian tree over the schedule unless ``noise_sampler`` is given."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    noise_sampler = _brownian_sampler_for(x, sigmas) if noise_sampler is None else noise_sampler
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * (-2 * eta_h).expm1().neg().sqrt() * s_noise)
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                        callback: Callback = None, disable: Optional[bool] = None, eta: float = 1.0,
                        s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep data-prediction SDE solver (k-diffusion's extension of Lu et al.
    2022, arXiv:2211.01095); noise from a Brownian tree unless ``noise_sampler`` is given."""
    noise_sampler = _brownian_sampler_for(x, sigmas) if noise_sampler is None else noise_sampler
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = None
    h, h_1, h_2 = None, None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                x = x + (h_eta.neg().expm1() / h_eta + 1) * d
            if eta:
                x = x + (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * (-2 * h * eta).expm1().neg().sqrt() * s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x
