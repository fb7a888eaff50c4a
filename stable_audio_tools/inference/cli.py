"""The ``generate.py`` command line: flags, model loading and the run (see docs/inference.md, "Command line").

Every input is checked (prompts, lengths, audio files, masks, format, device, dtype) before any model is built;
a run that cannot do what was asked exits non-zero with a message naming the flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..allocator import tune_malloc
from ..models.config import ConfigError
from ..models.adapters import AdapterFileError, load_adapter, parse_adapter_flag
from ..models.factory import create_model_from_config
from ..models.pretrained import get_pretrained_model
from ..models.safe_load import CheckpointError, enable_trust_pickle
from ..models.utils import check_state_dict, load_ckpt_state_dict
from .jobs import (GenerationSettings, SourceAudio, check_settings, read_prompts_file, resolve_settings,
                   settings_from_sidecar)
from .precision import FAST_DTYPES, QUANTIZE_CHOICES, apply_fast_mode, check_fast_mode
from .runner import FORMATS, check_format, run_settings
from .utils import select_device

__all__ = ["build_parser", "read_model_config", "load_model", "load_model_for_flags", "select_device", "settings_from_args", "main"]

log = logging.getLogger(__name__)

#: --dtype values that cast the whole model (weights and activations)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``generate.py``."""
    p = argparse.ArgumentParser(prog="generate.py", description="Generate audio with a stable-audio-tools model "
                                "and write each file with a JSON sidecar that reproduces it (docs/inference.md).")
    m = p.add_argument_group("model")
    m.add_argument("--pretrained-name", help="Hugging Face repo id or local directory with model_config.json and "
                                             "model.safetensors / model.ckpt")
    m.add_argument("--model-config", help="model config JSON (with --ckpt-path)")
    m.add_argument("--ckpt-path", help="unwrapped model checkpoint (.safetensors or .ckpt) for --model-config")
    m.add_argument("--trust-pickle", action="store_true",
                   help="DANGEROUS: allow checkpoints that need arbitrary unpickling (they can run any code); only "
                        "for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    m.add_argument("--adapter", action="append", default=[], metavar="PATH[:STRENGTH]",
                   help="load an adapter (native .safetensors, PEFT directory or Stable Audio 3 LoRA) at STRENGTH "
                        "(default 1) onto the model; repeatable, adapters stack (docs/adapters.md); recorded in the "
                        "sidecar")
    m.add_argument("--device", default="auto", help="torch device: auto (CUDA, else MPS, else CPU), cpu, cuda, "
                                                    "cuda:1, mps (default: auto)")
    m.add_argument("--dtype", default="float32", choices=list(DTYPES) + list(FAST_DTYPES),
                   help="float32: exact mode; bf16 (= bf16-mixed): fast mode, float32 weights with the diffusion "
                        "backbone under bf16 autocast (RoPE / norms / timestep math / sampler in float32) and a "
                        "bf16 channels-last copy of the decoder; float16 / bfloat16: cast the whole model (float16 "
                        "needs a GPU) (docs/inference.md#fast-mode; default: float32)")
    m.add_argument("--compile", action="store_true",
                   help="with --dtype bf16: compile the backbone's transformer with torch.compile (tens of seconds "
                        "per new length, then 1.2-1.3x faster steps; needs a C++ compiler on the CPU)")
    m.add_argument("--quantize", default="none", choices=list(QUANTIZE_CHOICES),
                   help="int8: dynamic int8 quantisation of the diffusion backbone's transformer-block linear "
                        "layers, CPU only, with --dtype float32 (default: none)")
    g = p.add_argument_group("what to generate")
    g.add_argument("--prompt", help="text prompt")
    g.add_argument("--prompts", metavar="FILE", help="one prompt per line, or JSON lines with prompt and optional "
                                                    "negative_prompt, seconds, seed")
    g.add_argument("--negative-prompt", help="negative prompt (replaces the unconditional CFG branch)")
    g.add_argument("--seconds", type=float, help="seconds to generate (default: the model's window); with "
                                                 "--continue / --prepend: seconds of new audio; with --init-audio: "
                                                 "default the file's length")
    g.add_argument("--seconds-start", type=float, default=0.0, help="seconds_start conditioning (default: 0)")
    g.add_argument("--full-window", action="store_true",
                   help="sample the model's whole sample_size and trim (upstream's cost) instead of the shortest "
                        "valid length")
    g.add_argument("--seed", type=int, default=-1, help="RNG seed; -1 = random, recorded in the sidecar (default)")
    g.add_argument("--batch-size", type=int, default=1, help="outputs per call; they share one seed (default: 1)")
    g.add_argument("--num-candidates", type=int, default=1,
                   help="calls per prompt, with seeds seed, seed+1, ... (default: 1)")
    g.add_argument("--rank-by-clap", metavar="MODEL", default=None,
                   help="score every output against its prompt with this CLAP model (a Hugging Face id in the "
                        "local cache, e.g. laion/clap-htsat-fused, or a save_pretrained directory), add "
                        "clap_score / clap_rank to the sidecars and write clap_ranking.json (best first); the "
                        "model is loaded before any generation (default: no ranking)")
    s = p.add_argument_group("sampling (defaults depend on the model's diffusion objective)")
    s.add_argument("--steps", type=int, help="sampler steps (default: 100 v, 50 rectified_flow, 8 rf_denoiser)")
    s.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: 7; 1 rf_denoiser; "
                                                   "3 LM)")
    s.add_argument("--sampler", help="sampler type (default: dpmpp-3m-sde v, euler rectified_flow, pingpong "
                                     "rf_denoiser); see docs/inference.md#sampler-types")
    s.add_argument("--sigma-min", type=float, help="smallest noise level, v models (default: 0.3)")
    s.add_argument("--sigma-max", type=float, help="largest noise level (default: 500 v, 1 rectified flow)")
    s.add_argument("--temperature", type=float, help="LM sampling temperature (default: 1.0)")
    s.add_argument("--top-k", type=int, help="LM top-k (default: 250)")
    s.add_argument("--top-p", type=float, help="LM nucleus sampling threshold; 0 = off (default: 0)")
    e = p.add_argument_group("editing audio (one at a time)")
    e.add_argument("--continue", dest="continue_", metavar="FILE", help="continue FILE by --seconds seconds")
    e.add_argument("--prepend", metavar="FILE", help="generate --seconds seconds leading into FILE")
    e.add_argument("--inpaint", metavar="FILE", help="regenerate the --mask regions of FILE")
    e.add_argument("--mask", help="inpaint regions START:END[,START:END...] in seconds")
    e.add_argument("--crossfade-ms", type=float, default=20.0,
                   help="length of the click-free joins after continue / prepend / inpaint (default: 20)")
    e.add_argument("--init-audio", metavar="FILE", help="audio-to-audio: start from FILE")
    e.add_argument("--init-strength", type=float, default=0.5,
                   help="audio-to-audio: how far from FILE, in (0, 1] (default: 0.5)")
    e.add_argument("--init-mode", choices=["invert", "noise"], default="invert",
                   help="invert: deterministic ODE inversion, keeps structure; noise: upstream's noised input "
                        "(default: invert)")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default="outputs", help="where files and sidecars go (default: outputs)")
    o.add_argument("--format", default="wav", choices=list(FORMATS),
                   help="wav (32-bit float), flac (24-bit), ogg (Vorbis), mp3; as the installed libsndfile allows "
                        "(default: wav)")
    o.add_argument("--decode-chunk-size", type=int, default=128,
                   help="latent frames per decoding window; longer outputs decode in overlapping windows "
                        "(default: 128)")
    o.add_argument("--decode-overlap", type=int, default=32, help="overlap of decoding windows (default: 32)")
    o.add_argument("--from-sidecar", metavar="JSON", help="regenerate the file a sidecar describes (its settings "
                                                          "and model unless model flags are given)")
    return p


def read_model_config(pretrained_name: Optional[str], model_config_path: Optional[str]) -> Dict[str, Any]:
    """The model config, read without building the model (so inputs are checked first)."""
    if model_config_path is not None:
        path = Path(model_config_path)
    elif Path(pretrained_name).is_dir():
        path = Path(pretrained_name) / "model_config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(pretrained_name, filename="model_config.json", repo_type="model"))
        except Exception as e:  # offline, gated, missing
            raise ValueError(f"--pretrained-name {pretrained_name}: could not get model_config.json ({e}); pass a "
                             "local directory, or log in / go online once to cache it") from e
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"model config {path}: cannot read it as JSON ({e})") from e
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError(f"model config {path}: not a model config (no 'model_type')")
    return config


def load_model(model_config: Dict[str, Any], pretrained_name: Optional[str], ckpt_path: Optional[str],
               device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Build the model and load its weights strictly (through the safe loader), on ``device`` in ``dtype``."""
    if pretrained_name is not None:
        try:
            model, _ = get_pretrained_model(pretrained_name)
        except RuntimeError as e:
            raise ValueError(f"--pretrained-name {pretrained_name}: the weights do not fit its config ({e})") from e
    else:
        model = create_model_from_config(model_config)
        state_dict = load_ckpt_state_dict(ckpt_path)
        check_state_dict(model, state_dict, f"--ckpt-path {ckpt_path}")
        model.load_state_dict(state_dict, strict=True)
    model = model.to(device).eval().requires_grad_(False)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model


def load_model_for_flags(config: Dict[str, Any], args: argparse.Namespace, device: torch.device,
                         adapters: Sequence[Tuple[str, float]] = ()) -> nn.Module:
    """:func:`load_model`, then the ``adapters`` (``(path, strength)`` pairs of ``--adapter``), then the precision
    flags: ``--dtype`` (a cast for float16 / bfloat16, fast mode for ``bf16`` / ``bf16-mixed``) and ``--quantize``;
    bad combinations raise ValueError naming the flags."""
    dtype = DTYPES.get(args.dtype, torch.float32)
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("--dtype float16 needs a GPU (--device cuda or mps); use float32, bf16 or bfloat16 on "
                         "the CPU")
    fast = "float32" if args.dtype in DTYPES else args.dtype
    if args.quantize != "none" and args.dtype != "float32":
        raise ValueError(f"--quantize {args.quantize} runs with float32 weights and activations; use --dtype "
                         f"float32 (the default), not --dtype {args.dtype}")
    if args.quantize != "none" and adapters:
        raise ValueError(f"--quantize {args.quantize} does not combine with --adapter (the adapters wrap the layers "
                         f"int8 would replace); drop one of them")
    check_fast_mode(config.get("model_type"), fast, args.quantize, device, args.compile)
    model = load_model(config, args.pretrained_name, args.ckpt_path, device, dtype)
    for path, strength in adapters:
        name = load_adapter(model, path, strength=strength)
        log.info("adapter %s loaded from %s (strength %g)", name, path, strength)
    return apply_fast_mode(model, config.get("model_type"), fast, args.quantize, device, args.compile)


def settings_from_args(args: argparse.Namespace) -> List[GenerationSettings]:
    """One :class:`GenerationSettings` per prompt and candidate."""
    modes = [(name, value) for name, value in (("continue", args.continue_), ("prepend", args.prepend),
                                               ("inpaint", args.inpaint), ("init", args.init_audio)) if value]
    if len(modes) > 1:
        raise ValueError("give at most one of --continue, --prepend, --inpaint, --init-audio")
    if args.mask is not None and not args.inpaint:
        raise ValueError("--mask goes with --inpaint FILE")
    if args.prompt is not None and args.prompts is not None:
        raise ValueError("give --prompt or --prompts FILE, not both")
    if args.num_candidates < 1:
        raise ValueError(f"--num-candidates must be at least 1, got {args.num_candidates}")
    items = read_prompts_file(args.prompts) if args.prompts else [{"prompt": args.prompt or ""}]
    mode, source = modes[0] if modes else ("generate", None)
    source = os.path.abspath(source) if source else None
    base = GenerationSettings(
        negative_prompt=args.negative_prompt, seconds=args.seconds, seconds_start=args.seconds_start, seed=args.seed,
        steps=args.steps, cfg_scale=args.cfg_scale, sampler_type=args.sampler, sigma_min=args.sigma_min,
        sigma_max=args.sigma_max, batch_size=args.batch_size, full_window=args.full_window, mode=mode,
        source=source, mask=args.mask, init_strength=args.init_strength, init_mode=args.init_mode,
        crossfade_ms=args.crossfade_ms, decode_chunk_size=args.decode_chunk_size,
        decode_overlap=args.decode_overlap, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    settings = []
    for item in items:
        one = dataclasses.replace(base, **item)
        for candidate in range(args.num_candidates):
            settings.append(dataclasses.replace(one, candidate=candidate))
    return settings


def _prepare(args: argparse.Namespace) -> Tuple[Dict[str, Any], List[Tuple[GenerationSettings, Optional[SourceAudio]]],
                                                Dict[str, Any], Optional[int]]:
    """Config, resolved + checked jobs, model info and the sidecar's batch index (or None)."""
    only_index = None
    model_flags = args.pretrained_name is not None or args.model_config is not None or args.ckpt_path is not None
    if args.from_sidecar:
        settings, sidecar = settings_from_sidecar(args.from_sidecar)
        only_index = int(sidecar.get("batch_index", 0))
        if not model_flags:
            model_info = sidecar.get("model") or {}
            args.pretrained_name = model_info.get("pretrained_name")
            args.model_config, args.ckpt_path = model_info.get("model_config"), model_info.get("ckpt_path")
            if not args.adapter:
                args.adapter = [f"{path}:{strength}" for path, strength in model_info.get("adapters", [])]
        if args.device == "auto" and sidecar.get("device"):
            args.device = sidecar["device"]
        if args.dtype == "float32" and sidecar.get("dtype"):
            args.dtype = sidecar["dtype"]
        if args.quantize == "none" and sidecar.get("quantize"):
            args.quantize = sidecar["quantize"]
        args.compile = args.compile or bool(sidecar.get("compile"))
        args.format = sidecar.get("format", args.format)
        raw = [settings]
    else:
        raw = settings_from_args(args)
    if (args.pretrained_name is None) == (args.model_config is None):
        raise ValueError("give --pretrained-name, or --model-config with --ckpt-path")
    if args.model_config is not None and args.ckpt_path is None:
        raise ValueError("--model-config needs --ckpt-path (an unwrapped checkpoint of that model)")
    if args.pretrained_name is not None and args.ckpt_path is not None:
        raise ValueError("--ckpt-path goes with --model-config, not --pretrained-name")
    check_format(args.format)
    config = read_model_config(args.pretrained_name, args.model_config)
    sources: Dict[str, SourceAudio] = {}
    jobs = []
    for s in raw:
        s = resolve_settings(s, config) if not args.from_sidecar else s
        if s.candidate and not args.from_sidecar:
            s = dataclasses.replace(s, seed=s.seed + s.candidate)
        jobs.append((s, check_settings(s, config, sources)))
    if args.from_sidecar and jobs[0][1] is not None and jobs[0][1].sha256 != sidecar.get("source_sha256"):
        raise ValueError(f"--from-sidecar: {jobs[0][0].source} changed since the sidecar was written (sha256 differs)")
    if args.pretrained_name is not None:
        local = os.path.isdir(args.pretrained_name)
        model_info = {"pretrained_name": os.path.abspath(args.pretrained_name) if local else args.pretrained_name}
    else:
        model_info = {"model_config": os.path.abspath(args.model_config), "ckpt_path": os.path.abspath(args.ckpt_path)}
    model_info["model_type"] = config.get("model_type")
    adapters = [parse_adapter_flag(spec) for spec in args.adapter]
    for path, _ in adapters:
        if not os.path.exists(path):
            raise ValueError(f"--adapter {path}: no such file or directory")
    model_info["adapters"] = [[os.path.abspath(path), strength] for path, strength in adapters]
    return config, jobs, model_info, only_index


def main(argv: Optional[List[str]] = None) -> List[Path]:
    """Parse flags, check every input, load the model, generate, write files and sidecars; exits non-zero with
    the reason on any error. Returns the written audio paths."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_malloc()

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")
    try:
        if args.prompts is None and args.prompt is None and not args.from_sidecar:
            args.prompt = ""
        config, jobs, model_info, only_index = _prepare(args)
        device = select_device(args.device)
        model = load_model_for_flags(config, args, device, adapters=model_info["adapters"])
        run_info = {"device": device.type, "dtype": args.dtype, "quantize": args.quantize, "compile": args.compile}
        return run_settings(model, config, jobs, Path(args.output_dir), args.format, device, model_info, run_info,
                            only_index=only_index)
    except (ValueError, FileNotFoundError, CheckpointError, AdapterFileError, ConfigError) as e:
        sys.exit(f"generate.py: {e}")
