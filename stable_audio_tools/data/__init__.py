"""Datasets, dataloader factory and audio processing utilities."""
from .dataset import (SUPPORTED_DATASET_TYPES, LocalDatasetConfig, SampleDataset, collation_fn,
                      create_dataloader_from_config, get_audio_filenames)
from .utils import (AUDIO_EXTENSIONS, Mono, PadCrop, PadCrop_Normalized_T, PhaseFlipper, Stereo, VolumeNorm,
                    integrated_loudness, load_audio, prepare_audio, resample, set_audio_channels)

__all__ = [
    "SUPPORTED_DATASET_TYPES", "LocalDatasetConfig", "SampleDataset", "collation_fn", "create_dataloader_from_config",
    "get_audio_filenames", "AUDIO_EXTENSIONS", "Mono", "PadCrop", "PadCrop_Normalized_T", "PhaseFlipper", "Stereo",
    "VolumeNorm", "integrated_loudness", "load_audio", "prepare_audio", "resample", "set_audio_channels",
]
