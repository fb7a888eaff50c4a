"""Side-by-side speed of our exact and fast modes against upstream stable-audio-tools 0.0.19, interleaved A/B.

    python bench/bench_compare.py [--upstream /path/to/upstream_src] [--repeats 5] [--threads 2]
        [--config bench/configs/dit_44m_latent.json] [--rows forward,cfg,dpmpp,euler,decode]

Each side runs in its own worker process (the two packages share the name ``stable_audio_tools``) that builds
the same model from the same seed once; the parent then asks the workers for one timing at a time, alternating
the sides within every round, so load changes hit both alike. ``--upstream`` is a directory holding upstream's
``stable_audio_tools`` package (e.g. the unpacked wheel or sdist of ``pip download stable-audio-tools==0.0.19
--no-deps``) importable in this environment; when it cannot be imported (upstream needs torchaudio) the table says
why and shows our rows only. Rows (11.9 s = 256 latents, batch 1, cfg 7, float32 unless marked):

* ``forward``: DiT forward, batch 2, no CFG; ``cfg``: one backbone call with batch CFG (batch 1 -> 2);
* ``dpmpp``: dpmpp-3m-sde 20 steps to latents; ``euler``: rectified-flow euler 8 steps to latents;
* ``decode``: VAE decode of 256 latents.

Fast-mode columns: ``bf16`` (autocast, :mod:`stable_audio_tools.inference.precision`) and ``int8`` (dynamic
quantisation). The quality bound: exact vs fast decoded audio of a dpmpp-3m-sde 20-step generation from the same
seed and noise (SNR in dB, log-mel distance from :func:`stable_audio_tools.metrics.reconstruction.log_mel_distance`);
with upstream, the max |diff| of its exact latents against ours. Prints one markdown table of medians (seconds).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LATENTS = 256
ROWS = {"forward": "DiT forward (batch 2)", "cfg": "DiT forward with batch CFG", "dpmpp": "dpmpp-3m-sde 20 steps",
        "euler": "rectified-flow euler 8 steps", "decode": "VAE decode 11.9 s"}
FAST_ROWS = ("forward", "cfg", "dpmpp", "euler")  # the backbone rows (fast mode does not touch the VAE)
MODES = ("exact", "bf16", "int8")


# ----------------------------------------------------------------------------------------------------- worker side


def _import_side(side: str, upstream: Optional[str]) -> None:
    """Make ``import stable_audio_tools`` resolve to our checkout or to upstream's source directory."""
    if side == "ours":
        sys.path.insert(0, str(ROOT))
        return
    sys.path.insert(0, str(Path(upstream).resolve()))
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    # an editable install of ours is a meta-path finder that would win over sys.path
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]


def _perturb(backbone) -> None:
    """Add seeded N(0, 0.02) noise to every backbone weight, in name order (both sides get the same values): the
    zero-initialised output projections would otherwise make the blocks contribute nothing, hiding any error."""
    import torch

    gen = torch.Generator().manual_seed(1234)
    for _, param in sorted(backbone.named_parameters()):
        param.add_(torch.randn(param.shape, generator=gen) * 0.02)


class Worker:
    """Builds the models of one side and answers timing / output requests."""

    def __init__(self, side: str, config: Dict[str, Any]) -> None:
        import torch

        from stable_audio_tools.inference.generation import generate_diffusion_cond
        from stable_audio_tools.models.factory import create_model_from_config

        self.torch, self.generate = torch, generate_diffusion_cond
        torch.manual_seed(0)
        exact = create_model_from_config(config).eval().requires_grad_(False)
        _perturb(exact.model)
        self.models = {"exact": exact}
        if side == "ours":
            from stable_audio_tools.inference.precision import enable_fast_mode, quantize_int8

            self.models["bf16"] = enable_fast_mode(copy.deepcopy(exact))
            self.models["int8"] = quantize_int8(copy.deepcopy(exact))
        self.cond = [{"seconds_start": 0.0, "seconds_total": 11.9}]
        self.tensors = exact.conditioner(self.cond * 2, "cpu")
        self.tensors_1 = exact.conditioner(self.cond, "cpu")
        self.channels = config["model"]["io_channels"]
        self.sample_size = LATENTS * exact.pretransform.downsampling_ratio
        gen = torch.Generator().manual_seed(3)
        self.x = torch.randn(2, self.channels, LATENTS, generator=gen)
        self.t = torch.tensor([0.3, 0.7])
        self.latents = torch.randn(1, self.channels, LATENTS, generator=gen)

    def _backbone_call(self, model, cfg: bool):
        torch = self.torch
        fast = getattr(model, "inference_autocast_dtype", None) is not None  # set by enable_fast_mode (ours)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            if not cfg:
                return model(self.x, self.t, self.tensors)
            inputs = model.get_conditioning_inputs(self.tensors_1)
            return model.model(self.x[:1], self.t[:1], **inputs, cfg_scale=7.0, batch_cfg=True, rescale_cfg=True)

    def _generation(self, model, row: str, decode: bool = False):
        kwargs = (dict(steps=20, sampler_type="dpmpp-3m-sde", sigma_min=0.3, sigma_max=500) if row == "dpmpp"
                  else dict(steps=8, sampler_type="euler"))
        model.diffusion_objective = "v" if row == "dpmpp" else "rectified_flow"
        return self.generate(model, cfg_scale=7, conditioning=self.cond, batch_size=1, sample_size=self.sample_size,
                             seed=1, device="cpu", return_latents=not decode, disable_tqdm=True, **kwargs)

    def run(self, row: str, mode: str):
        model = self.models[mode]
        with self.torch.no_grad():
            if row in ("forward", "cfg"):
                return self._backbone_call(model, row == "cfg")
            if row in ("dpmpp", "euler"):
                return self._generation(model, row)
            if row == "decode":
                return model.pretransform.decode(self.latents)
        raise ValueError(f"unknown row {row!r}")

    def time(self, row: str, mode: str) -> float:
        t0 = time.perf_counter()
        self.run(row, mode)
        return time.perf_counter() - t0

    def quality(self, out_dir: str) -> Dict[str, str]:
        """Decoded dpmpp audio (and latents) of every mode, saved as .npy arrays; returns their paths."""
        paths = {}
        with self.torch.no_grad():
            for mode in self.models:
                paths[f"{mode}_latents"] = os.path.join(out_dir, f"{mode}_latents.npy")
                np.save(paths[f"{mode}_latents"], self._generation(self.models[mode], "dpmpp").numpy())
                if "bf16" in self.models:  # our side: decoded audio for the quality bound
                    paths[f"{mode}_audio"] = os.path.join(out_dir, f"{mode}_audio.npy")
                    np.save(paths[f"{mode}_audio"], self._generation(self.models[mode], "dpmpp", decode=True).numpy())
        return paths


def worker_main(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    try:
        _import_side(args.worker, args.upstream)
        import torch

        torch.set_num_threads(args.threads)
        worker = Worker(args.worker, json.loads(Path(args.config).read_text()))
    except Exception as e:  # reported to the parent, which prints it in the table notes
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    print(json.dumps({"ready": True, "modes": list(worker.models)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "time":
            answer = {"seconds": worker.time(request["row"], request["mode"])}
        else:
            answer = {"paths": worker.quality(request["dir"])}
        print(json.dumps(answer), flush=True)


# ----------------------------------------------------------------------------------------------------- parent side


class Client:
    def __init__(self, side: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, __file__, "--worker", side, "--config", args.config, "--threads", str(args.threads)]
        if args.upstream:
            cmd += ["--upstream", args.upstream]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = json.loads(self.proc.stdout.readline() or '{"error": "the worker exited"}')
        self.error, self.modes = hello.get("error"), hello.get("modes", [])
        if self.error:
            self.close()

    def ask(self, **request: Any) -> Dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _quality(ours: Dict[str, str], upstream: Optional[Dict[str, str]], sample_rate: int) -> List[str]:
    import torch

    sys.path.insert(0, str(ROOT))
    from stable_audio_tools.metrics.reconstruction import log_mel_distance

    lines = []
    exact = torch.from_numpy(np.load(ours["exact_audio"]))
    for mode in ("bf16", "int8"):
        if f"{mode}_audio" not in ours:
            continue
        fast = torch.from_numpy(np.load(ours[f"{mode}_audio"]))
        snr = 10 * torch.log10(exact.square().sum() / (fast - exact).square().sum().clamp_min(1e-30))
        mel = log_mel_distance(fast, exact, sample_rate).mean()
        lines.append(f"- {mode} vs exact, decoded dpmpp-3m-sde 20-step audio, same seed and noise: SNR "
                     f"{snr.item():.1f} dB, log-mel distance {mel.item():.4f} (log10 mel magnitude, mean |diff|)")
    if upstream is not None:
        diff = np.abs(np.load(upstream["exact_latents"]) - np.load(ours["exact_latents"])).max()
        lines.append(f"- exact mode vs upstream, dpmpp-3m-sde 20-step latents: max |diff| = {diff:.3g}")
    return lines


def parent_main(args: argparse.Namespace) -> None:
    import tempfile

    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"bench_compare.py: unknown --rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    ours = Client("ours", args)
    if ours.error:
        sys.exit(f"bench_compare.py: our worker failed: {ours.error}")
    upstream = Client("upstream", args) if args.upstream else None
    notes = []
    if upstream is not None and upstream.error:
        notes.append(f"- upstream ({args.upstream}) cannot run here: {upstream.error}")
        upstream = None
    elif upstream is None:
        notes.append("- upstream not given (--upstream PATH): our rows only")
    jobs = [(row, "ours", mode) for row in rows for mode in MODES
            if mode == "exact" or (row in FAST_ROWS and mode in ours.modes)]
    if upstream is not None:
        jobs = [j for row in rows for j in [(row, "upstream", "exact")] + [k for k in jobs if k[0] == row]]
    clients = {"ours": ours, "upstream": upstream}
    times: Dict[tuple, List[float]] = {job: [] for job in jobs}
    for job in jobs:  # warm-up
        clients[job[1]].ask(cmd="time", row=job[0], mode=job[2])
    for _ in range(args.repeats):
        for job in jobs:  # sides alternate within each row of every round
            times[job].append(clients[job[1]].ask(cmd="time", row=job[0], mode=job[2])["seconds"])
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "ours")), os.makedirs(os.path.join(tmp, "upstream"))
        quality_ours = ours.ask(cmd="quality", dir=os.path.join(tmp, "ours"))["paths"]
        quality_up = upstream.ask(cmd="quality", dir=os.path.join(tmp, "upstream"))["paths"] if upstream else None
        config = json.loads(Path(args.config).read_text())
        notes += _quality(quality_ours, quality_up, config["sample_rate"])
    for client in (ours, upstream):
        if client is not None:
            client.close()

    med = {job: statistics.median(v) for job, v in times.items()}
    load = os.getloadavg()
    print(f"\nbench_compare: {Path(args.config).name}, {args.threads} threads, {args.repeats} interleaved rounds, "
          f"median seconds; load average before/after {args.load_before} / {load[0]:.2f}")
    print("| row | upstream | ours exact | exact ratio | ours bf16 | bf16 ratio | ours int8 | int8 ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ref = med.get((row, "upstream", "exact"))
        base = ref if ref is not None else med[(row, "ours", "exact")]
        cells = [f"{ref:.3f}" if ref is not None else "n/a"]
        for mode in MODES:
            value = med.get((row, "ours", mode))
            cells += [f"{value:.3f}" if value is not None else "", f"{base / value:.2f}x" if value else ""]
        print(f"| {ROWS[row]} | " + " | ".join(cells) + " |")
    print("\nRatios are upstream / ours (> 1: we are faster); without upstream they are ours exact / ours.")
    for line in notes:
        print(line)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=None, help="directory holding upstream 0.0.19's stable_audio_tools "
                                                         "package (default: our rows only)")
    parser.add_argument("--config", default=str(ROOT / "bench" / "configs" / "dit_44m_latent.json"),
                        help="diffusion_cond model config (default: the 44 M latent DiT)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default: 2)")
    parser.add_argument("--worker", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        sys.exit("bench_compare.py: --repeats must be >= 1")
    if args.worker:
        worker_main(args)
        return
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    parent_main(args)


if __name__ == "__main__":
    main()
