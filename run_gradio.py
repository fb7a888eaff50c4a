"""Launch the Gradio demo for a model (SPEC 1.5, 8).

    python run_gradio.py --pretrained-name stabilityai/stable-audio-open-1.0
    python run_gradio.py --model-config model_config.json --ckpt-path model.safetensors [--model-half]

The UI depends on the model type: text/timing-conditioned generation (with inpainting for
``diffusion_cond_inpaint``), unconditional generation, autoencoder round trip or language-model generation.
``--pretrained-name`` also accepts a local directory holding ``model_config.json`` and ``model.safetensors``
(or ``model.ckpt``). The model runs on CUDA when available, else Apple MPS, else CPU (``--device`` overrides);
``--model-half`` (off by default) uses float16 on CUDA.

The demo cannot be tied up by one user: uploads, input audio length, sampling steps, requested seconds and the run
time of a request are limited (flags below, safe defaults), requests wait in a bounded queue and run one at a time,
a request whose client went away stops at its next step, and uploaded and result files are deleted when the
server stops (Ctrl+C or SIGTERM). See docs/gradio.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional


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
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16", "bf16-mixed"],
                        help="float32: exact mode; bf16 (= bf16-mixed): fast mode, the diffusion backbone under bf16 "
                             "autocast (RoPE / norms / timestep math / sampler in float32) and a bf16 channels-last "
                             "copy of the decoder; diffusion models only (docs/inference.md#fast-mode; default: "
                             "float32)")
    parser.add_argument("--compile", action="store_true",
                        help="with --dtype bf16: compile the backbone's transformer with torch.compile (the first "
                             "generation of each length compiles, tens of seconds; later ones run 1.2-1.3x faster; "
                             "needs a C++ compiler on the CPU)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="int8: dynamic int8 quantisation of the diffusion backbone's transformer-block linear "
                             "layers; CPU only, with --dtype float32 (default: none)")
    parser.add_argument("--title", default="", help="title shown above the UI")
    parser.add_argument("--server-name", default=None,
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 7860 or the next free)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cuda, cuda:1, mps, cpu (default: CUDA, else MPS, else CPU)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="DANGEROUS: allow checkpoints that need arbitrary unpickling (they can run any code); "
                             "only for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    parser.add_argument("--adapter", action="append", default=[], metavar="PATH[:STRENGTH]",
                        help="load an adapter file (native .safetensors, PEFT directory or Stable Audio 3 LoRA) at "
                             "STRENGTH (default 1); repeatable, adapters stack; the page gets a strength slider per "
                             "adapter (docs/adapters.md)")
    _add_limit_flags(parser)
    return parser


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("limits (keep one user from tying up the server; see docs/gradio.md)")
    limits.add_argument("--max-file-size", default="50mb",
                        help="largest upload, e.g. 50mb, 1gb, 800kb or bytes; 'none': no limit (default: 50mb)")
    limits.add_argument("--max-input-seconds", type=float, default=300.0,
                        help="longest init/inpaint/autoencoder input audio in seconds, checked before decoding; "
                             "0: no limit (default: 300)")
    limits.add_argument("--max-steps", type=int, default=500,
                        help="most sampling steps (and diffusion-autoencoder decoder steps) (default: 500)")
    limits.add_argument("--max-seconds", type=float, default=None,
                        help="longest 'Seconds total' a request may ask for (conditioned diffusion, LM) "
                             "(default: the model's length)")
    limits.add_argument("--request-time-limit", type=float, default=600.0,
                        help="seconds one request may run before it is stopped with a message; 0: no limit "
                             "(default: 600)")
    limits.add_argument("--queue-size", type=int, default=16,
                        help="most requests waiting in the queue; more are refused (default: 16)")
    limits.add_argument("--concurrency", type=int, default=1, help="requests run at the same time (default: 1)")
    limits.add_argument("--delete-files-after", type=float, default=3600.0,
                        help="delete uploaded and result files older than this many seconds; all are deleted "
                             "when the server stops (default: 3600)")


def _limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The :class:`DemoLimits` of the flags (a bad value stops with the flag named)."""
    from stable_audio_tools.interface.interfaces.limits import DemoLimits

    for flag in ("max_input_seconds", "request_time_limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be 0 (no limit) or a positive number of seconds")
    try:
        return DemoLimits(max_file_size=args.max_file_size, max_input_seconds=args.max_input_seconds or None,
                          max_steps=args.max_steps, max_seconds=args.max_seconds,
                          time_limit=args.request_time_limit or None, queue_size=args.queue_size,
                          concurrency=args.concurrency, delete_files_after=args.delete_files_after)
    except ValueError as e:
        parser.error(str(e))


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pretrained_name is None and args.model_config is None:
        parser.error("give --pretrained-name, or --model-config with --ckpt-path")
    if args.pretrained_name is not None and (args.model_config is not None or args.ckpt_path is not None):
        parser.error("--pretrained-name cannot be combined with --model-config / --ckpt-path")
    if args.model_config is not None and args.ckpt_path is None:
        parser.error("--model-config needs --ckpt-path (an unwrapped checkpoint of that model)")
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    if args.model_half and (args.dtype != "float32" or args.quantize != "none"):
        parser.error("--model-half (float16 weights) does not combine with --dtype bf16 / --quantize int8; pick one")
    if args.compile and args.dtype == "float32":
        parser.error("--compile compiles the bf16 fast mode; add --dtype bf16 or drop --compile")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, treat SIGTERM (``kill``, a job scheduler, a container stop) like Ctrl+C, so the server
    shuts down and its files are removed; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> None:
    """Parse flags, load the model, build its UI and serve it until interrupted (Ctrl+C or SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    limits = _limits(parser, args)
    if importlib.util.find_spec("gradio") is None:
        sys.exit("run_gradio.py: the 'gradio' package is not installed. It is a core dependency of "
                 "stable-audio-tools: reinstall with `pip install -e .` (or `pip install \"gradio>=5.0\"`)")

    import torch

    from stable_audio_tools.allocator import tune_malloc
    from stable_audio_tools.interface.gradio import create_ui, launch_ui, private_gradio_temp_dir
    from stable_audio_tools.interface.interfaces.adapters import parse_adapter_flag
    from stable_audio_tools.models.safe_load import enable_trust_pickle

    tune_malloc()

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")
    torch.manual_seed(42)
    try:
        with _sigterm_as_interrupt(), private_gradio_temp_dir():
            try:
                ui = create_ui(model_config_path=args.model_config, ckpt_path=args.ckpt_path,
                               pretrained_name=args.pretrained_name, pretransform_ckpt_path=args.pretransform_ckpt_path,
                               model_half=args.model_half, gradio_title=args.title, device=args.device,
                               limits=limits, adapters=[parse_adapter_flag(spec) for spec in args.adapter],
                               dtype=args.dtype, quantize=args.quantize, compile=args.compile)
            except (FileNotFoundError, ValueError) as e:
                sys.exit(f"run_gradio.py: {e}")
            auth = (args.username, args.password) if args.username else None
            try:
                launch_ui(ui, share=args.share, auth=auth, server_name=args.server_name, server_port=args.port)
            finally:
                ui.close()  # stops the queue, so a generation still running ends at its next step
    except KeyboardInterrupt:  # while loading, or before Gradio's own Ctrl+C handling took over
        sys.exit("run_gradio.py: interrupted")


if __name__ == "__main__":
    main()
