"""Inference: diffusion samplers (:mod:`.sampling`, :mod:`.k_samplers`, :mod:`.flow_samplers`), generation entry
points (:mod:`.generation`) and audio/mask helpers (:mod:`.utils`)."""
from .generation import generate_diffusion_cond, generate_diffusion_cond_inpaint, generate_diffusion_uncond
from .sampling import DistributionShift, sample, sample_k, sample_rf

__all__ = ["generate_diffusion_cond", "generate_diffusion_cond_inpaint", "generate_diffusion_uncond",
           "DistributionShift", "sample", "sample_k", "sample_rf"]
