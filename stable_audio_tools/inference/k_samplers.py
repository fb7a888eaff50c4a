"""Upstream's module path for the Karras-style samplers, which live in :mod:`stable_audio_tools.samplers.k_samplers`
(below models, which use them); every name is importable from here."""
from ..samplers.k_samplers import (append_dims, append_zero, BatchedBrownianTree, BrownianTreeNoiseSampler,
                                   default_noise_sampler, get_ancestral_step, get_sigmas_exponential,
                                   get_sigmas_karras, get_sigmas_polyexponential, linear_multistep_coeff,
                                   sample_dpm_2, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s_ancestral,
                                   sample_dpmpp_3m_sde, sample_heun, sample_lms, to_d, VDenoiser)

__all__ = [
    "append_dims", "append_zero", "get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential", "to_d",
    "get_ancestral_step", "default_noise_sampler", "BatchedBrownianTree", "BrownianTreeNoiseSampler", "VDenoiser",
    "sample_heun", "sample_dpm_2", "sample_lms", "linear_multistep_coeff", "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"
]
