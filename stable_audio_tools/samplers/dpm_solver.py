"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927): fixed-step "fast" and adaptive-step samplers, reimplemented to
match k-diffusion 0.1.1's ``sample_dpm_fast`` / ``sample_dpm_adaptive`` numerically.

Unlike the schedule-based samplers in :mod:`.k_samplers`, these take ``(sigma_min, sigma_max, n)`` and work in the
time variable ``t = -log(sigma)``. Callbacks receive ``{"x", "i", "t", "t_up", "sigma", "sigma_hat", "denoised"}``
(plus error/step statistics for the adaptive solver).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from tqdm.auto import tqdm

from .k_samplers import default_noise_sampler, get_ancestral_step

__all__ = ["PIDStepSizeController", "DPMSolver", "sample_dpm_fast", "sample_dpm_adaptive"]

Denoiser = Callable[..., torch.Tensor]
Callback = Optional[Callable[[Dict[str, Any]], None]]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PIDStepSizeController:
    """PID controller for adaptive step sizes (Söderlind-style), as used by DPM-Solver-12/23."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float = 1,
                 accept_safety: float = 0.81, eps: float = 1e-8) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: List[float] = []

    @staticmethod
    def limiter(x: float) -> float:
        """Smooth limiter ``1 + atan(x - 1)`` on the step-size factor."""
        return 1 + math.atan(x - 1)

    def propose_step(self, error: Union[float, torch.Tensor]) -> bool:
        """Update ``h`` from the scaled error estimate; return whether the step is accepted."""
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.limiter(self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    """DPM-Solver (Lu et al. 2022, arXiv:2206.00927) in the time variable ``t = -log(sigma)``, with the eps
    prediction ``(x - denoised) / sigma`` derived from a denoiser."""

    def __init__(self, model: Denoiser, extra_args: Optional[dict] = None,
                 eps_callback: Optional[Callable[[], Any]] = None,
                 info_callback: Optional[Callable[[dict], None]] = None) -> None:
        self.model = model
        self.extra_args = extra_args or {}
        self.eps_callback = eps_callback
        self.info_callback = info_callback

    @staticmethod
    def t(sigma: torch.Tensor) -> torch.Tensor:
        """Solver time ``-log(sigma)``."""
        return -sigma.log()

    @staticmethod
    def sigma(t: torch.Tensor) -> torch.Tensor:
        """Noise level ``exp(-t)``."""
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, dict]:
        """eps prediction at ``(x, t)``, memoised in ``cache`` under ``key``."""
        if key in cache:
            return cache[key], cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        if self.eps_callback is not None:
            self.eps_callback()
        return eps, {key: eps, **cache}

    def dpm_solver_1_step(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                          eps_cache: Optional[dict] = None) -> Tuple[torch.Tensor, dict]:
        """First-order step (DDIM in data space)."""
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, eps_cache

    def dpm_solver_2_step(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, r1: float = 1 / 2,
                          eps_cache: Optional[dict] = None) -> Tuple[torch.Tensor, dict]:
        """Second-order single step (DPM-Solver-2, intermediate point at ``t + r1 h``)."""
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, eps_cache

    def dpm_solver_3_step(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, r1: float = 1 / 3,
                          r2: float = 2 / 3, eps_cache: Optional[dict] = None) -> Tuple[torch.Tensor, dict]:
        """Third-order single step (DPM-Solver-3)."""
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2, eps_cache = self.eps(eps_cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, eps_cache

    def _ancestral_target(self, t, t_next, t_end, eta):
        if not eta:
            return t_next, 0.0
        sd, _ = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_next_ = torch.minimum(t_end, self.t(sd))
        return t_next_, (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5

    def dpm_solver_fast(self, x: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor, nfe: int,
                        eta: float = 0.0, s_noise: float = 1.0,
                        noise_sampler: Optional[NoiseSampler] = None) -> torch.Tensor:
        """Fixed-step DPM-Solver-Fast: ``nfe`` model calls split into third-order steps (+ a 2/1-order tail)."""
        noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        steps = {1: self.dpm_solver_1_step, 2: self.dpm_solver_2_step, 3: self.dpm_solver_3_step}
        for i, order in enumerate(orders):
            t, t_next = ts[i], ts[i + 1]
            t_next_, su = self._ancestral_target(t, t_next, t_end, eta)
            eps, eps_cache = self.eps({}, "eps", x, t)
            denoised = x - self.sigma(t) * eps
            if self.info_callback is not None:
                self.info_callback({"x": x, "i": i, "t": ts[i], "t_up": t, "denoised": denoised})
            x, eps_cache = steps[order](x, t, t_next_, eps_cache=eps_cache)
            x = x + su * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def dpm_solver_adaptive(self, x: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor, order: int = 3,
                            rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0,
                            icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0,
                            s_noise: float = 1.0,
                            noise_sampler: Optional[NoiseSampler] = None) -> Tuple[torch.Tensor, dict]:
        """Adaptive DPM-Solver-12 / 23: embedded low/high-order pair with PID step-size control."""
        noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev = t_start, x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
        while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            t_, su = self._ancestral_target(s, t, t_end, eta)
            eps, eps_cache = self.eps({}, "eps", x, s)
            denoised = x - self.sigma(s) * eps
            if order == 2:
                x_low, eps_cache = self.dpm_solver_1_step(x, s, t_, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_2_step(x, s, t_, eps_cache=eps_cache)
            else:
                x_low, eps_cache = self.dpm_solver_2_step(x, s, t_, r1=1 / 3, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_3_step(x, s, t_, eps_cache=eps_cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high + su * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
                info["n_accept"] += 1
            else:
                info["n_reject"] += 1
            info["nfe"] += order
            info["steps"] += 1
            if self.info_callback is not None:
                self.info_callback({"x": x, "i": info["steps"] - 1, "t": s, "t_up": s, "denoised": denoised,
                                    "error": error, "h": pid.h, **info})
        return x, info


def _dpm_info_callback(solver: DPMSolver, callback: Callback):
    if callback is None:
        return None
    return lambda info: callback({"sigma": solver.sigma(info["t"]), "sigma_hat": solver.sigma(info["t_up"]), **info})


@torch.no_grad()
def sample_dpm_fast(model: Denoiser, x: torch.Tensor, sigma_min: float, sigma_max: float, n: int,
                    extra_args: Optional[dict] = None, callback: Callback = None, disable: Optional[bool] = None,
                    eta: float = 0.0, s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None
                    ) -> torch.Tensor:
    """DPM-Solver-Fast with ``n`` model evaluations (Lu et al. 2022, arXiv:2206.00927, fixed step size)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    with tqdm(total=n, disable=disable) as pbar:
        solver = DPMSolver(model, extra_args, eps_callback=pbar.update)
        solver.info_callback = _dpm_info_callback(solver, callback)
        return solver.dpm_solver_fast(x, solver.t(torch.tensor(sigma_max)), solver.t(torch.tensor(sigma_min)), n,
                                      eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model: Denoiser, x: torch.Tensor, sigma_min: float, sigma_max: float,
                        extra_args: Optional[dict] = None, callback: Callback = None, disable: Optional[bool] = None,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                        pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81,
                        eta: float = 0.0, s_noise: float = 1.0, noise_sampler: Optional[NoiseSampler] = None,
                        return_info: bool = False):
    """Adaptive-step DPM-Solver-12/23 (Lu et al. 2022, arXiv:2206.00927); ``return_info`` also returns step stats."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    with tqdm(disable=disable) as pbar:
        solver = DPMSolver(model, extra_args, eps_callback=pbar.update)
        solver.info_callback = _dpm_info_callback(solver, callback)
        x, info = solver.dpm_solver_adaptive(x, solver.t(torch.tensor(sigma_max)), solver.t(torch.tensor(sigma_min)),
                                             order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta,
                                             s_noise, noise_sampler)
    return (x, info) if return_info else x
