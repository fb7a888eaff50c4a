"""Pure samplers (below models): k-diffusion samplers (:mod:`.k_samplers`, :mod:`.dpm_solver`), v-DDIM and
rectified-flow samplers (:mod:`.flow_samplers`), the sampler registry (:mod:`.registry`) and the ``sample_k`` /
``sample_rf`` dispatchers (:mod:`.dispatch`). Nothing here imports the rest of the package."""
from .dispatch import (DistributionShift, get_alphas_sigmas, get_bmask, sample, sample_k, sample_rf,
                       sample_timesteps_logsnr, truncated_logistic_normal_rescaled)
from .registry import SAMPLERS, SamplerEntry, get_sampler, register_sampler, sampler_names

__all__ = ["DistributionShift", "get_alphas_sigmas", "get_bmask", "sample", "sample_k", "sample_rf",
           "sample_timesteps_logsnr", "truncated_logistic_normal_rescaled", "SAMPLERS", "SamplerEntry",
           "get_sampler", "register_sampler", "sampler_names"]
