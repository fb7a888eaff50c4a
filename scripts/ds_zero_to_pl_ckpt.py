"""Convert a DeepSpeed ZeRO checkpoint directory (``train.py --strategy deepspeed``) to one Lightning checkpoint.

    python scripts/ds_zero_to_pl_ckpt.py --save_path runs/NAME/ID/checkpoints/epoch=0-step=1000.ckpt \\
        --output_path lightning_model.pt
    python unwrap_model.py --ckpt-path lightning_model.pt --name my_model

The output holds the consolidated fp32 weights (``state_dict``) and the run's Lightning keys (step, embedded
``model_config``), as a training checkpoint that ``unwrap_model.py`` reads. ZeRO stages 1, 2 and 3 are supported and
DeepSpeed need not be installed. The optimizer state is not converted, so the output is for unwrapping and inference,
not for resuming. Files are read with the safe loader; --trust-pickle (dangerous) also allows files that need other
Python classes (see docs/security.md).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save_path", "--save-path", required=True,
                        help="the DeepSpeed checkpoint directory (the one holding the 'latest' file)")
    parser.add_argument("--output_path", "--output-path", default="lightning_model.pt",
                        help="the Lightning checkpoint file to write (default: lightning_model.pt)")
    parser.add_argument("--tag", default=None,
                        help="the checkpoint sub-folder to convert (default: the one named in the 'latest' file)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="DANGEROUS: allow files that need arbitrary unpickling (they can run any code); only "
                             "for files you trust. Same as STABLE_AUDIO_TOOLS_TRUST_PICKLE=1 (docs/security.md)")
    args = parser.parse_args(argv)

    from stable_audio_tools.models.safe_load import enable_trust_pickle
    from stable_audio_tools.training.zero_checkpoint import convert_zero_checkpoint

    if args.trust_pickle:
        enable_trust_pickle("--trust-pickle")
    checkpoint = convert_zero_checkpoint(args.save_path, args.output_path, args.tag)
    print(f"wrote {args.output_path}: {len(checkpoint['state_dict'])} tensors, global step "
          f"{checkpoint.get('global_step', '?')}; next: python unwrap_model.py --ckpt-path {args.output_path} "
          f"--name <model name>")
    return args.output_path


if __name__ == "__main__":
    from stable_audio_tools.models.safe_load import CheckpointError
    from stable_audio_tools.training.export import NonFiniteError

    try:
        main()
    except (FileNotFoundError, ValueError, CheckpointError, NonFiniteError) as e:
        sys.exit(f"ds_zero_to_pl_ckpt.py: {e}")
