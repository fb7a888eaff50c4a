"""Generate audio from the command line (text-to-audio, any length, continuation, inpainting, audio-to-audio).

    python generate.py --pretrained-name stabilityai/stable-audio-open-1.0 --prompt "128 BPM tech house drum loop" \
        --seconds 10 --seed 1 --output-dir outputs

Every flag is listed by ``--help`` and documented in docs/inference.md ("Command line"). Each output file gets a
JSON sidecar with every setting needed to reproduce it (``--from-sidecar FILE.json``).
"""
from stable_audio_tools.inference.cli import main

if __name__ == "__main__":
    main()
