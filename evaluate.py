"""Score generated audio: Frechet distance, KL divergence, CLAP score and reconstruction metrics.

Score two folders::

    python evaluate.py --generated gen/ --reference ref/ --prompts prompts.json --metrics fd,kl,clap

or generate from a diffusion model first, then score what it made::

    python evaluate.py --pretrained-name stabilityai/stable-audio-open-1.0 --prompts prompts.txt \
        --generated gen/ --reference ref/ --metrics fd,kl,clap

Prints a table and writes a JSON report with every setting (``--output-json``). Exits 2 with a message on
unusable inputs (empty folders, no pairs, sample-rate mismatches, missing packages or weights). See
docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DEFAULT_METRICS = "fd,kl,clap"


def _parse_option(text: str) -> tuple:
    name, sep, value = text.partition("=")
    embedder, dot, key = name.partition(".")
    if not sep or not dot or not embedder or not key:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected EMBEDDER.KEY=VALUE, e.g. clap.model=/path/dir")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return embedder, key, parsed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--generated", default=None,
                    help="folder of generated audio (required); with a model, the (empty or new) folder to write into")
    io.add_argument("--reference", default=None, help="folder of reference audio (fd, kl and the reconstruction "
                    "metrics; kl and reconstruction pair files by name)")
    io.add_argument("--prompts", default=None, help="prompts file (.json object id->prompt or list, .jsonl, or one "
                    "prompt per line named 0000, 0001, ...): clap pairs generated files with prompts by name")
    io.add_argument("--output-json", default="evaluation.json", help="where to write the JSON report")
    io.add_argument("--no-progress", action="store_true", help="no progress bars")

    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", default=DEFAULT_METRICS,
                   help="comma-separated: fd, kl, clap, si_sdr, mrstft, mel")
    m.add_argument("--embedder", default="openl3", help="embedder for fd (see --list-embedders)")
    m.add_argument("--kl-classifier", default="passt", help="classifier for kl")
    m.add_argument("--clap-embedder", default="clap", help="text/audio embedder for clap")
    m.add_argument("--convention", default="sam", choices=("sam", "audiocraft"),
                   help="preprocessing and KL definition: stable-audio-metrics (sam) or audiocraft")
    m.add_argument("--option", action="append", type=_parse_option, default=[], metavar="EMBEDDER.KEY=VALUE",
                   help="embedder constructor option (repeatable; VALUE is JSON or a string), e.g. "
                        "clap.model=laion/clap-htsat-unfused or openl3.channels=1")
    m.add_argument("--allow-mixed-sample-rates", action="store_true",
                   help="score sets whose files have different sample rates (fd/kl/clap resample everything)")
    m.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    m.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers an embedder with @register_embedder)")
    m.add_argument("--list-embedders", action="store_true", help="list the registered embedders and exit")

    g = p.add_argument_group("generate first (diffusion_cond models)")
    g.add_argument("--pretrained-name", default=None, help="Hugging Face repo id or local model directory")
    g.add_argument("--model-config", default=None, help="model config JSON (with --ckpt-path)")
    g.add_argument("--ckpt-path", default=None, help="unwrapped checkpoint (.safetensors or .ckpt)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow .ckpt files that need arbitrary unpickling (docs/security.md)")
    g.add_argument("--steps", type=int, default=100, help="sampler steps")
    g.add_argument("--cfg-scale", type=float, default=7.0, help="classifier-free guidance scale")
    g.add_argument("--seconds", type=float, default=None,
                   help="length of each output in seconds (default: the model's sample_size)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed + i")
    g.add_argument("--sampler-type", default=None, help="sampler (default: the model's default)")
    return p


def _options(pairs: Sequence[tuple]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for embedder, key, value in pairs:
        out.setdefault(embedder, {})[key] = value
    return out


def _device(requested: Optional[str]) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_model(args: argparse.Namespace, device: str):
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.pretrained import get_pretrained_model
    from stable_audio_tools.models.utils import check_state_dict, load_ckpt_state_dict

    def check_type(config: Dict[str, Any], source: str) -> None:
        if config.get("model_type") != "diffusion_cond":
            raise ValueError(f"{source}: generating for evaluation needs a diffusion_cond model, this one's "
                             f"model_type is {config.get('model_type')!r}")

    if args.pretrained_name:
        model, config = get_pretrained_model(args.pretrained_name)
        check_type(config, f"--pretrained-name {args.pretrained_name}")
    else:
        config_path = Path(args.model_config)
        if not config_path.is_file():
            raise FileNotFoundError(f"--model-config {config_path}: file not found")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        check_type(config, f"--model-config {config_path}")
        model = create_model_from_config(config)
        state_dict = load_ckpt_state_dict(args.ckpt_path)
        check_state_dict(model, state_dict, f"--ckpt-path {args.ckpt_path}")
        model.load_state_dict(state_dict)
    return model.to(device).eval().requires_grad_(False), config


def generate(args: argparse.Namespace, prompts: Dict[str, str], device: str) -> Dict[str, Any]:
    """Generate one file per prompt into ``--generated``; return the generation settings for the report."""
    import soundfile
    import torch
    from tqdm.auto import tqdm

    from stable_audio_tools.inference.generation import generate_diffusion_cond

    out_dir = Path(args.generated)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"--generated {out_dir}: the folder is not empty; when generating, give a new or "
                              "empty folder so that old files are not scored")
    model, config = _load_model(args, device)
    sample_rate = int(config["sample_rate"])
    sample_size = int(config["sample_size"])
    if args.seconds is not None:
        if args.seconds <= 0:
            raise ValueError(f"--seconds must be positive, got {args.seconds}")
        sample_size = int(round(args.seconds * sample_rate))
    seconds = sample_size / sample_rate
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = {"sampler_type": args.sampler_type} if args.sampler_type else {}
    for index, (name, prompt) in enumerate(tqdm(list(prompts.items()), desc="generating", unit="prompt",
                                                disable=args.no_progress)):
        conditioning = [{"prompt": prompt, "seconds_start": 0, "seconds_total": seconds}]
        audio = generate_diffusion_cond(model, steps=args.steps, cfg_scale=args.cfg_scale, conditioning=conditioning,
                                        sample_size=sample_size, seed=args.seed + index, device=device,
                                        disable_tqdm=True, **sampler)
        audio = audio[0, :, :sample_size].float().clamp(-1, 1).cpu()
        soundfile.write(str(out_dir / f"{name}.wav"), audio.T.numpy(), sample_rate, subtype="FLOAT")
    return {"model": args.pretrained_name or {"config": args.model_config, "checkpoint": args.ckpt_path},
            "steps": args.steps, "cfg_scale": args.cfg_scale, "seconds": seconds, "seed": args.seed,
            "sampler_type": args.sampler_type, "sample_rate": sample_rate, "prompts": len(prompts),
            "torch": torch.__version__}


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    """A plain-text table: metric, value, better direction, details."""
    rows = [("metric", "value", "better", "details")]
    for metric, r in results.items():
        details = ", ".join(f"{k}={v}" for k, v in r.items()
                            if k not in ("value", "higher_is_better", "per_item") and not isinstance(v, dict))
        rows.append((metric, f"{r['value']:.6g}", "higher" if r["higher_is_better"] else "lower", details))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stable_audio_tools.metrics import (AudioCollection, EvaluationConfig, EvaluationError, Evaluator,
                                            MissingPackageError, MissingWeightsError, available_embedders,
                                            load_prompts, parse_metrics)
    from stable_audio_tools.models.safe_load import CheckpointError, enable_trust_pickle

    for module in args.plugin:
        importlib.import_module(module)
    if args.list_embedders:
        from stable_audio_tools.metrics.embedders import embedder_class

        for name in available_embedders():
            cls = embedder_class(name)
            print(f"{name:10s} {', '.join(cls.capabilities):14s} {cls.comparable_to}")
        return 0
    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")
    try:
        if not args.generated:
            raise EvaluationError("--generated DIR is required (the folder of generated audio, or where to write it)")
        generating = bool(args.pretrained_name or args.model_config or args.ckpt_path)
        if generating and not (args.pretrained_name or (args.model_config and args.ckpt_path)):
            raise EvaluationError("give --pretrained-name, or both --model-config and --ckpt-path")
        if generating and args.pretrained_name and (args.model_config or args.ckpt_path):
            raise EvaluationError("give --pretrained-name or --model-config/--ckpt-path, not both")
        config = EvaluationConfig(metrics=parse_metrics(args.metrics), embedder=args.embedder,
                                  kl_classifier=args.kl_classifier, clap_embedder=args.clap_embedder,
                                  convention=args.convention, options=_options(args.option),
                                  device=_device(args.device), allow_mixed_sample_rates=args.allow_mixed_sample_rates,
                                  progress=not args.no_progress)
        prompts = load_prompts(args.prompts)
        generation = None
        if generating:
            if not prompts:
                raise EvaluationError("generating needs --prompts FILE")
            generation = generate(args, prompts, config.device)
        generated = AudioCollection.from_folder(args.generated, "generated", "--generated")
        reference = (AudioCollection.from_folder(args.reference, "reference", "--reference")
                     if args.reference else None)
        report = Evaluator(config).evaluate(generated, reference, prompts)
    except (EvaluationError, MissingPackageError, MissingWeightsError, CheckpointError, FileNotFoundError,
            FileExistsError, KeyError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    report["settings"]["generation"] = generation
    report["settings"]["command"] = sys.argv if argv is None else ["evaluate.py", *argv]
    print(format_table(report["results"]))
    output = Path(args.output_json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(f"report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
