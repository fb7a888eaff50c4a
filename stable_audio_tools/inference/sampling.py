"""Upstream's sampling module path: the samplers, the sampler registry and the ``sample_k`` / ``sample_rf``
dispatchers live in :mod:`stable_audio_tools.samplers` (below models, which use them); every name is importable
from here, so ``from stable_audio_tools.inference.sampling import sample, sample_k, DistributionShift`` works as
upstream."""
from ..samplers.dispatch import (alpha_sigma_to_t, BrownianTreeNoiseSampler, DistributionShift, get_alphas_sigmas,
                                 get_bmask, get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential,
                                 K_SAMPLER_TYPES, make_cond_model_fn, make_cond_velocity_fn, rf_logsnr_schedule,
                                 RF_SAMPLER_TYPES, sample, sample_discrete_euler, sample_flow_dpmpp,
                                 sample_flow_pingpong, sample_k, sample_rf, sample_rf_dpmpp_2m, sample_rf_euler,
                                 sample_rf_pingpong, sample_rf_rk4, sample_rk4, sample_timesteps_logsnr,
                                 sample_v_ddim, t_to_alpha_sigma, truncated_logistic_normal_rescaled, V_SAMPLER_TYPES,
                                 VDenoiser)

__all__ = [
    "get_alphas_sigmas", "alpha_sigma_to_t", "t_to_alpha_sigma", "DistributionShift", "sample_timesteps_logsnr",
    "truncated_logistic_normal_rescaled", "get_bmask", "make_cond_model_fn", "make_cond_velocity_fn", "sample_k",
    "sample_rf", "sample", "sample_discrete_euler", "sample_rk4", "sample_flow_dpmpp", "sample_flow_pingpong",
    "sample_v_ddim", "sample_rf_euler", "sample_rf_rk4", "sample_rf_dpmpp_2m", "sample_rf_pingpong",
    "get_sigmas_polyexponential", "get_sigmas_karras", "get_sigmas_exponential", "rf_logsnr_schedule", "VDenoiser",
    "BrownianTreeNoiseSampler", "K_SAMPLER_TYPES", "V_SAMPLER_TYPES", "RF_SAMPLER_TYPES"
]
