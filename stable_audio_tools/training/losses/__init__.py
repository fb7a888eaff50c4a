"""Training losses: weighted loss modules (:mod:`.losses`), auraloss-compatible spectral losses (:mod:`.auraloss`),
the fixed filters they use (:mod:`.filters`), MMD and loss-weighting utilities (:mod:`.utils`), the semantic feature
loss (:mod:`.semantic`) and validation metrics (:mod:`.metrics`).

As from upstream's package (which star-imports ``losses``, ``metrics``, ``semantic`` and ``utils``), every public
loss, metric and utility is importable from here.
"""
from .auraloss import (FIRFilter, MelSTFTLoss, MultiResolutionSTFTLoss, SDSDRLoss, SISDRLoss, SpectralConvergenceLoss,
                       STFTLoss, STFTMagnitudeLoss, SumAndDifference, SumAndDifferenceSTFTLoss)
from .filters import a_weighting_fir_taps, chroma_filterbank, mel_filterbank
from .losses import (AuralossLoss, L1Loss, LossModule, LossWithTarget, MelSpectrogramLoss, MSELoss, MultiLoss,
                     MultiScaleMelSpectrogramLoss, StereoImageLoss, TargetValueLoss, TimeDomainMMDLoss, ValueLoss)
from .metrics import PESQMetric
from .semantic import HubertLoss, fold_channels_into_batch
from .utils import (DynamicLossWeighting, flat_pairwise_sq_distance, grouped_mmd, mmd, mmd_loss_flat,
                    multi_bandwidth_kernel_2d)

__all__ = [
    "AuralossLoss",
    "DynamicLossWeighting",
    "FIRFilter",
    "HubertLoss",
    "L1Loss",
    "LossModule",
    "LossWithTarget",
    "MelSpectrogramLoss",
    "MelSTFTLoss",
    "MSELoss",
    "MultiLoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelSpectrogramLoss",
    "PESQMetric",
    "SDSDRLoss",
    "SISDRLoss",
    "SpectralConvergenceLoss",
    "STFTLoss",
    "STFTMagnitudeLoss",
    "StereoImageLoss",
    "SumAndDifference",
    "SumAndDifferenceSTFTLoss",
    "TargetValueLoss",
    "TimeDomainMMDLoss",
    "ValueLoss",
    "a_weighting_fir_taps",
    "chroma_filterbank",
    "flat_pairwise_sq_distance",
    "fold_channels_into_batch",
    "grouped_mmd",
    "mel_filterbank",
    "mmd",
    "mmd_loss_flat",
    "multi_bandwidth_kernel_2d",
]
