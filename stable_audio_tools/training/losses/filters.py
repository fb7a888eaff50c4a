"""Fixed filters of the spectral losses (windows, mel / chroma filterbanks, A-weighting FIR).

They live in :mod:`stable_audio_tools.data.filters`, below training, so that :mod:`stable_audio_tools.metrics`
shares them; this module keeps the old import path.
"""
from ...data import filters as _filters
from ...data.filters import (a_weighting_fir_taps, chroma_filterbank, get_window, hz_to_mel, mel_filterbank,
                             mel_to_hz)

__all__ = list(_filters.__all__)
