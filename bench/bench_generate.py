"""Generation cost against the asked length, and the memory of decoding long outputs.

    python bench/bench_generate.py [--models sao-1.0 sao-small] [--seconds 5 11 47] [--steps 2] [--depth N]
                                   [--decode-seconds 180] [--decode-ae sao|tiny] [--device cpu|cuda]

Part 1 samples latents (``return_latents=True``, random weights, precomputed random conditioning, no T5) for each
asked length twice: the new path (the shortest valid latent length covering the seconds, what ``generate.py`` and
the Gradio page do) and upstream's full window (``sample_size``, then trimmed). Lengths beyond a model's window
(47 s for Stable Audio Open Small, 11.9 s) run only on the new path. ``--depth`` shrinks the transformer for
machines where the real depth is too slow; costs stay proportional.

Part 2 decodes ``--decode-seconds`` of random latents through the autoencoder in a fresh process each, in one go
and chunked (``decode_chunked``, 128-frame windows overlapping by 32), and reports the peak memory (CUDA: peak
allocated; CPU: growth of the process's peak resident size).
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"sao-1.0": "stable_audio_open_1_0.json", "sao-small": "stable_audio_open_small.json"}


def released_config(name: str, depth: int = 0) -> dict:
    path = ROOT / "stable_audio_tools" / "configs" / "model_configs" / "released" / CONFIGS[name]
    config = json.loads(path.read_text())
    if depth:
        config["model"]["diffusion"]["config"]["depth"] = depth
    return config


def random_conditioning(model, config: dict, seconds: float, device) -> dict:
    """Conditioner outputs without running T5: random prompt tokens, real number embeddings."""
    tensors = {}
    for item in config["model"]["conditioning"]["configs"]:
        key = item["id"]
        if item["type"] == "t5":
            length = item["config"].get("max_length", 128)
            dim = config["model"]["conditioning"]["cond_dim"]
            tensors[key] = [torch.randn(1, length, dim, device=device), torch.ones(1, length, device=device)]
        else:
            value = 0.0 if key == "seconds_start" else seconds
            tensors[key] = model.conditioner.conditioners[key]([value], device)
    return tensors


def time_call(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_lengths(name: str, seconds_list, steps: int, depth: int, repeats: int, device) -> None:
    from stable_audio_tools.inference.generation import generate_diffusion_cond
    from stable_audio_tools.inference.lengths import plan_length
    from stable_audio_tools.models.factory import create_model_from_config

    config = released_config(name, depth)
    torch.manual_seed(0)
    model = create_model_from_config(config).to(device).eval().requires_grad_(False)
    objective = config["model"]["diffusion"].get("diffusion_objective", "v")
    sampler = {"sampler_type": "dpmpp-3m-sde"} if objective == "v" else {"sampler_type": "pingpong"}
    window = config["sample_size"] / config["sample_rate"]
    depth_note = f"depth {config['model']['diffusion']['config']['depth']}"
    print(f"\n{name} ({depth_note}, window {window:.1f} s, {steps} steps, cfg 7, batch 1, {device})")
    print(f"{'seconds':>8} {'latents':>8} {'new path s':>11} {'full window s':>14} {'new / full':>11}")
    full_time = None
    for seconds in seconds_list:
        plan = plan_length(model, config, seconds)
        cond = random_conditioning(model, config, min(seconds, window), device)

        def run(sample_size):
            generate_diffusion_cond(model, steps=steps, cfg_scale=7.0, conditioning_tensors=cond,
                                    sample_size=sample_size, seed=1, return_latents=True, disable_tqdm=True,
                                    **sampler)

        run(plan.sample_size)  # warm-up
        new = time_call(lambda: run(plan.sample_size), repeats)
        if seconds <= window:
            if full_time is None:
                run(config["sample_size"])  # warm-up
                full_time = time_call(lambda: run(config["sample_size"]), repeats)
            print(f"{seconds:8.1f} {plan.latent_length:8d} {new:11.3f} {full_time:14.3f} {new / full_time:10.1%}")
        else:
            print(f"{seconds:8.1f} {plan.latent_length:8d} {new:11.3f} {'(beyond window)':>14} {'-':>11}")


def _peak_rss() -> float:
    """Peak resident size of this process in MiB (Linux ``VmHWM``, else ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> float:
    """Reset the peak to the current resident size where Linux allows it; returns the baseline in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _peak_rss()


def decode_child(ae: str, seconds: float, chunked: bool, device: str) -> None:
    """Runs in a fresh process: decode random latents, print peak memory in MiB as JSON."""
    from stable_audio_tools.inference.utils import decode_latents
    from stable_audio_tools.models.factory import create_model_from_config

    if ae == "sao":
        config = released_config("sao-1.0")
        pretransform_config = {"model_type": "autoencoder", "sample_rate": config["sample_rate"],
                               "model": copy.deepcopy(config["model"]["pretransform"]["config"])}
    else:
        pretransform_config = json.loads((ROOT / "stable_audio_tools" / "configs" / "model_configs" / "autoencoders"
                                          / "tiny_oobleck_vae.json").read_text())
    torch.manual_seed(0)
    autoencoder = create_model_from_config(pretransform_config).to(device).eval().requires_grad_(False)
    ratio = autoencoder.downsampling_ratio
    frames = int(seconds * pretransform_config["sample_rate"] / ratio)
    latents = torch.randn(1, autoencoder.latent_dim, frames, device=device)
    before = _reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        audio = decode_latents(autoencoder, latents, chunked=chunked, chunk_size=128, overlap=32)
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda")
            else _peak_rss() - before)
    print(json.dumps({"frames": frames, "samples": int(audio.shape[-1]), "peak_mib": peak, "seconds": elapsed}))


def bench_decode(ae: str, seconds: float, device: str) -> None:
    print(f"\ndecoding {seconds:g} s of latents ({ae} autoencoder, {device}), each in a fresh process")
    print(f"{'mode':>8} {'frames':>8} {'peak MiB':>10} {'time s':>8}")
    for chunked in (False, True):
        result = subprocess.run([sys.executable, __file__, "--decode-child", ae, "--decode-seconds", str(seconds),
                                 "--device", device] + (["--chunked"] if chunked else []),
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{'chunked' if chunked else 'one go':>8} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        data = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{'chunked' if chunked else 'one go':>8} {data['frames']:8d} {data['peak_mib']:10.0f} "
              f"{data['seconds']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="model sizes to time (default: both)")
    parser.add_argument("--seconds", nargs="+", type=float, default=[5, 11, 47], help="asked lengths (default: 5 11 47)")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps (default: 2)")
    parser.add_argument("--depth", type=int, default=0, help="override the transformer depth (default: the real one)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case, median (default: 1)")
    parser.add_argument("--decode-seconds", type=float, default=180.0,
                        help="seconds of latents to decode (default: 180); 0 skips the decode part")
    parser.add_argument("--decode-ae", choices=["sao", "tiny"], default="sao",
                        help="autoencoder: Stable Audio Open 1.0's or the tiny test VAE (default: sao)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--decode-child", choices=["sao", "tiny"], help=argparse.SUPPRESS)
    parser.add_argument("--chunked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.decode_child:
        decode_child(args.decode_child, args.decode_seconds, args.chunked, args.device)
        return
    for name in args.models:
        bench_lengths(name, args.seconds, args.steps, args.depth, args.repeats, torch.device(args.device))
    if args.decode_seconds > 0:
        bench_decode(args.decode_ae, args.decode_seconds, args.device)


if __name__ == "__main__":
    main()
