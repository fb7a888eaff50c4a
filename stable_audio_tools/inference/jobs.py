"""Generation jobs of the command line (``generate.py``): settings, prompt files, checks, defaults, file names and
the JSON sidecar that reproduces a file.

A :class:`GenerationSettings` holds everything that determines one generation call. :func:`resolve_settings`
replaces the ``None`` defaults by the model's (steps, CFG scale, sampler, sigmas per diffusion objective) and draws
a seed for ``-1``, so the sidecar written next to each file records concrete values only: running the same model
with the sidecar's settings (``generate.py --from-sidecar FILE.json``) gives the same audio on the same kind of
device. :func:`check_settings` runs every check that does not need the model (empty prompt, seconds beyond what
the model can do, unreadable audio, malformed masks, unknown sampler) before any model is built.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .. import __version__
from ..audio import AudioDecodeError, load_audio, resample
from .audio_edit import parse_regions
from .lengths import check_seconds, model_window
from ..samplers.dispatch import K_SAMPLER_TYPES, RF_SAMPLER_TYPES, V_SAMPLER_TYPES

__all__ = ["MODES", "GenerationSettings", "read_prompts_file", "resolve_settings", "check_settings",
           "model_objective", "conditioning_ids", "strength_to_noise_level", "output_stem", "sidecar_dict",
           "settings_from_sidecar", "SourceAudio", "load_source"]

MODES = ("generate", "continue", "prepend", "inpaint", "init")
SIDECAR_VERSION = 1
PROMPT_FILE_KEYS = ("prompt", "negative_prompt", "seconds", "seed")
V_SAMPLERS = K_SAMPLER_TYPES + V_SAMPLER_TYPES
DEFAULTS = {  # objective -> steps, cfg_scale, sampler_type, sigma_min, sigma_max
    "v": (100, 7.0, "dpmpp-3m-sde", 0.3, 500.0),
    "rectified_flow": (50, 7.0, "euler", None, 1.0),
    "rf_denoiser": (8, 1.0, "pingpong", None, 1.0),
}
LM_DEFAULTS = {"cfg_scale": 3.0, "temperature": 1.0, "top_k": 250, "top_p": 0.0}


@dataclass
class GenerationSettings:
    """One generation call of ``generate.py`` (``None`` = the model's default, filled in by
    :func:`resolve_settings`).

    Attributes:
        prompt (str, default ""): text prompt (required when the model has a ``prompt`` conditioner).
        negative_prompt (str | None, default None): replaces the unconditional CFG branch.
        seconds (float | None, default None): length to generate; continuation / prepend: seconds of new audio;
            inpaint: ignored (the file's length); init: default the file's length; else default the model's window.
        seconds_start (float, default 0): ``seconds_start`` conditioning.
        seed (int, default -1): RNG seed (-1: random, recorded in the sidecar).
        steps, cfg_scale, sampler_type, sigma_min, sigma_max: sampling; default per diffusion objective.
        batch_size (int, default 1): outputs of one call (they share the seed; each file records its index).
        full_window (bool, default False): sample the model's whole ``sample_size`` and trim (upstream's path).
        mode (str, default "generate"): one of :data:`MODES`.
        source (str | None, default None): the audio file of continue / prepend / inpaint / init.
        mask (str | None, default None): inpaint regions ``START:END[,START:END...]`` in seconds (regenerated).
        init_strength (float, default 0.5): init mode: how far to move from the source, in (0, 1].
        init_mode (str, default "invert"): ``invert`` (ODE inversion, keeps structure) or ``noise`` (upstream).
        crossfade_ms (float, default 20): length of the click-free join ramps of continue / prepend / inpaint.
        decode_chunk_size (int, default 128): latent frames per decoding window (longer outputs decode chunked).
        decode_overlap (int, default 32): overlap of decoding windows in latent frames.
        temperature, top_k, top_p: LM sampling (default 1.0, 250, 0.0).
        candidate (int, default 0): index among ``--num-candidates`` (seed = base seed + candidate).
    """

    prompt: str = ""
    negative_prompt: Optional[str] = None
    seconds: Optional[float] = None
    seconds_start: float = 0.0
    seed: int = -1
    steps: Optional[int] = None
    cfg_scale: Optional[float] = None
    sampler_type: Optional[str] = None
    sigma_min: Optional[float] = None
    sigma_max: Optional[float] = None
    batch_size: int = 1
    full_window: bool = False
    mode: str = "generate"
    source: Optional[str] = None
    mask: Optional[str] = None
    init_strength: float = 0.5
    init_mode: str = "invert"
    crossfade_ms: float = 20.0
    decode_chunk_size: int = 128
    decode_overlap: int = 32
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    candidate: int = 0


def read_prompts_file(path: str) -> List[Dict[str, Any]]:
    """``--prompts FILE``: one prompt per line, or JSON objects (JSONL) with ``prompt`` and optional
    ``negative_prompt``, ``seconds``, ``seed``. Blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--prompts {path}: cannot read the file ({e})") from e
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("{"):
            items.append({"prompt": line})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--prompts {path} line {number}: invalid JSON ({e.msg})") from e
        unknown = sorted(set(item) - set(PROMPT_FILE_KEYS))
        if unknown:
            raise ValueError(f"--prompts {path} line {number}: unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(PROMPT_FILE_KEYS)}")
        if not isinstance(item.get("prompt"), str):
            raise ValueError(f"--prompts {path} line {number}: 'prompt' (a string) is required")
        for key, kind in (("seconds", (int, float)), ("seed", (int,)), ("negative_prompt", (str,))):
            if key in item and (not isinstance(item[key], kind) or isinstance(item[key], bool)):
                raise ValueError(f"--prompts {path} line {number}: '{key}' must be a {kind[0].__name__}")
        items.append(item)
    if not items:
        raise ValueError(f"--prompts {path} holds no prompts (one per line, or JSON objects with 'prompt')")
    return items


def model_objective(model_config: Mapping[str, Any]) -> Optional[str]:
    """``model.diffusion.diffusion_objective`` of a conditioned diffusion model (default ``"v"``), ``"v"`` for
    unconditional ones, None for LMs."""
    model_type = model_config.get("model_type")
    if model_type == "lm":
        return None
    if model_type == "diffusion_uncond":
        return "v"
    return ((model_config.get("model") or {}).get("diffusion") or {}).get("diffusion_objective", "v")


def conditioning_ids(model_config: Mapping[str, Any]) -> List[str]:
    """The conditioner ids of ``model.conditioning.configs``."""
    conditioning = (model_config.get("model") or {}).get("conditioning") or {}
    return [c.get("id") for c in conditioning.get("configs", [])]


def strength_to_noise_level(strength: float, objective: str, sampler_type: str, sigma_max: float) -> float:
    """``--init-strength`` in (0, 1] (a model time) -> the sampler's start level: the Karras sigma
    ``tan(pi s / 2)`` (at most ``sigma_max``) for k-diffusion samplers, the time itself for v-DDIM and rectified
    flow."""
    if objective == "v" and sampler_type not in ("v-ddim", "v-ddim-cfgpp"):
        return min(math.tan(math.pi / 2 * min(strength, 0.9999)), sigma_max)
    return float(strength)


def resolve_settings(settings: GenerationSettings, model_config: Mapping[str, Any]) -> GenerationSettings:
    """A copy with the model's defaults filled in and a concrete seed (drawn when ``seed == -1``)."""
    s = dataclasses.replace(settings)
    if s.seed == -1:
        s.seed = int(np.random.randint(0, 2 ** 31 - 1))
    objective = model_objective(model_config)
    if objective is None:
        s.cfg_scale = LM_DEFAULTS["cfg_scale"] if s.cfg_scale is None else s.cfg_scale
        s.temperature = LM_DEFAULTS["temperature"] if s.temperature is None else s.temperature
        s.top_k = LM_DEFAULTS["top_k"] if s.top_k is None else s.top_k
        s.top_p = LM_DEFAULTS["top_p"] if s.top_p is None else s.top_p
    else:
        steps, cfg, sampler, sigma_min, sigma_max = DEFAULTS.get(objective, DEFAULTS["v"])
        s.steps = steps if s.steps is None else s.steps
        s.cfg_scale = cfg if s.cfg_scale is None else s.cfg_scale
        s.sampler_type = sampler if s.sampler_type is None else s.sampler_type
        s.sigma_min = sigma_min if s.sigma_min is None else s.sigma_min
        s.sigma_max = sigma_max if s.sigma_max is None else s.sigma_max
    if s.seconds is None and s.mode == "generate":
        s.seconds = model_window(model_config) / int(model_config["sample_rate"])
    return s


@dataclass
class SourceAudio:
    """A ``--continue`` / ``--prepend`` / ``--inpaint`` / ``--init-audio`` file at the model's rate ``[C, N]``."""

    path: str
    audio: torch.Tensor
    sha256: str

    @property
    def samples(self) -> int:
        return int(self.audio.shape[-1])


def load_source(path: str, sample_rate: int, flag: str) -> SourceAudio:
    """Read and resample an input file; raises ``ValueError`` naming ``flag`` and the file when it is unusable."""

    try:
        audio, sr = load_audio(path)
    except AudioDecodeError as e:
        raise ValueError(f"{flag} {path}: {e}") from e
    if audio.shape[-1] == 0:
        raise ValueError(f"{flag} {path}: the file holds no samples")
    audio = resample(audio, sr, sample_rate) if sr != sample_rate else audio
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return SourceAudio(path=str(path), audio=audio, sha256=digest)


def _flag_of_mode(mode: str) -> str:
    return {"continue": "--continue", "prepend": "--prepend", "inpaint": "--inpaint", "init": "--init-audio"}[mode]


def check_settings(s: GenerationSettings, model_config: Mapping[str, Any],
                   sources: Dict[str, SourceAudio]) -> Optional[SourceAudio]:
    """Every check that needs no model, on resolved settings; loads (and caches in ``sources``) the input audio.
    Raises ``ValueError`` naming the flag. Returns the input audio of the mode, if any."""
    model_type = model_config.get("model_type")
    supported = ("diffusion_cond", "diffusion_cond_inpaint", "diffusion_uncond", "lm")
    if model_type not in supported:
        raise ValueError(f"model_type {model_type!r} cannot generate from the command line; supported: "
                         f"{', '.join(supported)}")
    if s.mode not in MODES:
        raise ValueError(f"unknown mode {s.mode!r}; expected one of {', '.join(MODES)}")
    ids = conditioning_ids(model_config)
    if "prompt" in ids and not s.prompt.strip():
        raise ValueError("--prompt is empty: this model is conditioned on text; give a non-empty prompt")
    if s.negative_prompt and "prompt" not in ids:
        raise ValueError("--negative-prompt needs a model with a 'prompt' conditioner")
    unsupported = [i for i in ids if i not in ("prompt", "seconds_start", "seconds_total")]
    if unsupported:
        raise ValueError(f"the model has conditioner id(s) {', '.join(unsupported)} that generate.py has no flag "
                         "for (it fills prompt, seconds_start and seconds_total); use "
                         "stable_audio_tools.inference.generation.generate_diffusion_cond from Python")
    if s.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {s.batch_size}")
    if s.crossfade_ms < 0:
        raise ValueError(f"--crossfade-ms must be >= 0, got {s.crossfade_ms}")
    if s.decode_chunk_size <= s.decode_overlap or s.decode_overlap < 0:
        raise ValueError(f"--decode-chunk-size ({s.decode_chunk_size}) must exceed --decode-overlap "
                         f"({s.decode_overlap}) >= 0")
    objective = model_objective(model_config)
    if objective is not None:
        if s.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {s.steps}")
        accepted = RF_SAMPLER_TYPES if objective != "v" else V_SAMPLERS
        if s.sampler_type not in accepted:
            raise ValueError(f"--sampler {s.sampler_type!r} does not fit this {objective!r} model; choose one of "
                             f"{', '.join(accepted)}")
    if s.mode != "generate":
        if model_type not in ("diffusion_cond", "diffusion_cond_inpaint") and not (
                model_type == "diffusion_uncond" and s.mode == "init" and s.init_mode == "noise") and not (
                model_type == "lm" and s.mode == "continue"):
            raise ValueError(f"{_flag_of_mode(s.mode)} needs a diffusion_cond or diffusion_cond_inpaint model "
                             f"(this one is {model_type}); unconditional models support --init-audio with "
                             "--init-mode noise only, LMs --continue only")
        if s.source is None:
            raise ValueError(f"{_flag_of_mode(s.mode)} needs an audio file")
        flag = _flag_of_mode(s.mode)
        if s.source not in sources:
            sources[s.source] = load_source(s.source, int(model_config["sample_rate"]), flag)
        source = sources[s.source]
        _check_mode(s, model_config, source, flag)
        return source
    check_seconds(model_config, s.seconds)
    return None


def _check_mode(s: GenerationSettings, model_config: Mapping[str, Any], source: SourceAudio, flag: str) -> None:
    sample_rate = int(model_config["sample_rate"])
    source_seconds = source.samples / sample_rate
    if s.mode in ("continue", "prepend"):
        if s.seconds is None:
            raise ValueError(f"{flag} needs --seconds: how many seconds of new audio to add")
        if s.seconds <= 0:
            raise ValueError(f"--seconds must be positive with {flag}, got {s.seconds}")
        check_seconds(model_config, s.seconds, flag="--seconds")
        window = model_window(model_config) / sample_rate
        if s.seconds >= window:
            raise ValueError(f"--seconds {s.seconds:g} with {flag} leaves no room for the audio prompt in the model's "
                             f"{window:.2f} s window; ask for less than {window:.2f} s of new audio")
    elif s.mode == "inpaint":
        if s.mask is None:
            raise ValueError("--inpaint needs --mask START:END[,START:END...] (seconds to regenerate)")
        for start, end in parse_regions(s.mask):
            if end > source_seconds + 1e-6:
                raise ValueError(f"--mask region {start:g}:{end:g} ends after the end of {source.path} "
                                 f"({source_seconds:.2f} s)")
        check_seconds(model_config, source_seconds, flag=f"--inpaint ({source.path})")
    else:
        if not 0 < s.init_strength <= 1:
            raise ValueError(f"--init-strength must be in (0, 1], got {s.init_strength}")
        if s.init_mode not in ("invert", "noise"):
            raise ValueError(f"--init-mode must be invert or noise, got {s.init_mode!r}")
        if s.init_mode == "invert" and model_config.get("model_type") != "diffusion_cond":
            raise ValueError(f"--init-mode invert needs a diffusion_cond model (this one is "
                             f"{model_config.get('model_type')}); use --init-mode noise")
        check_seconds(model_config, s.seconds if s.seconds is not None else source_seconds, flag="--seconds")


def _slug(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug[:limit].rstrip("_") or "untitled"


def output_stem(s: GenerationSettings, batch_index: int) -> str:
    """File name stem from the prompt and the seed: ``<prompt>_seed<seed>[_<index>]`` (plus the mode)."""
    stem = f"{_slug(s.prompt)}_seed{s.seed}"
    if s.mode != "generate":
        stem += f"_{s.mode}"
    if s.batch_size > 1:
        stem += f"_{batch_index}"
    return stem


def sidecar_dict(s: GenerationSettings, batch_index: int, model_info: Mapping[str, Any], run_info: Mapping[str, Any],
                 source: Optional[SourceAudio]) -> Dict[str, Any]:
    """The JSON sidecar of one output file: settings, batch index, model, device / dtype and the input's hash."""

    data = {"stable_audio_tools_sidecar": SIDECAR_VERSION, "version": __version__,
            "settings": dataclasses.asdict(s), "batch_index": batch_index, "model": dict(model_info),
            **dict(run_info)}
    if source is not None:
        data["source_sha256"] = source.sha256
    return data


def settings_from_sidecar(path: str) -> Tuple[GenerationSettings, Dict[str, Any]]:
    """``(settings, sidecar)`` read back from a sidecar file (``--from-sidecar``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--from-sidecar {path}: cannot read it as JSON ({e})") from e
    if not isinstance(data, dict) or data.get("stable_audio_tools_sidecar") != SIDECAR_VERSION:
        raise ValueError(f"--from-sidecar {path}: not a generate.py sidecar (version {SIDECAR_VERSION})")
    known = {f.name for f in dataclasses.fields(GenerationSettings)}
    settings = data.get("settings") or {}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"--from-sidecar {path}: unknown setting(s) {', '.join(unknown)}")
    if settings.get("source") is not None and not os.path.exists(settings["source"]):
        raise ValueError(f"--from-sidecar {path}: its input audio {settings['source']} is missing")
    return GenerationSettings(**settings), data
