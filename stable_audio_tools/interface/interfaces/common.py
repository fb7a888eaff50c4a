"""Helpers shared by the Gradio interfaces: Blocks styling across Gradio versions, error reporting, audio input
decoding, output files, spectrogram images and sampling progress/previews.

Every generate/process handler is wrapped in :func:`report_errors`, so that a bad input or a failing model call
shows a message in the browser (``gr.Error``) while the server keeps serving.
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import gradio as gr
import numpy as np
import soundfile as sf
import torch
from PIL import Image

from ...audio import AudioDecodeError, load_audio, resample
from ...inference.utils import decode_latents
from ...plotting import audio_spectrogram_image
from .limits import DemoLimits, RequestGate, RequestGuard

__all__ = [
    "GRADIO_MAJOR", "UI_JS", "new_blocks", "single_tab_ui", "launch_style_kwargs", "copy_event_kwargs",
    "report_errors", "AudioValue",
    "load_audio_value", "prepare_input_audio", "model_dtype", "parse_seed", "required_sample_size",
    "seconds_slider_settings", "condense_prompt", "output_basename", "FILE_FORMATS", "FILE_NAMING", "OutputWriter",
    "spectrogram", "SamplingMonitor", "DemoInterface", "add_output_components",
]

log = logging.getLogger(__name__)

GRADIO_MAJOR = int(gr.__version__.split(".")[0])

AudioValue = Union[None, str, os.PathLike, Tuple[int, np.ndarray]]
F = TypeVar("F", bound=Callable[..., Any])

# Client-side behaviour of the "Autoplay", "Infinite Radio" and "Auto Download" checkboxes and media-key handlers.
# Gradio's audio player keeps its playing <audio> element inside a shadow root, so the script looks for it there
# (every 250 ms, scoped to the output component) and listens to its events. Elements are looked up on use, so the
# script is harmless on pages without these controls.
UI_JS = """
() => {
  const checked = (id) => !!document.querySelector(`#${id} input[type="checkbox"]`)?.checked;
  const generateButton = () => document.querySelector('#generate-button');
  const downloadLink = () => document.querySelector('#output-audio a.download-link');
  const findMedia = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'AUDIO' && el.src) return el;
      const inner = el.shadowRoot && findMedia(el.shadowRoot);
      if (inner) return inner;
    }
    return null;
  };
  const player = () => {
    const output = document.querySelector('#output-audio');
    return output ? findMedia(output) : null;
  };
  let playNext = false;
  const watched = new WeakSet();
  const download = () => {
    const source = downloadLink();
    if (!source?.href) return;
    const link = document.createElement('a');
    link.href = source.href;
    link.download = source.getAttribute('download') || 'output.wav';
    document.body.appendChild(link);
    link.click();
    link.remove();
  };
  const onLoaded = (event) => {
    const audio = event.target;
    audio.dataset.radioQueued = '';
    if (checked('automatic-download')) download();
    if (checked('autoplay') || playNext) {
      playNext = false;
      audio.play().catch(() => {});
    }
  };
  const onTimeUpdate = (event) => {
    const audio = event.target;
    if (!checked('infinite-radio') || !Number.isFinite(audio.duration) || audio.dataset.radioQueued) return;
    if (audio.duration - audio.currentTime <= 1) {
      audio.dataset.radioQueued = '1';
      playNext = true;
      generateButton()?.click();
    }
  };
  setInterval(() => {
    const audio = player();
    if (!audio || watched.has(audio)) return;
    watched.add(audio);
    audio.addEventListener('loadedmetadata', onLoaded);
    audio.addEventListener('timeupdate', onTimeUpdate);
    if (audio.readyState >= 1) onLoaded({target: audio});
  }, 250);
  if ('mediaSession' in navigator) {
    navigator.mediaSession.setActionHandler('nexttrack', () => generateButton()?.click());
    navigator.mediaSession.setActionHandler('play', () => player()?.play());
    navigator.mediaSession.setActionHandler('pause', () => player()?.pause());
  }
}
"""


def _theme() -> Any:
    return gr.themes.Base()


def new_blocks(title: str = "") -> gr.Blocks:
    """A ``gr.Blocks`` with the demo's theme and script (Gradio 5 takes them here, Gradio 6 in ``launch``)."""
    style = {"theme": _theme(), "js": UI_JS} if GRADIO_MAJOR < 6 else {}
    return gr.Blocks(title=title or "stable-audio-tools", analytics_enabled=False, **style)


def single_tab_ui(interface: Any, gradio_title: str = "", tab: str = "Generation") -> gr.Blocks:
    """An app with an optional title and one tab rendered by ``interface.render()``."""
    with new_blocks(gradio_title) as ui:
        if gradio_title:
            gr.Markdown(f"### {gradio_title}")
        with gr.Tab(tab):
            interface.render()
    return ui


def add_output_components(c: dict) -> None:
    """Create the "Output audio" player and "Output spectrogram" gallery in the current layout, as
    ``c["output_audio"]`` and ``c["output_spectrogram"]``."""
    c["output_audio"] = gr.Audio(label="Output audio", type="filepath", interactive=False, elem_id="output-audio")
    c["output_spectrogram"] = gr.Gallery(label="Output spectrogram", show_label=False, object_fit="contain",
                                         elem_id="output-spectrogram")


def launch_style_kwargs() -> dict:
    """Theme and script keywords for ``Blocks.launch`` (empty before Gradio 6, where ``new_blocks`` sets them)."""
    return {"theme": _theme(), "js": UI_JS} if GRADIO_MAJOR >= 6 else {}


def copy_event_kwargs(source: Any, target: Any) -> dict:
    """``.click`` keywords that copy ``source`` into ``target`` (e.g. "Send to init audio"): a UI-only event, not
    an API endpoint."""
    hidden = {"api_visibility": "private"} if GRADIO_MAJOR >= 6 else {"api_name": False, "show_api": False}
    return {"fn": lambda audio: audio, "inputs": [source], "outputs": [target], "queue": False, **hidden}


def report_errors(fn: F) -> F:
    """Show any failure of a UI handler as a message in the browser instead of a bare "Error".

    ``gr.Error`` passes through; other exceptions are logged with their traceback and re-raised as
    ``gr.Error("<type>: <message>")``.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except torch.cuda.OutOfMemoryError as e:
            log.exception("out of memory in %s", fn.__name__)
            raise gr.Error(f"Out of GPU memory ({e}). Try a shorter length or fewer steps.") from e
        except Exception as e:  # noqa: BLE001 - every failure must reach the user as a message
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"{type(e).__name__}: {e}") from e
    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- audio input
def _array_to_tensor(data: np.ndarray, what: str) -> torch.Tensor:
    """Gradio numpy audio (``[n]`` or ``[n, channels]``; float32, int16 or int32) -> float32 ``[channels, n]``."""
    if data.dtype == np.float32 or data.dtype == np.float64:
        audio = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    elif data.dtype == np.int16:
        audio = torch.from_numpy(data.astype(np.float32)).div(32767)
    elif data.dtype == np.int32:
        audio = torch.from_numpy(data.astype(np.float32)).div(2147483647)
    else:
        raise gr.Error(f"{what}: unsupported sample type {data.dtype} (expected float32, int16 or int32)")
    return audio.unsqueeze(0) if audio.dim() == 1 else audio.transpose(0, 1).contiguous()


def _check_duration(seconds: float, max_seconds: Optional[float], what: str) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise gr.Error(f"{what} is {seconds:.1f} s long; this server accepts at most {max_seconds:g} s "
                       "(--max-input-seconds). Trim the file and upload it again.")


def load_audio_value(value: AudioValue, what: str = "Audio",
                     max_seconds: Optional[float] = None) -> Optional[Tuple[int, torch.Tensor]]:
    """Decode a Gradio audio value (a file path, or ``(sample_rate, numpy array)``) to ``(sr, float32 [C, T])``.

    ``None`` stays ``None``. Unreadable or empty audio, or audio longer than ``max_seconds`` (for files checked
    from the header, before decoding), raises ``gr.Error`` naming ``what``.
    """
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        sample_rate = int(value[0])
        data = np.asarray(value[1])
        if sample_rate > 0:
            _check_duration(data.shape[0] / sample_rate, max_seconds, what)
        audio = _array_to_tensor(data, what)
    elif isinstance(value, (str, os.PathLike)):
        if not Path(value).is_file():
            raise gr.Error(f"{what}: file {Path(value).name} not found (upload it again)")
        try:
            info = sf.info(str(value))
        except (sf.SoundFileError, RuntimeError, OSError, ValueError):
            info = None  # not decodable: load_audio below reports it
        if info is not None and info.samplerate > 0:
            _check_duration(info.frames / info.samplerate, max_seconds, what)
        try:
            audio, sample_rate = load_audio(str(value))
        except AudioDecodeError as e:
            name = Path(value).name
            detail = str(e.__cause__ or e).replace(str(value), name)
            raise gr.Error(f"{what} could not be read: {name} is not an audio file that libsndfile can decode "
                           f"(use WAV, FLAC, OGG or MP3). {detail}") from e
    else:
        raise gr.Error(f"{what}: unexpected value of type {type(value).__name__}")
    if audio.shape[-1] == 0:
        raise gr.Error(f"{what} is empty (0 samples)")
    if not torch.isfinite(audio).all():
        raise gr.Error(f"{what} contains NaN or infinite samples")
    return sample_rate, audio


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Dtype of the model's first parameter (float32 for parameter-less models)."""
    param = next(model.parameters(), None)
    return torch.float32 if param is None else param.dtype


def prepare_input_audio(value: AudioValue, sample_rate: int, dtype: torch.dtype, what: str,
                        max_samples: Optional[int] = None,
                        max_seconds: Optional[float] = None) -> Optional[Tuple[int, torch.Tensor]]:
    """Decode (refusing audio longer than ``max_seconds``), resample to ``sample_rate`` (in float32), crop to
    ``max_samples`` and cast to ``dtype``.

    Returns ``(sample_rate, [C, T])`` in the form the generation functions take, or ``None``.
    """
    loaded = load_audio_value(value, what, max_seconds)
    if loaded is None:
        return None
    in_sr, audio = loaded
    audio = resample(audio, in_sr, sample_rate)
    if max_samples is not None:
        audio = audio[..., :max_samples]
    return sample_rate, audio.to(dtype)


# ----------------------------------------------------------------------------------------------- settings
def parse_seed(seed: Union[str, int, float, None]) -> int:
    """``"-1"`` / empty -> a random seed in [0, 2**32 - 1) (so it can be shown and reused); else the integer."""
    text = str(seed).strip() if seed is not None else ""
    if text in ("", "-1"):
        return int(np.random.randint(0, 2 ** 32 - 1, dtype=np.uint32))
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise gr.Error(f"Seed must be an integer (or -1 for a random seed), got {seed!r}")
    value = int(number)
    if not 0 <= value < 2 ** 32:
        raise gr.Error(f"Seed must be between 0 and {2 ** 32 - 1} (or -1 for a random seed), got {value}")
    return value


def required_sample_size(model_config: dict) -> int:
    """The config's ``sample_size`` (the generated length in samples); a clear error when it is missing."""
    sample_size = model_config.get("sample_size")
    if not isinstance(sample_size, int) or sample_size <= 0:
        raise ValueError("the model config needs a positive integer 'sample_size' (the generated length in samples) "
                         "for the Gradio demo")
    return sample_size


def seconds_slider_settings(sample_size: int, sample_rate: int) -> Tuple[float, float]:
    """``(step, default)`` for length sliders: whole seconds for models of 2 s or more, else 0.01 s."""
    seconds = sample_size / sample_rate
    if seconds >= 2:
        return 1, float(sample_size // sample_rate)
    return 0.01, math.floor(seconds * 100) / 100


_FORBIDDEN = re.compile(r'[\\/:*?"<>|]')


def condense_prompt(prompt: Optional[str]) -> str:
    """A file-name-safe version of ``prompt``: ``\\/:*?"<>|`` -> ``-``, at most 150 characters, ``_`` if empty."""
    return _FORBIDDEN.sub("-", prompt or "")[:150] or "_"


FILE_FORMATS = ["wav", "flac", "mp3 320k", "mp3 v0", "mp3 128k", "m4a aac_he_v2 64k", "m4a aac_he_v2 32k"]
FILE_NAMING = ["verbose", "prompt", "output.wav"]


def output_basename(file_naming: str, prompt: str = "", negative_prompt: str = "", cfg_scale: float = 0.0,
                    seed: int = 0) -> str:
    """``verbose``: ``<prompt>[.neg-<negative>].cfg<scale>.<seed>``; ``prompt``: ``<prompt>``; else ``output``."""
    if file_naming == "verbose":
        name = condense_prompt(prompt)
        if negative_prompt:
            name += f".neg-{condense_prompt(negative_prompt)}"
        return f"{name}.cfg{cfg_scale}.{seed}"
    if file_naming == "prompt":
        return condense_prompt(prompt)
    return "output"


_FFMPEG_ARGS = {
    "mp3 320k": ["-b:a", "320k"],
    "mp3 v0": ["-q:a", "0"],
    "mp3 128k": ["-b:a", "128k"],
    "m4a aac_he_v2 64k": ["-c:a", "libfdk_aac", "-profile:a", "aac_he_v2", "-b:a", "64k"],
    "m4a aac_he_v2 32k": ["-c:a", "libfdk_aac", "-profile:a", "aac_he_v2", "-b:a", "32k"],
}


class OutputWriter:
    """Writes result files into a private temporary directory, one sub-directory per request (so concurrent
    users never overwrite each other), and deletes each after ``keep_seconds`` (Gradio serves its own copy).
    A temporary ``root`` created here is removed when the process exits."""

    def __init__(self, root: Optional[Union[str, os.PathLike]] = None, keep_seconds: float = 30.0) -> None:
        if root is None:
            root = tempfile.mkdtemp(prefix="stable_audio_tools_gradio_")
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_seconds = keep_seconds

    def write(self, audio: torch.Tensor, sample_rate: int, basename: str = "output", file_format: str = "wav",
              normalize: bool = True) -> str:
        """Save ``audio [C, T]`` as 16-bit audio and return the path.

        ``normalize`` peak-normalises (diffusion/LM outputs); otherwise the audio is only clipped to [-1, 1].
        ``flac`` is written directly; mp3/m4a formats need ``ffmpeg`` (AAC-HE: built with libfdk_aac). When the
        conversion is impossible a warning is shown and the WAV file is returned.
        """
        audio = audio.detach().to("cpu", torch.float32)
        if normalize:
            peak = audio.abs().max()
            if peak > 0:
                audio = audio / peak
        audio = audio.clamp(-1, 1)
        pcm = (audio.numpy().T * 32767).astype(np.int16)
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        wav_path = folder / f"{basename}.wav"
        extension = file_format.split(" ")[0].lower() if file_format else "wav"
        if extension == "flac":
            path = folder / f"{basename}.flac"
            sf.write(path, pcm, sample_rate, subtype="PCM_16", format="FLAC")
        else:
            sf.write(wav_path, pcm, sample_rate, subtype="PCM_16")
            path = wav_path if extension == "wav" else self._convert(wav_path, folder / f"{basename}.{extension}",
                                                                     file_format)
        self._delete_later(folder)
        return str(path)

    @staticmethod
    def _convert(wav_path: Path, target: Path, file_format: str) -> Path:
        if file_format not in _FFMPEG_ARGS:
            gr.Warning(f"Unknown file format {file_format!r}; saved WAV instead (choose one of "
                       f"{', '.join(FILE_FORMATS)})")
            return wav_path
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            gr.Warning(f"'{file_format}' needs ffmpeg, which is not installed; saved WAV instead")
            return wav_path
        cmd = [ffmpeg, "-i", str(wav_path), *_FFMPEG_ARGS[file_format], "-y", "-loglevel", "error", str(target)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not target.exists():
            detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            hint = " (AAC-HE needs an ffmpeg built with --enable-libfdk_aac)" if "aac" in file_format else ""
            gr.Warning(f"ffmpeg could not write '{file_format}'{hint}: {detail}; saved WAV instead")
            return wav_path
        return target

    def _delete_later(self, folder: Path) -> None:
        timer = threading.Timer(self.keep_seconds, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True})
        timer.daemon = True
        timer.start()


def spectrogram(audio: torch.Tensor, sample_rate: int) -> Image.Image:
    """Mel-spectrogram image of ``audio [C, T]`` in [-1, 1] (scaled to the int16 range like upstream)."""
    return audio_spectrogram_image(audio.detach().to("cpu", torch.float32).clamp(-1, 1).mul(32767),
                                   sample_rate=sample_rate)


# ----------------------------------------------------------------------------------------------- progress
def _log_snr(objective: str, t: float, sigma: float) -> float:
    """Log signal-to-noise ratio shown on previews (as upstream: log(alpha / sigma + 1e-6))."""
    if objective == "v":
        alpha, noise = math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
    else:
        alpha, noise = 1 - sigma, sigma
    if noise <= 0:
        return math.inf
    ratio = alpha / noise + 1e-6
    return math.log(ratio) if ratio > 0 else -math.inf


class SamplingMonitor:
    """Sampler callback: checks the request's ``guard`` (time limit, client still there), reports
    ``step / steps`` to a ``gr.Progress`` and, every ``preview_every`` steps, decodes the current denoised estimate
    into a spectrogram preview labelled ``Step i sigma=… logSNR=…``.

    Args:
        model (nn.Module): the diffusion model wrapper (its ``pretransform`` decodes previews).
        steps (int): sampling steps of the request.
        sample_rate (int): the model's sample rate.
        progress (callable | None, default None): a ``gr.Progress``.
        preview_every (int, default 0): preview every N steps; 0: none.
        objective (str, default ``"v"``): the diffusion objective (for the logSNR label).
        guard (RequestGuard | None, default None): checked before anything else at every step.
    """

    def __init__(self, model: torch.nn.Module, steps: int, sample_rate: int, progress: Optional[Callable] = None,
                 preview_every: int = 0, objective: str = "v", guard: Optional[RequestGuard] = None) -> None:
        self.guard = guard
        self.model = model
        self.steps = steps
        self.sample_rate = sample_rate
        self.progress = progress
        self.preview_every = int(preview_every or 0)
        self.objective = objective
        self.calls = 0
        self.previews: List[Tuple[Image.Image, str]] = []

    def __call__(self, info: dict) -> None:
        self.calls += 1
        if self.guard is not None:
            self.guard.check(self.calls, self.steps)
        step = int(info.get("i", self.calls - 1))
        if self.progress is not None:
            self.progress((min(self.calls, self.steps), self.steps), desc="Sampling")
        if self.preview_every > 0 and (self.calls - 1) % self.preview_every == 0:
            self._preview(info, step)

    def _preview(self, info: dict, step: int) -> None:
        denoised = info["denoised"]
        pretransform = getattr(self.model, "pretransform", None)
        if pretransform is not None:
            denoised = decode_latents(pretransform, denoised)
        audio = denoised.detach().float().permute(1, 0, 2).reshape(denoised.shape[1], -1)
        sigma = float(info.get("sigma", 0.0))
        t = float(info.get("t", sigma))
        label = f"Step {step} sigma={sigma:.3f} logSNR={_log_snr(self.objective, t, sigma):.3f}"
        self.previews.append((spectrogram(audio, self.sample_rate), label))

    def done(self, desc: str = "Decoding") -> None:
        """Tell the progress bar that sampling has finished (decoding and saving follow)."""
        if self.progress is not None:
            self.progress((self.steps, self.steps), desc=desc)


# ----------------------------------------------------------------------------------------------- interfaces
class DemoInterface:
    """State every model type's UI shares: the model, its config and sample rate, where result files go and the
    :class:`RequestGate` that enforces the limits of a request.

    Args:
        model (nn.Module): the model (already on its device, in eval mode).
        model_config (dict): its config (``sample_rate``; ``sample_size`` with ``generates``; ``model.conditioning``).
        writer (OutputWriter | None, default None): where result files go (default: a private temporary directory).
        limits (DemoLimits | None, default None): what one request may ask for (default ``DemoLimits()``).
        generates (bool, default True): the model generates ``sample_size`` samples (required in the config).
    """

    def __init__(self, model: torch.nn.Module, model_config: Dict[str, Any], writer: Optional[OutputWriter] = None,
                 limits: Optional[DemoLimits] = None, generates: bool = True) -> None:
        self.model = model
        self.model_config = model_config
        self.gate = RequestGate(limits, model)
        self.limits = self.gate.limits
        self.sample_rate = int(model_config["sample_rate"])
        self.sample_size = required_sample_size(model_config) if generates else None
        self.writer = writer or OutputWriter()
        conditioning = (model_config.get("model") or {}).get("conditioning") or {}
        self.conditioner_ids: List[str] = [c.get("id") for c in conditioning.get("configs", [])]
        default_keys = conditioning.get("default_keys") or {}
        self.has_prompt = any(default_keys.get(cid, cid) == "prompt" for cid in self.conditioner_ids)
        self.has_seconds_start = "seconds_start" in self.conditioner_ids
        self.has_seconds_total = "seconds_total" in self.conditioner_ids

    @property
    def model_seconds(self) -> float:
        """Length the model generates, in seconds."""
        return self.sample_size / self.sample_rate

    @property
    def max_seconds(self) -> float:
        """Longest "Seconds total" a request may ask for (the model's length or a stricter ``max_seconds``)."""
        return self.limits.seconds_cap(self.model_seconds)
