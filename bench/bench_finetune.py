"""Fine-tuning memory: one training step of the real-size SAO 1.0 and SAO-small DiTs, full fine-tune vs LoRA.

    python bench/bench_finetune.py                       # computed requirements only (no weights allocated)
    python bench/bench_finetune.py --measure [--device cuda] [--models sao-small] [--rows lora-r16]

Setting: random weights, batch 1, 10 s of latents (44.1 kHz / 2048 = 215 frames of 64 channels), precomputed
conditioning (T5 tokens, timing vectors; no T5 / VAE loaded), v objective, one AdamW step.

Rows:

* ``full-upstream``: upstream-style full fine-tune: fp32 weights, fp32 AdamW, an fp32 EMA copy;
* ``full-lowmem``: full fine-tune with the memory features the project ships: bf16 autocast
  (``--precision bf16-mixed``), per-block gradient checkpointing (the DiT default), EMA off (``use_ema: false``);
  AdamW keeps fp32 states (no maintained 8-bit optimizer package runs on this CPU-only platform; on CUDA,
  bitsandbytes' AdamW8bit would save 6 bytes per parameter, shown as ``full-lowmem (8-bit AdamW, computed)``);
* ``lora-r16``: LoRA rank 16 on every Linear / Conv1d of the DiT, frozen bf16 base (``--base-precision bf16``).

Measured figures: peak ``torch.cuda.max_memory_allocated`` on CUDA, peak process RSS on CPU (each row runs in its
own process). A row whose computed requirement exceeds ``--budget-gb`` (default 24) or the free memory is not run;
its computed requirement is printed instead and marked so. Computed requirements count weights, gradients,
optimizer and EMA states, autocast weight copies and activations (``2 x`` the checkpointed block inputs plus one
block's recomputation) plus a fixed allowance for the CUDA context / allocator (0.5 GB).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"sao-1.0": "stable_audio_open_1_0.json", "sao-small": "stable_audio_open_small.json"}
ROWS = ("full-upstream", "full-lowmem", "lora-r16")
TARGETS_GB = {"lora-r16": 8.0, "full-lowmem": 24.0}
SECONDS, RATIO, SAMPLE_RATE = 10.0, 2048, 44100
CROSS_TOKENS = 130  # 128 T5 tokens + seconds_start + seconds_total
OVERHEAD_GB = 0.5
GB = 1024 ** 3


def dit_config(model: str) -> Dict:
    config = json.loads((ROOT / "stable_audio_tools" / "configs" / "model_configs" / "released" /
                         CONFIGS[model]).read_text())
    return config["model"]["diffusion"]["config"]


def build_dit(model: str, device: str = "meta") -> torch.nn.Module:
    from stable_audio_tools.models.dit import DiTWrapper

    with torch.device(device):
        return DiTWrapper(**dit_config(model))


def lora_parameters(dit: torch.nn.Module, rank: int = 16) -> int:
    total = 0
    for module in dit.modules():
        if type(module) in (torch.nn.Linear, torch.nn.Conv1d):
            fan_out = module.weight.shape[0]
            fan_in = module.weight[0].numel()
            total += rank * (fan_in + fan_out)
    return total


def computed_gb(model: str, row: str, eight_bit: bool = False) -> float:
    """Estimated peak memory of one training step (see the module docstring)."""
    dit = build_dit(model)
    params = sum(p.numel() for p in dit.parameters())
    config = dit_config(model)
    dim, depth = config["embed_dim"], config["depth"]
    frames = math.ceil(SECONDS * SAMPLE_RATE / RATIO)
    tokens = frames + 1
    if row == "full-upstream":
        per_param, act_bytes = 4 + 4 + 8 + 4, 4
    elif row == "full-lowmem":
        per_param, act_bytes = 4 + 4 + (2 if eight_bit else 8) + 2, 2
    else:
        per_param, act_bytes = 2, 2
    trainable = lora_parameters(dit) if row == "lora-r16" else 0
    saved = depth * tokens * dim * act_bytes * 2
    block = (12 * tokens * dim + 2 * config["num_heads"] * tokens * (tokens + CROSS_TOKENS)) * act_bytes * 2
    total = params * per_param + trainable * 16 + saved + block
    return total / GB + OVERHEAD_GB


def _peak_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def measure(model: str, row: str, device: str) -> Dict[str, float]:
    """Run two training steps of one row in this process; return the peak memory and the second step's time."""
    from stable_audio_tools.models.adapters import adapter_parameters, apply_adapters, freeze_base
    from stable_audio_tools.training.ema import EMA

    torch.manual_seed(0)
    if row == "lora-r16":  # build the frozen base directly in bf16 (no fp32 copy ever exists)
        torch.set_default_dtype(torch.bfloat16)
    try:
        dit = build_dit(model, device="cpu").to(device)
    finally:
        torch.set_default_dtype(torch.float32)
    config = dit_config(model)
    frames = math.ceil(SECONDS * SAMPLE_RATE / RATIO)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=row != "full-upstream")
    ema = None
    if row == "lora-r16":
        apply_adapters(dit, {"type": "lora", "rank": 16})
        freeze_base(dit)
        params = adapter_parameters(dit)
    else:
        params = list(dit.parameters())
        if row == "full-upstream":
            ema = EMA(dit, beta=0.9999, power=3 / 4, update_every=1, update_after_step=0)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    x = torch.randn(1, config["io_channels"], frames, device=device)
    cross = torch.randn(1, CROSS_TOKENS, config["cond_token_dim"], device=device)
    global_cond = torch.randn(1, config["global_cond_dim"], device=device)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        t = torch.rand(1, device=device)
        with autocast:
            out = dit(x, t, cross_attn_cond=cross, global_cond=global_cond, cfg_dropout_prob=0.1)
        loss = torch.nn.functional.mse_loss(out.float(), x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"peak_gb": _peak_gb(device), "step_s": times[-1]}


def free_gb(device: str) -> float:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return free / GB
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] * 1024 / GB


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--measure", action="store_true", help="run the rows that fit (else: computed only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-gb", type=float, default=24.0, help="memory of the machine the table is for")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads when measuring on the CPU")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ROW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.device)))
        return

    print(f"one training step, batch 1, {SECONDS:g} s of latents, precomputed conditioning; device {args.device}; "
          f"budget {args.budget_gb:g} GB")
    print(f"{'model':<10} {'row':<34} {'computed GB':>11} {'measured GB':>11} {'step s':>8}  note")
    for model in args.models:
        for row in args.rows:
            need = computed_gb(model, row)
            measured, step, note = "-", "-", ""
            if args.measure:
                room = min(args.budget_gb, free_gb(args.device))
                if need > room:
                    note = f"does not fit ({need:.1f} GB needed, {room:.1f} GB available): computed only"
                else:
                    env = dict(os.environ, PYTHONPATH=str(ROOT))
                    proc = subprocess.run([sys.executable, __file__, "--device", args.device, "--threads",
                                           str(args.threads), "--one", model, row], capture_output=True, text=True,
                                          env=env)
                    if proc.returncode != 0:
                        note = f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}"
                    else:
                        result = json.loads(proc.stdout.strip().splitlines()[-1])
                        measured, step = f"{result['peak_gb']:.2f}", f"{result['step_s']:.2f}"
            target = TARGETS_GB.get(row)
            if target and not note:
                value, how = (float(measured), "measured") if measured != "-" else (need, "computed")
                note = f"target <= {target:g} GB: {'met' if value <= target else 'NOT met'} ({how})"
            print(f"{model:<10} {row:<34} {need:>11.2f} {measured:>11} {step:>8}  {note}")
        if "full-lowmem" in args.rows:
            print(f"{model:<10} {'full-lowmem (8-bit AdamW, computed)':<34} "
                  f"{computed_gb(model, 'full-lowmem', eight_bit=True):>11.2f} {'-':>11} {'-':>8}  "
                  f"needs bitsandbytes on CUDA")


if __name__ == "__main__":
    main()
