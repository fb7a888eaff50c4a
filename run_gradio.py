"""Launch the Gradio demo for a model (SPEC 1.5, 8).

    python run_gradio.py --pretrained-name stabilityai/stable-audio-open-1.0
    python run_gradio.py --model-config model_config.json --ckpt-path model.safetensors [--model-half]

The UI depends on the model type: text/timing-conditioned generation (with inpainting for
``diffusion_cond_inpaint``), unconditional generation, autoencoder round trip or language-model generation.
``--pretrained-name`` also accepts a local directory holding ``model_config.json`` and ``model.safetensors``
(or ``model.ckpt``). The model runs on CUDA when available, else Apple MPS, else CPU (``--device`` overrides);
``--model-half`` (off by default) uses float16 on CUDA.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags (upstream's, plus --server-name, --port, --device and --trust-pickle)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained-name", default=None,
                        help="Hugging Face repo id or local directory of a pretrained model")
    parser.add_argument("--model-config", default=None, help="model config JSON (with --ckpt-path)")
    parser.add_argument("--ckpt-path", default=None, help="unwrapped model checkpoint (.safetensors or .ckpt)")
    parser.add_argument("--pretransform-ckpt-path", default=None,
                        help="unwrapped autoencoder checkpoint that replaces the model's pretransform weights")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--username", default=None, help="require this user name (with --password)")
    parser.add_argument("--password", default=None, help="password for --username")
    parser.add_argument("--model-half", action="store_true", default=False,
                        help="run the model in float16 (CUDA only; ignored with a warning elsewhere)")
    parser.add_argument("--title", default="", help="title shown above the UI")
    parser.add_argument("--server-name", default=None,
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 7860 or the next free)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cuda, cuda:1, mps, cpu (default: CUDA, else MPS, else CPU)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="DANGEROUS: allow checkpoints that need arbitrary unpickling (they can run any code); "
                             "only for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pretrained_name is None and args.model_config is None:
        parser.error("give --pretrained-name, or --model-config with --ckpt-path")
    if args.pretrained_name is not None and (args.model_config is not None or args.ckpt_path is not None):
        parser.error("--pretrained-name cannot be combined with --model-config / --ckpt-path")
    if args.model_config is not None and args.ckpt_path is None:
        parser.error("--model-config needs --ckpt-path (an unwrapped checkpoint of that model)")
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")


def main(argv: Optional[List[str]] = None) -> None:
    """Parse flags, load the model, build its UI and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)

    import torch

    from stable_audio_tools.interface.gradio import create_ui, launch_ui
    from stable_audio_tools.models.safe_load import enable_trust_pickle

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")
    torch.manual_seed(42)
    try:
        ui = create_ui(model_config_path=args.model_config, ckpt_path=args.ckpt_path,
                       pretrained_name=args.pretrained_name, pretransform_ckpt_path=args.pretransform_ckpt_path,
                       model_half=args.model_half, gradio_title=args.title, device=args.device)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"run_gradio.py: {e}")
    auth = (args.username, args.password) if args.username else None
    launch_ui(ui, share=args.share, auth=auth, server_name=args.server_name, server_port=args.port)


if __name__ == "__main__":
    main()
