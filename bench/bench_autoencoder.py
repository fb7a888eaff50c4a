"""Autoencoder speed: training step (through the Lightning wrapper) and encode/decode times.

    python bench/bench_autoencoder.py [--config bench/configs/ae_oobleck32_vae.json] [--steps 8] [--threads 2]

Prints a table of our median seconds in three variants: the default settings (float32, same numerics as upstream),
without the Oobleck gradient checkpointing (same numerics, more memory), and bf16 autocast (different numerics).
Upstream stable-audio-tools 0.0.19 is timed live beside ours, interleaved, by ``bench/bench_compare.py`` (rows
``ae_train``, ``encode_short``, ``decode_short``, ``decode``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEASURES = ("train step", "encode 2 x 1 s", "decode 2 x 1 s", "decode 1 x 11.9 s")


def set_checkpointing(model_config: dict, enabled: bool) -> dict:
    cfg = json.loads(json.dumps(model_config))
    for part in ("encoder", "decoder"):
        cfg["model"][part]["config"]["gradient_checkpointing"] = enabled
    return cfg


def time_training(model_config: dict, steps: int, precision: str) -> float:
    import pytorch_lightning as pl

    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.training import create_training_wrapper_from_config

    torch.manual_seed(0)
    model = create_model_from_config(model_config)
    wrapper = create_training_wrapper_from_config(model_config, model)
    size, channels = model_config["sample_size"], model_config.get("audio_channels", 2)
    data = [(torch.randn(channels, size).clamp(-1, 1) * 0.3, {}) for _ in range(2 * (steps + 2))]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=lambda b: (torch.stack([x for x, _ in b]),
                                                                                   tuple(m for _, m in b)))
    times = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *args):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step > 2:  # skip warm-up steps
                times.append(time.perf_counter() - self.t0)

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps + 2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()],
                         precision=precision)
    trainer.fit(wrapper, loader)
    return statistics.median(times)


@torch.no_grad()
def time_inference(model_config: dict, repeats: int) -> dict:
    from stable_audio_tools.models.factory import create_model_from_config

    torch.manual_seed(0)
    model = create_model_from_config(model_config).eval()
    sr, ch = model_config["sample_rate"], model_config.get("audio_channels", 2)
    audio = torch.randn(2, ch, sr) * 0.3
    audio = audio[..., : audio.shape[-1] // model.downsampling_ratio * model.downsampling_ratio]
    latents = model.encode(audio)
    long_latents = torch.randn(1, model.latent_dim, 256)

    def median(fn):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    return {"encode 2 x 1 s": median(lambda: model.encode(audio)),
            "decode 2 x 1 s": median(lambda: model.decode(latents)),
            "decode 1 x 11.9 s": median(lambda: model.decode(long_latents))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "bench" / "configs" / "ae_oobleck32_vae.json"))
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed encode/decode repeats")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from stable_audio_tools.allocator import tune_malloc

    tune_malloc()  # as our root scripts do
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    config = json.loads(Path(args.config).read_text())

    rows = {"default (fp32, checkpointing)": {}, "fp32, no checkpointing": {}, "bf16-mixed": {}}
    rows["default (fp32, checkpointing)"]["train step"] = time_training(set_checkpointing(config, True), args.steps,
                                                                        "32-true")
    rows["fp32, no checkpointing"]["train step"] = time_training(set_checkpointing(config, False), args.steps,
                                                                 "32-true")
    rows["bf16-mixed"]["train step"] = time_training(set_checkpointing(config, False), args.steps, "bf16-mixed")
    rows["default (fp32, checkpointing)"].update(time_inference(config, args.repeats))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows["bf16-mixed"].update(time_inference(config, args.repeats))

    names = list(rows)
    print(f"\nautoencoder benchmark: {Path(args.config).name}, torch {torch.__version__}, {args.threads} threads, "
          f"median seconds")
    header = f"| {'what':<20} | " + " | ".join(f"{n:>29}" for n in names) + " |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for what in MEASURES:
        cells = " | ".join(f"{v:>29.3f}" if v is not None else f"{'-':>29}" for v in (rows[n].get(what) for n in names))
        print(f"| {what:<20} | {cells} |")
    print("\nUpstream, timed live and interleaved with ours: python bench/bench_compare.py --upstream DIR "
          "--rows ae_train,encode_short,decode_short,decode")


if __name__ == "__main__":
    main()
