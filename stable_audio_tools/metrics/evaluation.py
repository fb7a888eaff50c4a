"""Evaluate a set of generated audio against a reference set (and prompts) with the chosen metrics.

:class:`Evaluator` is what ``evaluate.py`` runs; it works on :class:`~.collections.AudioCollection` objects, so
training code can hand it audio tensors as well as folders. Metrics (``METRICS``):

- ``fd``: Frechet distance between the embedding sets (``embedder``), lower is better;
- ``kl``: KL divergence between classifier label distributions of same-name pairs (``kl_classifier``, in the
  ``convention``'s definition, see :mod:`.kl`), lower is better;
- ``clap``: CLAP score of generated items against their prompts (``clap_embedder``), higher is better;
- ``si_sdr``, ``mrstft``, ``mel``: reconstruction metrics of same-name pairs (see :mod:`.reconstruction`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from .clap import clap_scores
from .collections import AudioCollection, EvaluationError
from .embedders import CONVENTIONS, AudioEmbedder, create_embedder, embedder_class
from .frechet import frechet_distance_from_embeddings
from .kl import kl_audiocraft, kl_sam
from .reconstruction import log_mel_distance, multi_resolution_stft_distance, si_sdr

__all__ = ["METRICS", "RECONSTRUCTION_METRICS", "EvaluationConfig", "Evaluator", "parse_metrics"]

log = logging.getLogger(__name__)

RECONSTRUCTION_METRICS: Dict[str, Callable[..., torch.Tensor]] = {
    "si_sdr": lambda est, ref, sr: si_sdr(est, ref),
    "mrstft": lambda est, ref, sr: multi_resolution_stft_distance(est, ref),
    "mel": lambda est, ref, sr: log_mel_distance(est, ref, sr),
}
METRICS = ("fd", "kl", "clap", *RECONSTRUCTION_METRICS)
HIGHER_IS_BETTER = {"fd": False, "kl": False, "clap": True, "si_sdr": True, "mrstft": False, "mel": False}


def parse_metrics(text: str) -> List[str]:
    """``"fd,kl"`` -> ``["fd", "kl"]``; unknown or repeated names raise :class:`EvaluationError`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise EvaluationError(f"--metrics {text!r}: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(METRICS)}")
    if len(set(names)) != len(names):
        raise EvaluationError(f"--metrics {text!r}: a metric is listed twice")
    return names


@dataclass
class EvaluationConfig:
    """What to compute and how.

    Args:
        metrics: list of str, default ``["fd", "kl", "clap"]``; names from ``METRICS``.
        embedder: str, default ``"openl3"``; the Frechet-distance embedder.
        kl_classifier: str, default ``"passt"``; the classifier for ``kl``.
        clap_embedder: str, default ``"clap"``; the text/audio embedder for ``clap``.
        convention: str, default ``"sam"``; ``"sam"`` (stable-audio-metrics) or ``"audiocraft"``.
        options: dict, default {}; per embedder name, its constructor options (e.g. ``{"clap": {"model": DIR}}``).
        device: str, default ``"cpu"``.
        allow_mixed_sample_rates: bool, default False; accept sets with different sample rates for fd/kl/clap
            (everything is resampled to the embedder's rate, but a lower-rate set lacks the high band).
        progress: bool, default True; show progress bars.
    """

    metrics: List[str] = field(default_factory=lambda: ["fd", "kl", "clap"])
    embedder: str = "openl3"
    kl_classifier: str = "passt"
    clap_embedder: str = "clap"
    convention: str = "sam"
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    allow_mixed_sample_rates: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise EvaluationError(f"metrics: unknown {unknown or '(none)'}; choose from {', '.join(METRICS)}")
        if self.convention not in CONVENTIONS:
            raise EvaluationError(f"--convention {self.convention!r}: choose from {', '.join(CONVENTIONS)}")
        for metric, name, flag, capability in (("fd", self.embedder, "--embedder", "fd"),
                                               ("kl", self.kl_classifier, "--kl-classifier", "kl"),
                                               ("clap", self.clap_embedder, "--clap-embedder", "clap")):
            if metric not in self.metrics:
                continue
            try:
                cls = embedder_class(name)
            except KeyError as err:
                raise EvaluationError(f"{flag} {name}: {err.args[0]}") from None
            if capability not in cls.capabilities:
                raise EvaluationError(f"{flag} {name}: this embedder cannot compute '{metric}' (it supports "
                                      f"{', '.join(cls.capabilities)})")


class Evaluator:
    """Runs an :class:`EvaluationConfig` on collections; embedders are created once, on first use.

    Embeddings of reference items are cached across :meth:`evaluate` calls (keyed by the collection's role,
    origin and item name), so repeated evaluations against one reference set (validation during training) embed
    it once; generated items are embedded afresh on every call.
    """

    def __init__(self, config: EvaluationConfig) -> None:
        self.config = config
        self._embedders: Dict[str, AudioEmbedder] = {}
        self._cache: Dict[Tuple[str, str, str, str, str], torch.Tensor] = {}

    def embedder(self, name: str) -> AudioEmbedder:
        if name not in self._embedders:
            options = dict(self.config.options.get(name, {}))
            options.setdefault("convention", self.config.convention)
            options.setdefault("device", self.config.device)
            log.info("loading embedder %s", name)
            self._embedders[name] = create_embedder(name, **options)
        return self._embedders[name]

    # -- checks ----------------------------------------------------------------------------------------------
    def _check_inputs(self, generated: AudioCollection, reference: Optional[AudioCollection],
                      prompts: Optional[Mapping[str, str]]) -> None:
        needs_reference = [m for m in self.config.metrics if m != "clap"]
        if needs_reference and reference is None:
            raise EvaluationError(f"metric(s) {', '.join(needs_reference)} need a reference set (--reference DIR)")
        if "clap" in self.config.metrics and not prompts:
            raise EvaluationError("metric clap needs prompts (--prompts FILE)")
        if reference is None or self.config.allow_mixed_sample_rates:
            return
        if not any(m in ("fd", "kl", "clap") for m in self.config.metrics):
            return
        rates = {**{r: (generated, n) for r, n in generated.sample_rates().items()},
                 **{r: (reference, n) for r, n in reference.sample_rates().items()}}
        if len(rates) > 1:
            examples = "; ".join(f"{c.role} '{n}' at {r} Hz" for r, (c, n) in sorted(rates.items()))
            raise EvaluationError(f"the audio has different sample rates ({examples}). Embedding resamples "
                                  "everything, but audio at a lower rate has no high band and scores worse for "
                                  "that alone: resample the sets to one rate, or pass --allow-mixed-sample-rates")

    def _pairs(self, generated: AudioCollection, reference: AudioCollection, metric: str) -> List[str]:
        common = sorted(set(generated.names()) & set(reference.names()))
        if not common:
            raise EvaluationError(f"{metric} compares generated and reference files of the same name, and no name is "
                                  f"in both sets (e.g. generated '{generated.names()[0]}', reference "
                                  f"'{reference.names()[0]}')")
        missing = len(generated) - len(common)
        if missing:
            log.warning("%s: %d generated item(s) have no reference of the same name and are left out", metric,
                        missing)
        return common

    def _progress(self, names: Sequence[str], desc: str):
        return tqdm(names, desc=desc, unit="file", disable=not self.config.progress, leave=False)

    def _cached(self, kind: str, embedder: str, collection: AudioCollection, name: str,
                compute: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        key = (kind, embedder, collection.role, collection.origin, name)
        if key not in self._cache:
            audio, rate = collection.load(name)
            try:
                self._cache[key] = compute(audio, rate)
            except ValueError as err:
                raise EvaluationError(f"{collection.role} item '{name}': {err}") from err
        return self._cache[key]

    # -- metrics ---------------------------------------------------------------------------------------------
    def _fd(self, generated: AudioCollection, reference: AudioCollection) -> Dict[str, Any]:
        embedder = self.embedder(self.config.embedder)
        sets = []
        for collection in (generated, reference):
            rows = [self._cached("fd", embedder.name, collection, n, embedder.embed)
                    for n in self._progress(collection.names(), f"fd/{embedder.name} {collection.role}")]
            sets.append(torch.cat(rows))
        try:
            value = frechet_distance_from_embeddings(sets[0], sets[1])
        except ValueError as err:
            raise EvaluationError(f"fd: {err} (use more files, or an embedder with frame embeddings)") from err
        return {"value": value, "embedder": embedder.name, "generated_embeddings": int(sets[0].shape[0]),
                "reference_embeddings": int(sets[1].shape[0]), "dim": int(sets[0].shape[1])}

    def _kl(self, generated: AudioCollection, reference: AudioCollection) -> Dict[str, Any]:
        embedder = self.embedder(self.config.kl_classifier)
        names = self._pairs(generated, reference, "kl")
        gen, ref = [], []
        for name in self._progress(names, f"kl/{embedder.name}"):
            gen.append(self._cached("kl", embedder.name, generated, name, embedder.label_logits))
            ref.append(self._cached("kl", embedder.name, reference, name, embedder.label_logits))
        result = kl_sam(gen, ref) if self.config.convention == "sam" else kl_audiocraft(gen, ref)
        value = result.pop("kl")
        return {"value": value, "classifier": embedder.name, "convention": self.config.convention, **result}

    def _clap(self, generated: AudioCollection, prompts: Mapping[str, str]) -> Dict[str, Any]:
        embedder = self.embedder(self.config.clap_embedder)
        names = [n for n in generated.names() if n in prompts]
        if not names:
            raise EvaluationError(f"clap: no generated file is named after a prompt id (e.g. file "
                                  f"'{generated.names()[0]}', prompt id '{next(iter(prompts))}'); name the files "
                                  "after the ids in the prompts file")
        if len(names) < len(generated):
            log.warning("clap: %d generated item(s) have no prompt and are left out", len(generated) - len(names))
        audio = torch.cat([self._cached("clap", embedder.name, generated, n, embedder.embed_clip)
                           for n in self._progress(names, f"clap/{embedder.name}")])
        text = embedder.embed_text([prompts[n] for n in names])
        scores = clap_scores(audio, text)
        return {"value": float(scores.mean()), "embedder": embedder.name, "pairs": len(names),
                "per_item": dict(zip(names, [round(float(s), 6) for s in scores]))}

    def _reconstruction(self, metric: str, generated: AudioCollection,
                        reference: AudioCollection) -> Dict[str, Any]:
        names = self._pairs(generated, reference, metric)
        values = []
        for name in self._progress(names, metric):
            est, est_rate = generated.load(name)
            ref, ref_rate = reference.load(name)
            if est_rate != ref_rate:
                raise EvaluationError(f"{metric}: generated '{name}' is at {est_rate} Hz but its reference at "
                                      f"{ref_rate} Hz; reconstruction metrics compare samples, so decode at the "
                                      "reference's rate")
            if est.shape[0] != ref.shape[0]:
                raise EvaluationError(f"{metric}: generated '{name}' has {est.shape[0]} channel(s), its reference "
                                      f"{ref.shape[0]}")
            length = min(est.shape[-1], ref.shape[-1])
            values.append(float(RECONSTRUCTION_METRICS[metric](est[None, :, :length], ref[None, :, :length],
                                                               ref_rate)[0]))
        return {"value": sum(values) / len(values), "pairs": len(values)}

    def evaluate(self, generated: AudioCollection, reference: Optional[AudioCollection] = None,
                 prompts: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Compute every configured metric; returns ``{"results": {metric: {...}}, "settings": {...}}``."""
        self._check_inputs(generated, reference, prompts)
        self._cache = {k: v for k, v in self._cache.items() if k[2] != generated.role}
        results: Dict[str, Dict[str, Any]] = {}
        for metric in self.config.metrics:
            start = time.perf_counter()
            if metric == "fd":
                results[metric] = self._fd(generated, reference)
            elif metric == "kl":
                results[metric] = self._kl(generated, reference)
            elif metric == "clap":
                results[metric] = self._clap(generated, prompts)
            else:
                results[metric] = self._reconstruction(metric, generated, reference)
            results[metric]["higher_is_better"] = HIGHER_IS_BETTER[metric]
            results[metric]["seconds"] = round(time.perf_counter() - start, 3)
        return {"results": results, "settings": self.settings(generated, reference)}

    def settings(self, generated: AudioCollection, reference: Optional[AudioCollection]) -> Dict[str, Any]:
        """Every setting that affects the numbers, with the embedders' own settings and library versions."""
        import transformers

        import stable_audio_tools

        return {"config": asdict(self.config), "generated": generated.describe(),
                "reference": None if reference is None else reference.describe(),
                "embedders": {name: e.settings() for name, e in self._embedders.items()},
                "versions": {"stable_audio_tools": getattr(stable_audio_tools, "__version__", "unknown"),
                             "torch": torch.__version__, "transformers": transformers.__version__}}
