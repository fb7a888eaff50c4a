"""Latent DiT speed: training step (pre-encoded latents, through the Lightning wrapper), forward, generation.

    python bench/bench_dit.py [--config bench/configs/dit_44m_latent.json] [--steps 6] [--threads 2]

Prints our median seconds (float32). Upstream stable-audio-tools 0.0.19 is timed live beside ours, interleaved and
with the same weights, by ``bench/bench_compare.py`` (rows ``train``, ``forward``, ``dpmpp``, ``euler``).
Generation: 11.9 s of audio = 256 latents, batch 1, cfg 7, with and without decoding through the VAE pretransform.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEASURES = ("train step (batch 2)", "forward (batch 2)", "dpmpp-3m-sde 20 steps, latents",
            "dpmpp-3m-sde 20 steps, with decode", "euler 8 steps, latents", "euler 8 steps, with decode")
LATENTS = 256


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_training(config: dict, steps: int) -> float:
    import pytorch_lightning as pl

    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.training import create_training_wrapper_from_config

    torch.manual_seed(0)
    model = create_model_from_config(config)
    wrapper = create_training_wrapper_from_config(config, model)
    meta = {"seconds_start": 0.0, "seconds_total": 11.9, "padding_mask": torch.ones(LATENTS)}
    data = [(torch.randn(config["model"]["io_channels"], LATENTS), dict(meta)) for _ in range(2 * (steps + 3))]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=lambda b: (
        torch.stack([x for x, _ in b]), tuple(m for _, m in b)))
    times = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *args):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step > 2:
                times.append(time.perf_counter() - self.t0)

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps + 2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    trainer.fit(wrapper, loader)
    return statistics.median(times)


@torch.no_grad()
def time_inference(config: dict, repeats: int) -> dict:
    from stable_audio_tools.inference.generation import generate_diffusion_cond
    from stable_audio_tools.models.factory import create_model_from_config

    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    cond = [{"seconds_start": 0.0, "seconds_total": 11.9}] * 2
    tensors = model.conditioner(cond, "cpu")
    x = torch.randn(2, config["model"]["io_channels"], LATENTS)
    t = torch.tensor([0.3, 0.7])
    results = {"forward (batch 2)": median_time(lambda: model(x, t, tensors), repeats)}
    sample_size = LATENTS * model.pretransform.downsampling_ratio
    for name, kwargs in (("dpmpp-3m-sde 20 steps", dict(steps=20, sampler_type="dpmpp-3m-sde", sigma_min=0.3,
                                                        sigma_max=500)),
                         ("euler 8 steps", dict(steps=8, sampler_type="euler"))):
        if name.startswith("euler"):
            model.diffusion_objective = "rectified_flow"  # same network, rectified-flow sampler
        for decode in (False, True):
            label = f"{name}, {'with decode' if decode else 'latents'}"
            results[label] = median_time(lambda: generate_diffusion_cond(
                model, cfg_scale=7, conditioning=cond[:1], batch_size=1, sample_size=sample_size, seed=1,
                device="cpu", return_latents=not decode, disable_tqdm=True, **kwargs), max(1, repeats // 2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "bench" / "configs" / "dit_44m_latent.json"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from stable_audio_tools.allocator import tune_malloc

    tune_malloc()  # as our root scripts do
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "stable_audio_tools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    config = json.loads(Path(args.config).read_text())
    results = {"train step (batch 2)": time_training(config, args.steps)}
    results.update(time_inference(config, args.repeats))
    print(f"\nDiT benchmark: {Path(args.config).name}, torch {torch.__version__}, {args.threads} threads, "
          f"median seconds (float32)")
    print(f"| {'what':<34} | ours  |")
    print(f"|{'-' * 36}|-------|")
    for what in MEASURES:
        print(f"| {what:<34} | {results[what]:.3f} |")
    print("\nUpstream, timed live and interleaved with ours: python bench/bench_compare.py --upstream DIR "
          "--rows train,forward,dpmpp,euler")


if __name__ == "__main__":
    main()
