"""Write a small synthetic audio dataset (tones, chirps, noise bursts) for smoke-test training runs.

    python scripts/make_toy_dataset.py toy_data --num-files 32 --seconds 2 --sample-rate 16000

Files are named after what they hold (``0000_tone.wav``, ``0001_chirp.wav``, ``0002_noise.wav`` ...);
``stable_audio_tools/configs/dataset_configs/custom_metadata/toy_prompts.py`` turns the name into a text prompt
(used by ``configs/dataset_configs/toy_dataset.json``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Tuple

import numpy as np
import soundfile as sf


KINDS = ("tone", "chirp", "noise")


def make_clip(rng: np.random.Generator, seconds: float, sample_rate: int, channels: int) -> Tuple[str, np.ndarray]:
    """One clip: ``(kind, audio [samples, channels] float32)``, kind one of :data:`KINDS`."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    kind = rng.integers(3)
    if kind == 0:
        f0 = rng.uniform(80, 1000)
        audio = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
    elif kind == 1:
        f0, f1 = rng.uniform(100, 3000, size=2)
        audio = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
    else:
        audio = rng.normal(size=t.shape) * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0)
    audio = audio / (np.abs(audio).max() + 1e-9) * rng.uniform(0.2, 0.8)
    stereo = np.stack([audio * rng.uniform(0.5, 1.0) for _ in range(channels)], axis=1)
    return KINDS[kind], stereo.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output directory (e.g. toy_data)")
    parser.add_argument("--num-files", type=int, default=32, help="number of clips (default: 32)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each clip in seconds (default: 2)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the files (default: 16000)")
    parser.add_argument("--channels", type=int, default=1, help="channels per file (default: 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random clip kinds, pitches and levels (default: 0)")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.num_files):
        kind, audio = make_clip(rng, args.seconds, args.sample_rate, args.channels)
        sf.write(out / f"{i:04d}_{kind}.wav", audio, args.sample_rate)
    print(f"wrote {args.num_files} files to {out}")


if __name__ == "__main__":
    main()
