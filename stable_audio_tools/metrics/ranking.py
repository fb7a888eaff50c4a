"""Ranking of generated candidates by CLAP score, for ``generate.py --rank-by-clap MODEL``.

``generate.py`` writes one audio file plus a JSON sidecar per output; :func:`rank_generated_files` groups the files
by prompt, scores each against its prompt with a CLAP embedder (:func:`~stable_audio_tools.metrics.rank_by_clap`),
adds ``clap_score`` and ``clap_rank`` (1 = best) to every sidecar and returns the ranking per prompt. It reads the
files and sidecars only, so it works on any folder that ``generate.py`` wrote.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from ..audio import load_audio
from .clap import rank_by_clap
from .embedders import AudioEmbedder

__all__ = ["rank_generated_files"]


def _prompt_of(sidecar: Path) -> str:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot rank {sidecar.with_suffix('')}: its sidecar {sidecar} is unreadable ({e})") from e
    return str((data.get("settings") or {}).get("prompt", ""))


def rank_generated_files(paths: Sequence[Path], embedder: AudioEmbedder) -> Dict[str, List[Dict[str, object]]]:
    """Score ``generate.py`` outputs against their prompts and rank them per prompt, best first.

    Args:
        paths: audio files written by ``generate.py``; each has its sidecar ``<file>.json`` beside it.
        embedder: an embedder with the ``"clap"`` capability (``create_embedder("clap", model=...)``).

    Returns ``{prompt: [{"file", "clap_score", "clap_rank"}, ...]}``; every sidecar gains ``clap_score`` and
    ``clap_rank``. Raises ``ValueError`` when a prompt is empty (nothing to score against).
    """
    groups: Dict[str, List[Path]] = {}
    for path in paths:
        path = Path(path)
        groups.setdefault(_prompt_of(path.with_suffix(".json")), []).append(path)
    if "" in groups:
        raise ValueError("--rank-by-clap needs a text prompt for every output; some were generated without one")
    ranking: Dict[str, List[Dict[str, object]]] = {}
    for prompt, files in groups.items():
        audio = [load_audio(f) for f in files]
        rates = {sr for _, sr in audio}
        order = rank_by_clap([a for a, _ in audio], rates.pop(), prompt, embedder)
        ranking[prompt] = []
        for rank, (index, score) in enumerate(order, start=1):
            sidecar = files[index].with_suffix(".json")
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            data.update(clap_score=score, clap_rank=rank, clap_model=getattr(embedder, "model_id", None))
            sidecar.write_text(json.dumps(data, indent=2), encoding="utf-8")
            ranking[prompt].append({"file": files[index].name, "clap_score": score, "clap_rank": rank})
    return ranking
