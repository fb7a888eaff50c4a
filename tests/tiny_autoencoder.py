"""A tiny trainable autoencoder config (one Oobleck block each side, a VAE bottleneck, MRSTFT + L1 losses) shared
by the tests that need a real but fast training wrapper."""
import copy
from typing import Any, Dict


_TINY_AE: Dict[str, Any] = {
    "model_type": "autoencoder", "sample_size": 512, "sample_rate": 8000, "audio_channels": 1,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 2, "c_mults": [1], "strides": [4],
                                                   "latent_dim": 4}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 2, "c_mults": [1], "strides": [4],
                                                   "latent_dim": 2, "final_tanh": False}},
        "bottleneck": {"type": "vae"}, "latent_dim": 2, "downsampling_ratio": 4, "io_channels": 1,
    },
    "training": {"learning_rate": 1e-3, "use_ema": False,
                 "loss_configs": {"spectral": {"type": "mrstft", "config": {"fft_sizes": [64], "hop_sizes": [16],
                                                                            "win_lengths": [64]},
                                               "weights": {"mrstft": 1.0}},
                                  "time": {"type": "l1", "weights": {"l1": 0.1}}},
                 "demo": {"demo_every": 1000}},
}


def tiny_autoencoder_config(**top_level: Any) -> Dict[str, Any]:
    """A fresh copy of the config; ``top_level`` keys (``sample_rate``, ``sample_size``...) replace its own, and
    ``use_ema`` sets ``training.use_ema``."""
    config = copy.deepcopy(_TINY_AE)
    config["training"]["use_ema"] = top_level.pop("use_ema", False)
    config.update(top_level)
    return config
