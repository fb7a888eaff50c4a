"""Generate audio from the command line (text-to-audio, any length, continuation, inpainting, audio-to-audio).

    python generate.py --pretrained-name stabilityai/stable-audio-open-1.0 --prompt "128 BPM tech house drum loop" \
        --seconds 10 --seed 1 --output-dir outputs

Every flag is listed by ``--help`` and documented in docs/inference.md ("Command line"). Each output file gets a
JSON sidecar with every setting needed to reproduce it (``--from-sidecar FILE.json``). With
``--rank-by-clap MODEL`` the outputs (e.g. ``--num-candidates 4``) are ranked by CLAP score per prompt.
"""
import json
import sys
from pathlib import Path
from typing import List, Optional

from stable_audio_tools.inference.cli import build_parser, main as generate


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    embedder = None
    if args.rank_by_clap:
        from stable_audio_tools.metrics import MissingPackageError, MissingWeightsError, create_embedder

        try:
            embedder = create_embedder("clap", model=args.rank_by_clap)
        except (MissingPackageError, MissingWeightsError, OSError, ValueError) as e:
            sys.exit(f"generate.py: --rank-by-clap {args.rank_by_clap}: {e}")
    paths = generate(argv)
    if embedder is None:
        return
    from stable_audio_tools.metrics import rank_generated_files

    try:
        ranking = rank_generated_files(paths, embedder)
    except ValueError as e:
        sys.exit(f"generate.py: {e}")
    out = Path(args.output_dir) / "clap_ranking.json"
    out.write_text(json.dumps({"clap_model": args.rank_by_clap, "ranking": ranking}, indent=2), encoding="utf-8")
    for prompt, rows in ranking.items():
        print(f"{prompt!r}: " + ", ".join(f"{r['clap_rank']}. {r['file']} ({r['clap_score']:.3f})" for r in rows))
    print(f"ranking written to {out}")


if __name__ == "__main__":
    main()
