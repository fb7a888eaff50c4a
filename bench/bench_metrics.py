"""Embedding throughput of the metric embedders, in seconds of audio embedded per second of wall time.

    python bench/bench_metrics.py [--embedders logmel,clap,ast] [--clips 3] [--seconds 10] [--threads 2]

Each clip is stereo 44.1 kHz noise; the timed call is the embedder's full path (mono/stereo handling,
resampling to its rate, peak normalisation, feature extraction, model), after one warm-up clip. ``clap`` and
``ast`` are built from transformers' default configs (the architectures of laion/clap-htsat-unfused and of
MIT/ast-finetuned-audioset-10-10-0.4593) with random weights, so no download is needed and the speed is that of
the real models. Also times the Frechet distance of two 2048 x 512 embedding sets. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _default_clap(directory: Path) -> str:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = RobertaTokenizerFast(tokenizer_object=tokenizer)
    ClapModel(ClapConfig()).save_pretrained(str(directory))
    ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=fast).save_pretrained(str(directory))
    return str(directory)


def _default_ast(directory: Path) -> str:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    ASTForAudioClassification(ASTConfig(num_labels=527)).save_pretrained(str(directory))
    ASTFeatureExtractor().save_pretrained(str(directory))
    return str(directory)


def build(name: str, workdir: Path):
    from stable_audio_tools.metrics import create_embedder

    if name == "clap":
        return create_embedder("clap", model=_default_clap(workdir / "clap"))
    if name == "ast":
        return create_embedder("ast", model=_default_ast(workdir / "ast"))
    return create_embedder(name)


def time_embedder(embedder, clips: int, seconds: float) -> dict:
    sample_rate = 44100
    generator = torch.Generator().manual_seed(0)
    audio = [0.3 * torch.randn(2, int(seconds * sample_rate), generator=generator) for _ in range(clips + 1)]
    run = embedder.label_logits if "fd" not in embedder.capabilities else embedder.embed
    run(audio[0], sample_rate)  # warm-up
    times = []
    for clip in audio[1:]:
        start = time.perf_counter()
        run(clip, sample_rate)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"median_s_per_clip": median, "audio_s_per_s": seconds / median}


def time_frechet() -> float:
    from stable_audio_tools.metrics import frechet_distance_from_embeddings

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 512, generator=generator), torch.randn(2048, 512, generator=generator)
    start = time.perf_counter()
    frechet_distance_from_embeddings(a, b)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedders", default="logmel,clap,ast", help="comma-separated registered embedders")
    parser.add_argument("--clips", type=int, default=3, help="timed clips per embedder")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clips} clips of {args.seconds:g} s")
    print("| embedder | median s per clip | seconds of audio per second |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n.strip() for n in args.embedders.split(",") if n.strip()]:
            with torch.no_grad():
                result = time_embedder(build(name, Path(tmp)), args.clips, args.seconds)
            print(f"| {name} | {result['median_s_per_clip']:.3f} | {result['audio_s_per_s']:.1f} |", flush=True)
    print(f"\nFrechet distance, 2 x 2048 embeddings of 512 dims: {time_frechet():.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
