"""Turn a wrapped training checkpoint into an unwrapped model file (SPEC 1.3).

    python unwrap_model.py --model-config model.json --ckpt-path run.ckpt --name my_model [--use-safetensors]

Writes ``<name>.ckpt`` (``{"state_dict": ...}``) or ``<name>.safetensors`` holding the bare model's weights
(the EMA weights when the run used EMA), loadable with ``load_ckpt_state_dict`` + strict ``load_state_dict``,
and the model config beside it as ``<name>_config.json``. With ``--name DIR/model`` the folder DIR holds
``model.ckpt`` (or ``model.safetensors``) + ``model_config.json``: ``get_pretrained_model("DIR")`` loads it.
If ``--model-config`` is omitted, the config embedded in the checkpoint is used. An existing
``<name>_config.json`` describing a different model is never overwritten (the run fails before writing anything);
weights holding NaN/inf values are refused.

A checkpoint of an adapter run (``train.py --adapter-config``) is written as the adapter alone,
``<name>.safetensors`` (``--adapter-dtype fp16|fp32``; metadata: adapter config, base model config hash, base
weights hash, training steps; load it with ``load_adapter`` or ``run_gradio.py --adapter``). With
``--merge-adapters --base-ckpt-path BASE`` the full model merged onto the base weights is written instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

log = logging.getLogger("unwrap_model")


def main(argv: Optional[List[str]] = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="", help="model config JSON (default: the one embedded in the ckpt)")
    parser.add_argument("--ckpt-path", required=True, help="wrapped (training) checkpoint to unwrap")
    parser.add_argument("--name", default="exported_model",
                        help="output path without extension: writes NAME.ckpt / NAME.safetensors and "
                             "NAME_config.json (use DIR/model for a get_pretrained_model folder)")
    parser.add_argument("--use-safetensors", action="store_true", help="write .safetensors instead of .ckpt")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="DANGEROUS: allow a checkpoint that needs arbitrary unpickling (it can run any code); "
                             "only for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    parser.add_argument("--adapter-dtype", default="fp16", choices=("fp16", "fp32"),
                        help="adapter runs: precision of the written adapter file (default fp16)")
    parser.add_argument("--merge-adapters", action="store_true",
                        help="adapter runs: write the full model with the adapter merged into --base-ckpt-path")
    parser.add_argument("--base-ckpt-path", default="",
                        help="adapter runs: the unwrapped base model the adapter was trained on (needed by "
                             "--merge-adapters)")
    args = parser.parse_args(argv)

    from stable_audio_tools.models.safe_load import enable_trust_pickle
    from stable_audio_tools.training.unwrap import unwrap_checkpoint

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")

    from stable_audio_tools.training.adapters import is_adapter_checkpoint

    if is_adapter_checkpoint(args.ckpt_path):
        out = _unwrap_adapter_run(args)
    elif args.merge_adapters or args.base_ckpt_path:
        raise ValueError(f"--merge-adapters / --base-ckpt-path: {args.ckpt_path} is not a checkpoint of an adapter "
                         f"run (train.py --adapter-config)")
    else:
        out = unwrap_checkpoint(args.ckpt_path, args.model_config or None, args.name, args.use_safetensors)
    log.info("wrote %s", out)
    return out


def _unwrap_adapter_run(args: argparse.Namespace) -> str:
    from stable_audio_tools.models.factory import load_model_config
    from stable_audio_tools.models.safe_load import torch_load
    from stable_audio_tools.training.adapters import unwrap_adapter_checkpoint

    if args.model_config:
        model_config = load_model_config(args.model_config)
    else:
        model_config = torch_load(args.ckpt_path, mmap=True).get("model_config")
        if model_config is None:
            raise ValueError(f"{args.ckpt_path} has no embedded model_config; pass --model-config")
    return unwrap_adapter_checkpoint(args.ckpt_path, model_config, args.name, dtype=args.adapter_dtype,
                                     merge=args.merge_adapters, base_ckpt_path=args.base_ckpt_path,
                                     use_safetensors=args.use_safetensors or not args.merge_adapters)


if __name__ == "__main__":
    from stable_audio_tools.training.export import NonFiniteError

    try:
        main()
    except (FileNotFoundError, ValueError, NonFiniteError) as e:
        sys.exit(f"unwrap_model.py: {e}")
