"""Side-by-side speed of our exact and fast modes against upstream stable-audio-tools 0.0.19, interleaved A/B.

    python bench/bench_compare.py [--upstream /path/to/upstream_src] [--repeats 3] [--threads 2]
        [--rows forward,cfg,dpmpp,euler,train,decode,encode_short,decode_short,sao_cfg,sao_steps,sao_e2e,
                sao_decode,ae_train,loader0,loader2] [--allocator same|shipped]

Each side runs in its own worker process (:mod:`compare_worker`; the two packages share the name
``stable_audio_tools``), and our fast modes in a third, so that no mode's allocations weigh on another's timings.
``--allocator same`` (the default) starts every worker with the same fixed glibc malloc thresholds;
``--allocator shipped`` runs each side with its allocator as its users get it (ours tunes glibc itself,
:mod:`stable_audio_tools.allocator`; upstream keeps glibc's defaults).
Our exact-mode worker builds every model from a seed, adds seeded noise to the DiT weights and saves them; our
fast-mode worker and upstream's load those weights strictly, so both sides compute with the same numbers. The
parent then asks the workers for one timing at a time, alternating the sides within every round, so load changes
hit both alike. ``--upstream`` is a directory holding upstream's ``stable_audio_tools`` package (e.g. the unpacked
wheel of ``pip download stable-audio-tools==0.0.19 --no-deps``) importable by this Python, with upstream's
dependencies (torchaudio, k-diffusion, ...) installed; run the script with the Python of that environment so both
sides use the same torch (docs/benchmarks.md shows how). When upstream cannot be imported the table says why and
shows our rows only. Rows (11.9 s = 256 latents, batch 1, float32 unless marked):

* ``forward``: 44 M DiT forward, batch 2; ``cfg``: one backbone call with batch CFG (batch 1 -> 2, cfg 7);
* ``dpmpp``: dpmpp-3m-sde 20 steps, cfg 7, to latents; ``euler``: rectified-flow euler 8 steps, cfg 7;
* ``train``: one optimiser step of the DiT training wrapper (batch 2 pre-encoded latents, AdamW, EMA);
  the bf16 column is bf16-mixed autocast (``--precision bf16-mixed``), bf16 + compile adds ``train.py --compile``;
* ``decode``: decode of 256 latents by the 44 M config's (32-channel) VAE; ``encode_short`` / ``decode_short``:
  the same VAE's encode of 2 x 1 s of stereo audio (45,056 samples each) and decode of 2 x 22 latents (exact mode
  only for the encode: fast mode's bf16 encoder is ``pre_encode.py --dtype bf16``'s);
* ``sao_cfg`` / ``sao_steps`` / ``sao_e2e`` / ``sao_decode``: Stable Audio Open Small's shape
  (``bench/configs/sao_small.json``, random weights): one backbone call with batch CFG; 8 ping-pong steps at
  cfg 1 (its released setting) to latents; the same plus the full-size VAE decode (end to end, the text encoder
  excepted: a one-layer random T5 stands in for t5-base on both sides); the VAE decode alone;
* ``ae_train``: one autoencoder training step through a real Lightning ``Trainer`` (``--ae-config``, default
  ``bench/configs/ae_oobleck32_vae.json``: Oobleck VAE shaped like Stable Audio Open's with 32 channels, encodec
  discriminator, 7-resolution perceptual MRSTFT + KL, EMA; batch 2 x 1 s stereo): the mean of one generator and one
  discriminator step (the wrapper alternates them) after two warm-up steps, each timing a fresh ``fit`` of 4 batches;
  the bf16 column is ``--precision bf16-mixed``;
* ``loader0`` / ``loader2``: two passes of an ``audio_dir`` loader with 0 / 2 workers over 32 FLAC files of 4 s
  stereo 44.1 kHz, 1 s random crops, batch 4 (worker start-up included).

Fast-mode columns: ``bf16`` (``--dtype bf16``: autocast backbone and, in the decode and end-to-end rows, the bf16
decoder; :mod:`stable_audio_tools.inference.precision`), ``bf16 + compile`` (``--dtype bf16 --compile``: the same
with the backbone's transformer compiled; the compilations happen in the warm-up: one round of every job and a
second of the compiled ones, since a graph compiled before the first generation recompiles once after it) and
``int8`` (dynamic quantisation; float32 decoder). The
quality bound: exact vs fast decoded audio (the bf16 decoder's own SNR is printed separately) of a dpmpp-3m-sde
20-step generation from the same seed and noise (SNR in dB, log-mel distance from :func:`stable_audio_tools.metrics.reconstruction.log_mel_distance`);
with upstream, the max |diff| of its exact outputs against ours. Prints one markdown table of medians (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_worker import ROOT, SUITE_OF, worker_main  # noqa: E402

ROWS = {"forward": "DiT 44 M forward (batch 2)", "cfg": "DiT 44 M forward with batch CFG",
        "dpmpp": "DiT 44 M dpmpp-3m-sde 20 steps", "euler": "DiT 44 M rectified-flow euler 8 steps",
        "train": "DiT 44 M training step (bf16 column: bf16-mixed)", "decode": "VAE (32 ch) decode 11.9 s",
        "encode_short": "VAE (32 ch) encode 2 x 1 s", "decode_short": "VAE (32 ch) decode 2 x 1 s",
        "sao_cfg": "SAO-small forward with batch CFG", "sao_steps": "SAO-small 8 ping-pong steps (latents)",
        "sao_e2e": "SAO-small end to end (8 steps + VAE decode)", "sao_decode": "SAO VAE decode 11.9 s",
        "ae_train": "VAE (32 ch) training step, generator / discriminator alternating (bf16: bf16-mixed)",
        "loader0": "audio_dir loader, 0 workers", "loader2": "audio_dir loader, 2 workers"}
MODES = ("exact", "bf16", "bf16c", "int8")  # bf16c: --dtype bf16 --compile
#: glibc malloc settings of both workers. By default glibc raises its mmap threshold (above which a block is mapped
#: afresh and returned to the OS when freed) to the largest mmapped block freed so far, up to 32 MiB, so a process's
#: history decides whether every forward page-faults its activations again (measured: 32,000 faults and ~15 % of a
#: 44 M DiT forward). Both workers start with the thresholds glibc would reach at most (32 MiB, trim 64 MiB), so
#: both sides have the same allocator whatever they did before.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"


class Client:
    def __init__(self, side: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, __file__, "--worker", side, "--config", args.config, "--sao-config", args.sao_config,
               "--ae-config", args.ae_config,
               "--threads", str(args.threads), "--scratch", args.scratch]
        if args.upstream:
            cmd += ["--upstream", args.upstream]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
               **({"GLIBC_TUNABLES": MALLOC_TUNABLES} if args.allocator == "same" else {})}
        cmd += ["--allocator", args.allocator]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = json.loads(self.proc.stdout.readline() or '{"error": "the worker exited"}')
        self.error = hello.get("error")
        if self.error:
            self.close()

    def ask(self, **request: Any) -> Dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline() or '{"error": "the worker exited"}')
        if "error" in answer:
            raise RuntimeError(f"{request}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=120)


def _snr_mel(fast: np.ndarray, exact: np.ndarray, sample_rate: int) -> str:
    import torch

    from stable_audio_tools.metrics.reconstruction import log_mel_distance

    fast_t, exact_t = torch.from_numpy(fast), torch.from_numpy(exact)
    snr = 10 * torch.log10(exact_t.square().sum() / (fast_t - exact_t).square().sum().clamp_min(1e-30))
    mel = log_mel_distance(fast_t, exact_t, sample_rate).mean()
    return f"SNR {snr.item():.1f} dB, log-mel distance {mel.item():.4f}"


def _quality(ours: Dict[str, str], upstream: Optional[Dict[str, str]], sample_rate: int) -> List[str]:
    sys.path.insert(0, str(ROOT))
    lines = []
    if "exact_audio" in ours:
        exact = np.load(ours["exact_audio"])
        for mode in ("bf16", "bf16c", "int8"):
            if f"{mode}_audio" in ours:
                lines.append(f"- {mode} vs exact, decoded dpmpp-3m-sde 20-step audio, same seed and noise: "
                             f"{_snr_mel(np.load(ours[f'{mode}_audio']), exact, sample_rate)} (log10 mel "
                             f"magnitude, mean |diff|)")
    if "bf16_decoder_audio" in ours:
        lines.append(f"- bf16 decoder vs float32 decoder, the same random latents: "
                     f"{_snr_mel(np.load(ours['bf16_decoder_audio']), np.load(ours['exact_decoder_audio']), sample_rate)}")
    for key in ("forward", "euler", "dpmpp", "decode", "encode_short", "decode_short", "sao_cfg", "sao_steps",
                "sao_decode"):
        if upstream is not None and key in upstream and key in ours:
            a, b = np.load(ours[key]), np.load(upstream[key])
            scale = float(np.abs(b).max())
            name = ROWS[key].rsplit(" (", 1)[0] if ROWS[key].endswith(")") else ROWS[key]
            lines.append(f"- exact mode vs upstream, {name} output: max |diff| = "
                         f"{float(np.abs(a - b).max()):.3g} (max |upstream| {scale:.3g})")
    return lines


def write_scratch(scratch: str, rows: List[str]) -> None:
    """The loader rows' FLAC files and the SAO rows' one-layer T5, shared by both workers."""
    suites = {SUITE_OF[r] for r in rows}
    if "data" in suites:
        import soundfile as sf

        audio = Path(scratch) / "audio"
        audio.mkdir()
        rng = np.random.default_rng(0)
        t = np.arange(4 * 44100) / 44100
        for i in range(32):
            tone = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t)[:, None] + 0.02 * rng.standard_normal((len(t), 2))
            sf.write(audio / f"tone_{i:03d}.flac", tone.astype(np.float32), 44100)
    if "sao" in suites:
        sys.path.insert(0, str(ROOT / "scripts"))
        from make_tiny_text_encoder import make_tiny_t5

        make_tiny_t5(os.path.join(scratch, "tiny_t5"), d_model=768)


def parent_main(args: argparse.Namespace) -> None:
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"bench_compare.py: unknown --rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    times: Dict[tuple, List[float]] = {}
    notes: List[str] = [] if args.upstream else ["- upstream not given (--upstream PATH): our rows only"]
    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = scratch
        write_scratch(scratch, rows)
        os.makedirs(os.path.join(scratch, "out"))
        suites = list(dict.fromkeys(SUITE_OF[r] for r in rows))
        for suite in suites:  # one pair of processes per suite: no suite's models weigh on another's timings
            suite_rows = [r for r in rows if SUITE_OF[r] == suite]
            times.update(time_suite(args, suite, suite_rows, notes))
    print_table(args, rows, times, notes)


def time_suite(args: argparse.Namespace, suite: str, rows: List[str], notes: List[str]) -> Dict[tuple, List[float]]:
    """Warm-up plus ``--repeats`` interleaved rounds of ``rows`` (all of one suite) on both sides."""
    ours = Client("ours", args)
    if ours.error:
        sys.exit(f"bench_compare.py: our worker failed: {ours.error}")
    modes = {row: ours.ask(cmd="modes", row=row)["modes"] for row in rows}  # builds ours, saves the weights
    fast = Client("ours-fast", args)
    if fast.error:
        sys.exit(f"bench_compare.py: our fast-mode worker failed: {fast.error}")
    fast_modes = {row: fast.ask(cmd="modes", row=row)["modes"] for row in rows}
    upstream = Client("upstream", args) if args.upstream else None
    if upstream is not None and upstream.error:
        if not any("cannot run here" in n for n in notes):
            notes.append(f"- upstream ({args.upstream}) cannot run here: {upstream.error}")
        upstream = None
    jobs = []  # (row, worker, mode); both of our workers' times are "ours" in the table
    for row in rows:
        if upstream is not None:
            upstream.ask(cmd="modes", row=row)  # builds upstream's models from our weights
            jobs.append((row, "upstream", "exact"))
        jobs += [(row, "ours", mode) for mode in modes[row]] + [(row, "ours-fast", mode) for mode in fast_modes[row]]
    clients = {"ours": ours, "ours-fast": fast, "upstream": upstream}
    times: Dict[tuple, List[float]] = {}
    for row, worker, mode in jobs:  # warm-up
        clients[worker].ask(cmd="time", row=row, mode=mode)
    for row, worker, mode in jobs:  # compiled modes again: a graph compiled before the first generate recompiles
        if mode == "bf16c":        # once after it (generate sets torch.backends flags, part of dynamo's guards)
            clients[worker].ask(cmd="time", row=row, mode=mode)
    for _ in range(args.repeats):
        for row, worker, mode in jobs:  # sides alternate within each row of every round
            seconds = clients[worker].ask(cmd="time", row=row, mode=mode)["seconds"]
            times.setdefault((row, "upstream" if worker == "upstream" else "ours", mode), []).append(seconds)
    if suite != "data":  # exact outputs of each side's exact process; the fast worker's audio (all modes, and its
        out = {worker: client.ask(cmd="outputs", suite=suite, dir=os.path.join(args.scratch, "out"))["paths"]
               for worker, client in clients.items() if client is not None}  # own exact reference) for quality
        notes += _quality({**out["ours-fast"], **out["ours"]}, out.get("upstream"), 44100)
        for key in sorted(set(out["ours"]) & set(out["ours-fast"])):
            diff = float(np.abs(np.load(out["ours"][key]) - np.load(out["ours-fast"][key])).max())
            notes.append(f"- our fast-mode process's exact {key} output vs our exact process's: max |diff| = {diff:.3g}")
    for client in clients.values():
        if client is not None:
            client.close()
    return times


def print_table(args: argparse.Namespace, rows: List[str], times: Dict[tuple, List[float]],
                notes: List[str]) -> None:
    import torch

    med = {job: statistics.median(v) for job, v in times.items()}
    load = os.getloadavg()
    print(f"\nbench_compare: torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved rounds "
          f"(after one warm-up), median seconds, --allocator {args.allocator}; load average before/after "
          f"{args.load_before} / {load[0]:.2f}")
    print("| row | upstream | ours exact | exact ratio | ours bf16 | bf16 ratio | ours bf16 + compile | ratio "
          "| ours int8 | int8 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
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
                        help="diffusion_cond model config of the DiT rows (default: the 44 M latent DiT)")
    parser.add_argument("--sao-config", default=str(ROOT / "bench" / "configs" / "sao_small.json"),
                        help="model config of the sao_* rows (default: Stable Audio Open Small's shape)")
    parser.add_argument("--ae-config", default=str(ROOT / "bench" / "configs" / "ae_oobleck32_vae.json"),
                        help="autoencoder model config of the ae_train row (default: the 32-channel Oobleck VAE)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default: 2)")
    parser.add_argument("--allocator", choices=["same", "shipped"], default="same",
                        help="same (default): every worker starts with the same fixed glibc malloc thresholds "
                             "(GLIBC_TUNABLES), so the rows compare computation; shipped: each side's allocator as "
                             "its users get it (ours calls stable_audio_tools.allocator.tune_malloc() at start, as "
                             "our scripts and generation functions do; upstream keeps glibc's defaults)")
    parser.add_argument("--worker", choices=["ours", "ours-fast", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
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
