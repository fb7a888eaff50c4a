"""Audio language model training speed: one optimizer step through the Lightning wrapper.

    python bench/bench_lm_train.py [--steps 8] [--threads 2] [--frames 256] [--batch-size 4] [--depth 4]

A small LM (continuous_transformer backbone, ``delay`` pattern, 4 codebooks of 1024 tokens) over a small
``dac_rvq`` autoencoder pretransform. Prints a table of median seconds per training step and codebook frames
per second for: pre-encoded tokens (LM only) in float32 and bf16 autocast, and audio tokenized on the fly by
the pretransform. Upstream stable-audio-tools 0.0.19 cannot train this model type (its LM backbone crashes,
SPEC 9.3 item 4), so there is no upstream column.
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATIO = 64
AUTOENCODER = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 16, "c_mults": [1, 2, 4],
                                               "strides": [4, 4, 4], "latent_dim": 32}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 16, "c_mults": [1, 2, 4],
                                               "strides": [4, 4, 4], "latent_dim": 32}},
    "bottleneck": {"type": "dac_rvq", "config": {"input_dim": 32, "n_codebooks": 4, "codebook_size": 1024,
                                                 "codebook_dim": 8}},
    "latent_dim": 32, "downsampling_ratio": RATIO, "io_channels": 1,
}


def lm_config(frames: int, depth: int, embed_dim: int, pre_encoded: bool) -> Dict[str, Any]:
    """A mono 16 kHz LM config whose crops are ``frames`` codebook frames long."""
    return {
        "model_type": "lm", "sample_size": frames * RATIO, "sample_rate": 16000, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": copy.deepcopy(AUTOENCODER)},
            "lm": {"type": "continuous_transformer", "codebook_pattern": "delay",
                   "config": {"embed_dim": embed_dim, "depth": depth, "dim_heads": 64}},
        },
        "training": {"learning_rate": 1e-4, "pre_encoded": pre_encoded},
    }


def make_batches(config: Dict[str, Any], count: int, batch_size: int, pre_encoded: bool) -> List[Tuple[Any, Any]]:
    """``count`` collated batches: random tokens ``[B, 4, frames]`` or random audio ``[B, 1, samples]``."""
    frames = config["sample_size"] // RATIO
    batches = []
    for _ in range(count):
        if pre_encoded:
            data = torch.randint(0, 1024, (batch_size, 4, frames))
            metadata = tuple({"padding_mask": [torch.ones(frames)]} for _ in range(batch_size))
        else:
            data = (torch.randn(batch_size, 1, config["sample_size"]) * 0.3).clamp(-1, 1)
            metadata = tuple({"padding_mask": torch.ones(config["sample_size"])} for _ in range(batch_size))
        batches.append((data, metadata))
    return batches


def time_training(config: Dict[str, Any], steps: int, batch_size: int, precision: str, warmup: int = 2) -> float:
    """Median wall time of ``steps`` optimizer steps after ``warmup`` untimed ones."""
    import pytorch_lightning as pl

    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.training import create_training_wrapper_from_config

    torch.manual_seed(0)
    model = create_model_from_config(config)
    wrapper = create_training_wrapper_from_config(config, model)
    batches = make_batches(config, steps + warmup, batch_size, config["training"]["pre_encoded"])
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    times: List[float] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step > warmup:
                times.append(time.perf_counter() - self.t0)

    trainer = pl.Trainer(accelerator="auto", devices=1, max_steps=steps + warmup, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Timer()], precision=precision)
    trainer.fit(wrapper, loader)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=256, help="codebook frames per training item")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning_fabric",
                 "stable_audio_tools"):
        logging.getLogger(name).setLevel(logging.ERROR)

    variants = [("pre-encoded tokens, fp32", True, "32-true"),
                ("pre-encoded tokens, bf16-mixed", True, "bf16-mixed"),
                ("audio + tokenize, fp32", False, "32-true")]
    frames = args.batch_size * args.frames
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} threads"
    print(f"\nLM training benchmark: embed {args.embed_dim}, depth {args.depth}, 4 x 1024 codebooks, delay pattern, "
          f"batch {args.batch_size} x {args.frames} frames, torch {torch.__version__}, {device}")
    header = f"| {'variant':<32} | {'s / step (median)':>17} | {'frames / s':>10} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name, pre_encoded, precision in variants:
        config = lm_config(args.frames, args.depth, args.embed_dim, pre_encoded)
        seconds = time_training(config, args.steps, args.batch_size, precision)
        print(f"| {name:<32} | {seconds:>17.3f} | {frames / seconds:>10.0f} |", flush=True)


if __name__ == "__main__":
    main()
