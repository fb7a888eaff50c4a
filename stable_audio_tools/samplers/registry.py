"""The sampler registry: every sampler name that ``sample_k`` / ``sample_rf`` accept, and the Gradio lists.

One :class:`SamplerEntry` per name. ``family`` says which dispatcher runs it and with which call convention:

* ``"k"``: a sigma-parameterised sampler run by ``sample_k`` on a :class:`~.k_samplers.VDenoiser`; ``run(denoiser,
  x, sigmas, *, sigma_min, sigma_max, steps, extra_args, callback, disable)``, ``x`` already scaled to
  ``sigmas[0]``.
* ``"v"``: a time-parameterised v-objective sampler run by ``sample_k``; ``run(model_fn, x, *, steps, sigma_max,
  callback, disable_tqdm, extra_args)``, ``x`` already noised to ``sigma_max``.
* ``"rf"``: a rectified-flow sampler run by ``sample_rf``; ``run(model_fn, x, t, extra_args, callback,
  disable_tqdm)`` over the schedule ``schedule(steps, sigma_max, length, dist_shift)``.

``ui`` names the Gradio sampler lists the entry appears in (:data:`UI_LISTS`); lists keep registration order.
Adding a sampler is one function plus one :func:`register_sampler` call (see ``docs/architecture.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from . import k_samplers as K
from .dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from .flow_samplers import (DistributionShift, linear_time_schedule, sample, sample_rf_dpmpp_2m, sample_rf_euler,
                            sample_rf_pingpong, sample_rf_rk4)

__all__ = ["SamplerEntry", "SAMPLER_FAMILIES", "UI_LISTS", "SAMPLERS", "register_sampler", "get_sampler",
           "sampler_names", "rf_logsnr_schedule"]

SAMPLER_FAMILIES: Tuple[str, ...] = ("k", "v", "rf")
UI_LISTS: Dict[str, str] = {
    "v": "Gradio list of conditional v-objective models",
    "uncond": "Gradio list of unconditional models",
    "rectified_flow": "Gradio list of rectified-flow models",
    "rf_denoiser": "Gradio list of distilled rf_denoiser models",
}


@dataclass(frozen=True)
class SamplerEntry:
    """One registered sampler.

    Args:
        name (str): the ``sampler_type`` users pass.
        family (str): ``"k"``, ``"v"`` or ``"rf"`` (call convention and dispatcher, see the module docstring).
        run (Callable): the function that samples.
        ui (Tuple[str, ...]): Gradio lists (keys of :data:`UI_LISTS`) that offer it; default none.
        schedule (Optional[Callable]): ``"rf"`` only: ``schedule(steps, sigma_max, length, dist_shift)`` returning
            the decreasing time grid; default :func:`rf_logsnr_schedule`.
    """

    name: str
    family: str
    run: Callable[..., torch.Tensor]
    ui: Tuple[str, ...] = ()
    schedule: Optional[Callable[..., torch.Tensor]] = None


SAMPLERS: Dict[str, SamplerEntry] = {}


def register_sampler(name: str, family: str, run: Callable[..., torch.Tensor], ui: Tuple[str, ...] = (),
                     schedule: Optional[Callable[..., torch.Tensor]] = None) -> SamplerEntry:
    """Add a sampler under ``name`` (see :class:`SamplerEntry` for the arguments); returns the entry.

    Raises ValueError for a name already registered, an unknown ``family`` or ``ui`` list, or a ``schedule`` on a
    non-``"rf"`` sampler."""
    if name in SAMPLERS:
        raise ValueError(f"sampler {name!r} is already registered; pick another name")
    if family not in SAMPLER_FAMILIES:
        raise ValueError(f"sampler {name!r}: family {family!r} is not one of {', '.join(SAMPLER_FAMILIES)}")
    unknown = [u for u in ui if u not in UI_LISTS]
    if unknown:
        raise ValueError(f"sampler {name!r}: unknown ui list(s) {', '.join(unknown)}; known: {', '.join(UI_LISTS)}")
    if schedule is not None and family != "rf":
        raise ValueError(f"sampler {name!r}: only 'rf' samplers take a schedule")
    if family == "rf" and schedule is None:
        schedule = _logsnr_schedule
    entry = SamplerEntry(name, family, run, tuple(ui), schedule)
    SAMPLERS[name] = entry
    return entry


def get_sampler(name: str) -> Optional[SamplerEntry]:
    """The entry registered as ``name``, or None."""
    return SAMPLERS.get(name)


def sampler_names(family: Optional[Tuple[str, ...]] = None, ui: Optional[str] = None) -> Tuple[str, ...]:
    """Registered names in registration order, restricted to the families in ``family`` and/or the Gradio list
    ``ui`` when given."""
    return tuple(e.name for e in SAMPLERS.values()
                 if (family is None or e.family in family) and (ui is None or ui in e.ui))


def rf_logsnr_schedule(steps: int, sigma_max: float = 1.0) -> torch.Tensor:
    """Rectified-flow time schedule used by ``sample_rf``: ``t = sigmoid(-linspace(logsnr_max, 2, steps + 1))``
    with ``logsnr_max = log((1 - sigma_max) / sigma_max + 1e-6)`` (``-6`` when ``sigma_max >= 1``),
    ``t[0] = sigma_max`` and ``t[-1] = 0``."""
    logsnr_max = math.log((1 - sigma_max) / sigma_max + 1e-6) if sigma_max < 1 else -6
    t = torch.sigmoid(-torch.linspace(logsnr_max, 2, steps + 1))
    t[0] = sigma_max
    t[-1] = 0
    return t


def _logsnr_schedule(steps: int, sigma_max: float, length: int,
                     dist_shift: Optional[DistributionShift]) -> torch.Tensor:
    return rf_logsnr_schedule(steps, sigma_max)


def _schedule_sampler(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A k-diffusion sampler ``fn(denoiser, x, sigmas, extra_args, callback, disable)`` in the ``"k"`` convention."""
    def run(denoiser, x, sigmas, *, sigma_min, sigma_max, steps, **common: Any) -> torch.Tensor:
        return fn(denoiser, x, sigmas, **common)
    run.__doc__ = f"``{fn.__name__}`` over the polyexponential schedule."
    return run


def _dpm_fast(denoiser, x, sigmas, *, sigma_min, sigma_max, steps, **common: Any) -> torch.Tensor:
    """DPM-Solver with ``steps`` fixed steps between ``sigma_min`` and ``sigma_max``."""
    return sample_dpm_fast(denoiser, x, sigma_min, sigma_max, steps, **common)


def _dpm_adaptive(denoiser, x, sigmas, *, sigma_min, sigma_max, steps, **common: Any) -> torch.Tensor:
    """Adaptive DPM-Solver (rtol = atol = 0.01) between ``sigma_min`` and ``sigma_max``."""
    return sample_dpm_adaptive(denoiser, x, sigma_min, sigma_max, rtol=0.01, atol=0.01, **common)


def _v_ddim(model_fn, x, *, steps, sigma_max, callback, disable_tqdm, extra_args) -> torch.Tensor:
    """v-DDIM (eta = 0) from time ``sigma_max``."""
    return sample(model_fn, x, steps, eta=0.0, sigma_max=sigma_max, callback=callback, disable_tqdm=disable_tqdm,
                  **extra_args)


def _v_ddim_cfgpp(model_fn, x, *, steps, sigma_max, callback, disable_tqdm, extra_args) -> torch.Tensor:
    """v-DDIM with CFG++ re-noising from time ``sigma_max``."""
    return sample(model_fn, x, steps, eta=0.0, sigma_max=sigma_max, cfg_pp=True, callback=callback,
                  disable_tqdm=disable_tqdm, **extra_args)


def _linear_schedule(steps: int, sigma_max: float, length: int,
                     dist_shift: Optional[DistributionShift]) -> torch.Tensor:
    return linear_time_schedule(steps, sigma_max, length, dist_shift)


# Built-in samplers. Registration order is the Gradio order (and the order of the *_SAMPLER_TYPES tuples).
_BOTH = ("v", "uncond")
register_sampler("dpmpp-2m-sde", "k", _schedule_sampler(K.sample_dpmpp_2m_sde), ui=_BOTH)
register_sampler("dpmpp-3m-sde", "k", _schedule_sampler(K.sample_dpmpp_3m_sde), ui=_BOTH)
register_sampler("dpmpp-2m", "k", _schedule_sampler(K.sample_dpmpp_2m), ui=("v",))
register_sampler("k-heun", "k", _schedule_sampler(K.sample_heun), ui=_BOTH)
register_sampler("k-lms", "k", _schedule_sampler(K.sample_lms), ui=_BOTH)
register_sampler("k-dpmpp-2s-ancestral", "k", _schedule_sampler(K.sample_dpmpp_2s_ancestral), ui=_BOTH)
register_sampler("k-dpm-2", "k", _schedule_sampler(K.sample_dpm_2), ui=_BOTH)
register_sampler("k-dpm-adaptive", "k", _dpm_adaptive, ui=("v",))
register_sampler("k-dpm-fast", "k", _dpm_fast, ui=_BOTH)
register_sampler("v-ddim", "v", _v_ddim, ui=("v",))
register_sampler("v-ddim-cfgpp", "v", _v_ddim_cfgpp, ui=("v",))
register_sampler("euler", "rf", sample_rf_euler, ui=("rectified_flow",))
register_sampler("rk4", "rf", sample_rf_rk4, ui=("rectified_flow",), schedule=_linear_schedule)
register_sampler("dpmpp", "rf", sample_rf_dpmpp_2m, ui=("rectified_flow",))
register_sampler("pingpong", "rf", sample_rf_pingpong, ui=("rf_denoiser",))
