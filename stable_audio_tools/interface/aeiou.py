"""Upstream's plotting module path: the helpers live in :mod:`stable_audio_tools.plotting` (below training and the
interface, which both use them); every name is importable from here as from upstream's ``interface/aeiou.py``."""
from ..plotting import (apply_colormap, audio_spectrogram_image, embeddings_table, mel_filterbank, mel_spectrogram,
                        pca_point_cloud, point_cloud, power_to_db, proj_pca, project_down, spectrogram_image,
                        tab20_color, tokens_spectrogram_image)

__all__ = [
    "apply_colormap", "tab20_color", "mel_filterbank", "mel_spectrogram", "power_to_db", "spectrogram_image",
    "audio_spectrogram_image", "tokens_spectrogram_image", "project_down", "proj_pca", "point_cloud",
    "pca_point_cloud", "embeddings_table",
]
