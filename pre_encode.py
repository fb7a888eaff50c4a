"""Encode an audio dataset into autoencoder latents once, to train latent diffusion models on them.

    python pre_encode.py --model-config ae.json --ckpt-path ae.ckpt --dataset-config data.json \\
        --output-path latents/ [--batch-size 8] [--sample-size 1320960] [--model-half | --dtype bf16] [--is-discrete]

Writes ``<output>/<rank>/<13-digit id>.npy`` + ``.json`` per item, ``<output>/skipped_<rank>.json`` (the
files that could not be used, with reasons: they are skipped, never replaced) and ``<output>/details.json``;
the checkpoint must fit the model config exactly (else an error lists the keys). Train on
it with a ``"dataset_type": "pre_encoded"`` dataset config and ``"pre_encoded": true`` in the model
config's ``training`` section. Re-running with the same arguments resumes an interrupted run.
Runs on GPUs or on the CPU (``--accelerator``), on several devices/processes (``--devices``) and nodes
(``--num-nodes``) through PyTorch Lightning. See docs/data_formats.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Union

log = logging.getLogger("pre_encode")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Upstream's flags plus ``--devices``, ``--accelerator``, ``--seed``, ``--vae-mean``, ``--no-progress`` and
    ``--trust-pickle``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", type=str, required=True, help="autoencoder model config (JSON)")
    parser.add_argument("--ckpt-path", type=str, required=True,
                        help="unwrapped autoencoder checkpoint (.ckpt or .safetensors); it must fit --model-config "
                             "exactly (an unwrapped model whose pretransform is this autoencoder also works)")
    parser.add_argument("--model-half", action="store_true", help="run the model in float16, store float16 latents")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16", "bf16-mixed"],
                        help="float32: exact; bf16 (= bf16-mixed): fast mode, the autoencoder's encoder runs as a "
                             "bf16 channels-last copy with fused snakes (docs/inference.md#fast-mode) under bf16 "
                             "autocast (Lightning bf16-mixed); latents are stored as float32 (default: float32)")
    parser.add_argument("--dataset-config", type=str, required=True, help="dataset config (JSON)")
    parser.add_argument("--output-path", type=str, required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size per process")
    parser.add_argument("--sample-size", type=int, default=1320960,
                        help="audio samples per item (pad/crop length; 1320960 is ~30 s at 44.1 kHz)")
    parser.add_argument("--is-discrete", action="store_true", help="store the bottleneck's tokens instead of latents")
    parser.add_argument("--num-nodes", type=int, default=1, help="number of nodes")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    parser.add_argument("--strategy", type=str, default="auto", help="PyTorch Lightning strategy")
    parser.add_argument("--limit-batches", type=int, default=None, help="encode at most this many batches per process")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the item order (with --seed, so re-runs "
                                                               "resume)")
    parser.add_argument("--devices", type=str, default="auto",
                        help="devices (processes) per node: a number, a list such as 0,1, or auto (all GPUs, 1 CPU "
                             "process)")
    parser.add_argument("--num-gpus", dest="devices", type=str, help="alias of --devices (older upstream flag)")
    parser.add_argument("--accelerator", type=str, default="auto",
                        help="gpu, cpu or auto (gpu when CUDA is available)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --shuffle, VAE sampling and data augmentation")
    parser.add_argument("--vae-mean", action="store_true",
                        help="store the VAE posterior mean (deterministic) instead of a sample")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="DANGEROUS: allow a checkpoint that needs arbitrary unpickling (it can run any code); "
                             "only for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    args = parser.parse_args(argv)
    for flag in ("batch_size", "sample_size", "num_nodes"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.limit_batches is not None and args.limit_batches <= 0:
        parser.error("--limit-batches must be positive")
    if args.num_workers < 0:
        parser.error("--num-workers must be >= 0")
    return args


def _devices(value: str) -> Union[int, str, List[int]]:
    value = value.strip()
    if value.isdigit():
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


def _load_json(path: str, flag: str) -> Dict[str, Any]:
    from stable_audio_tools.models.factory import load_model_config

    try:
        return load_model_config(path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{flag}: {e}") from None


def load_model(model_config: Dict[str, Any], model_ckpt_path: str, model_half: bool = False):
    """Build the model and load the checkpoint strictly (see ``fit_state_dict``: every tensor must fit, at the top
    level or under one prefix such as ``pretransform.model.``), eval mode, no grad, optional fp16."""
    import torch

    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.utils import load_ckpt_state_dict
    from stable_audio_tools.training.pre_encode import fit_state_dict

    model = create_model_from_config(model_config)
    log.info("loading model checkpoint %s", model_ckpt_path)
    state_dict = fit_state_dict(model, load_ckpt_state_dict(model_ckpt_path), f"--ckpt-path {model_ckpt_path}")
    model.load_state_dict(state_dict, strict=True)
    model.eval().requires_grad_(False)
    if model_half:
        model.to(torch.float16)
    return model


def _precision(args: argparse.Namespace) -> str:
    """The Lightning precision of the encoding run: ``--model-half`` -> 16-true, ``--dtype bf16`` -> bf16-mixed."""
    if args.model_half and args.dtype != "float32":
        raise ValueError(f"--model-half (float16 weights) and --dtype {args.dtype} (bf16 autocast) do not combine; "
                         f"pick one")
    if args.model_half:
        return "16-true"
    return "32-true" if args.dtype == "float32" else "bf16-mixed"


def check_output_path(output_path: str, dataset_config: Dict[str, Any]) -> None:
    """Refuse an ``--output-path`` inside (or equal to) a local source directory of the dataset config: the
    latents would land among the files being encoded (and a later scan would pick them up)."""
    out = os.path.realpath(output_path)
    sources = dataset_config.get("datasets")
    for index, source in enumerate(sources if isinstance(sources, list) else []):
        directory = source.get("path") if isinstance(source, dict) else None
        if not isinstance(directory, str):
            continue
        root = os.path.realpath(directory)
        if out == root or out.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"--output-path '{output_path}' is inside the input directory '{directory}' "
                             f"(datasets[{index}].path of --dataset-config); choose an output directory outside it")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run pre-encoding; returns this process's statistics: ``encoded``, ``skipped`` (items not encoded) and
    ``skip_reasons`` (``{reason: count}``, including ``"already written"``), ``audio_seconds``, ``seconds``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    import pytorch_lightning as pl
    import torch
    from torch.utils.data import IterableDataset

    from stable_audio_tools.allocator import tune_malloc
    from stable_audio_tools.data.dataset import create_dataloader_from_config
    from stable_audio_tools.models.safe_load import enable_trust_pickle
    from stable_audio_tools.training.pre_encode import ALREADY_WRITTEN, PreEncodedLatentsInferenceWrapper

    tune_malloc()

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")

    model_config = _load_json(args.model_config, "--model-config")
    dataset_config = _load_json(args.dataset_config, "--dataset-config")
    check_output_path(args.output_path, dataset_config)
    pl.seed_everything(args.seed, workers=True)
    data_loader = create_dataloader_from_config(
        dataset_config, batch_size=args.batch_size, num_workers=args.num_workers,
        sample_rate=model_config["sample_rate"], sample_size=args.sample_size,
        audio_channels=model_config.get("audio_channels", 2), shuffle=False)
    iterable = isinstance(data_loader.dataset, IterableDataset)
    model = load_model(model_config, args.ckpt_path, args.model_half)
    ratio = getattr(model, "downsampling_ratio", 1) * (getattr(getattr(model, "pretransform", None),
                                                               "downsampling_ratio", 1) or 1)
    if args.sample_size % ratio:
        log.warning("--sample-size %d is not a multiple of the model's downsampling ratio %d; the last %d samples "
                    "of each item do not get a latent frame of their own", args.sample_size, ratio,
                    args.sample_size % ratio)

    module = PreEncodedLatentsInferenceWrapper(
        model=model, output_path=args.output_path, is_discrete=args.is_discrete, model_half=args.model_half,
        model_config=args.model_config, dataset_config=args.dataset_config, sample_size=args.sample_size,
        args_dict=vars(args), data_loader=data_loader, limit_batches=args.limit_batches, shuffle=args.shuffle,
        seed=args.seed, vae_mean=args.vae_mean, progress=not args.no_progress)

    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if args.dtype != "float32":
        from stable_audio_tools.inference.precision import cpu_bf16_problem, enable_fast_encode

        if accelerator == "cpu" and cpu_bf16_problem() is not None:
            raise ValueError(f"--dtype {args.dtype}: the bf16 kernels do not run on this CPU with this torch build "
                             f"({cpu_bf16_problem()}); use --dtype float32")
        enable_fast_encode(model)
    devices = _devices(args.devices)
    if devices == "auto" and accelerator == "cpu":
        devices = 1
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=args.num_nodes, strategy=args.strategy,
        precision=_precision(args), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        limit_val_batches=args.limit_batches if iterable and args.limit_batches else None)
    trainer.validate(module, verbose=False)
    stats = module.stats
    if stats["encoded"] == 0 and ALREADY_WRITTEN not in stats["skip_reasons"]:
        if len(module.unusable):
            raise ValueError(f"no file could be encoded: all {len(module.unusable)} items were unusable "
                             f"({module.unusable.reasons_text()}); see the warnings above and {module.skipped_path}")
        if iterable:
            raise ValueError("no file could be encoded: the WebDataset stream gave no usable sample (see the "
                             "warnings above; a last incomplete batch is dropped, so use --batch-size 1 for tiny "
                             "datasets)")
    return stats


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (OSError, ValueError) as e:  # config, checkpoint, data and S3 problems: the message says what to do
        sys.exit(f"pre_encode.py: {e}")
