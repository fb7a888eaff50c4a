"""The v-DDIM and rectified-flow samplers live in :mod:`stable_audio_tools.samplers.flow_samplers` (below models);
every name is importable from here."""
from ..samplers.flow_samplers import (alpha_sigma_to_t, DistributionShift, get_alphas_sigmas, linear_time_schedule,
                                      sample, sample_discrete_euler, sample_flow_dpmpp, sample_flow_pingpong,
                                      sample_rf_dpmpp_2m, sample_rf_euler, sample_rf_pingpong, sample_rf_rk4,
                                      sample_rk4, sample_v_ddim, t_to_alpha_sigma)

__all__ = [
    "get_alphas_sigmas", "alpha_sigma_to_t", "t_to_alpha_sigma", "DistributionShift", "linear_time_schedule",
    "sample_v_ddim", "sample_rf_euler", "sample_rf_rk4", "sample_rf_dpmpp_2m", "sample_rf_pingpong", "sample",
    "sample_discrete_euler", "sample_rk4", "sample_flow_dpmpp", "sample_flow_pingpong"
]
