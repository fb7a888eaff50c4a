"""Training losses: weighted loss modules (:mod:`.losses`), auraloss-compatible spectral losses
(:mod:`.auraloss`) and the fixed filters they use (:mod:`.filters`)."""
from .auraloss import (FIRFilter, MelSTFTLoss, MultiResolutionSTFTLoss, SISDRLoss, STFTLoss, SumAndDifference,
                       SumAndDifferenceSTFTLoss)
from .filters import a_weighting_fir_taps, chroma_filterbank, mel_filterbank
from .losses import (AuralossLoss, L1Loss, LossModule, LossWithTarget, MelSpectrogramLoss, MSELoss, MultiLoss,
                     MultiScaleMelSpectrogramLoss, ValueLoss)

__all__ = [
    "AuralossLoss",
    "FIRFilter",
    "L1Loss",
    "LossModule",
    "LossWithTarget",
    "MelSpectrogramLoss",
    "MelSTFTLoss",
    "MSELoss",
    "MultiLoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelSpectrogramLoss",
    "SISDRLoss",
    "STFTLoss",
    "SumAndDifference",
    "SumAndDifferenceSTFTLoss",
    "ValueLoss",
    "a_weighting_fir_taps",
    "chroma_filterbank",
    "mel_filterbank",
]
