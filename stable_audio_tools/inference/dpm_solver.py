"""Upstream's module path for the DPM-Solver samplers, which live in :mod:`stable_audio_tools.samplers.dpm_solver`
(below models); every name is importable from here."""
from ..samplers.dpm_solver import DPMSolver, PIDStepSizeController, sample_dpm_adaptive, sample_dpm_fast

__all__ = [
    "PIDStepSizeController", "DPMSolver", "sample_dpm_fast", "sample_dpm_adaptive"
]
