"""Audio LM generation speed with and without the KV cache.

    python bench/bench_lm.py [--config bench/configs/lm_small.json] [--frames 128] [--batch-size 2]
                             [--cfg-scale 3] [--repeats 3] [--threads 2] [--device cpu]

Generates ``--frames`` code frames (delay pattern: ``frames + num_quantizers`` decoding steps) for a
small LM (default: 6 layers x 384 wide over a 4 x 1024 DAC-RVQ autoencoder) and prints the median
time and generated tokens per second (``batch x codebooks x frames / seconds``), with the per-layer
KV cache (``use_cache=True``, incremental decoding) and without it (the whole prefix is recomputed at
every step, which is what upstream does). Greedy tokens are checked to be identical in both modes.

``time_generation(model, ...)`` is importable for other benchmarks.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "bench" / "configs" / "lm_small.json"


def build_model(config_path: Path = DEFAULT_CONFIG, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """The LM of ``config_path`` with random weights, in eval mode on ``device``."""
    from stable_audio_tools.models.factory import create_model_from_config

    torch.manual_seed(seed)
    model = create_model_from_config(json.loads(Path(config_path).read_text()))
    return model.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generation(model: torch.nn.Module, frames: int = 128, batch_size: int = 2, use_cache: bool = True,
                    cfg_scale: float = 1.0, repeats: int = 3, conditioning: Optional[list] = None,
                    **generate_kwargs) -> Dict[str, float]:
    """Median wall time of ``model.generate`` (after one warm-up) and the derived rates.

    Returns ``{"seconds", "tokens_per_s", "steps_per_s", "frames_per_s"}``; tokens count every
    generated code (``batch x num_quantizers x frames``), steps the LM forward passes.
    """
    device = next(model.parameters()).device
    if conditioning is None and model.conditioner is not None:
        conditioning = [{"seconds_total": 10.0}] * batch_size
    kwargs = dict(max_gen_len=frames, batch_size=batch_size, conditioning=conditioning, use_cache=use_cache,
                  cfg_scale=cfg_scale, disable_tqdm=True, seed=0, **generate_kwargs)
    steps = []
    kwargs["callback"] = lambda step, total: steps.append(total)

    def run() -> float:
        _sync(device)
        t0 = time.perf_counter()
        model.generate(**kwargs)
        _sync(device)
        return time.perf_counter() - t0

    run()
    seconds = statistics.median(run() for _ in range(repeats))
    tokens = batch_size * model.num_quantizers * frames
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "steps_per_s": steps[-1] / seconds,
            "frames_per_s": batch_size * frames / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--frames", type=int, default=128, help="code frames to generate")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cfg-scale", type=float, default=3.0, help="!= 1 doubles the batch (batched CFG)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    model = build_model(Path(args.config), args.device)
    params = sum(p.numel() for p in model.lm.parameters())
    with torch.no_grad():
        greedy = {c: model.generate(max_gen_len=min(args.frames, 32), batch_size=1, temp=0, use_cache=c,
                                    conditioning=[{"seconds_total": 10.0}] if model.conditioner else None,
                                    disable_tqdm=True) for c in (True, False)}
    same = torch.equal(greedy[True], greedy[False])
    rows = {}
    for label, cache in (("KV cache", True), ("no cache (upstream)", False)):
        rows[label] = time_generation(model, args.frames, args.batch_size, cache, args.cfg_scale, args.repeats,
                                      top_k=250)
    print(f"\naudio LM generation: {Path(args.config).name} ({params / 1e6:.1f}M LM params, "
          f"{model.num_quantizers} codebooks x {model.codebook_size}), {args.frames} frames, batch {args.batch_size}, "
          f"cfg {args.cfg_scale}, device {args.device}, torch {torch.__version__}, {args.threads} threads")
    print(f"greedy tokens identical with and without cache: {same}")
    header = f"| {'mode':<20} | {'seconds':>8} | {'tokens/s':>9} | {'steps/s':>8} | {'frames/s':>9} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for label, r in rows.items():
        print(f"| {label:<20} | {r['seconds']:>8.3f} | {r['tokens_per_s']:>9.1f} | {r['steps_per_s']:>8.1f} | "
              f"{r['frames_per_s']:>9.1f} |")
    speedup = rows["no cache (upstream)"]["seconds"] / rows["KV cache"]["seconds"]
    print(f"KV cache speedup: {speedup:.2f}x")


if __name__ == "__main__":
    main()
