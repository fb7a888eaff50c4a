"""Logger-agnostic media and metric logging for demo callbacks.

``log_audio`` / ``log_image`` / ``log_point_cloud`` / ``log_metric`` dispatch on the pytorch_lightning logger:

- ``WandbLogger``: ``wandb.Audio`` / ``wandb.Image`` / ``wandb.Object3D`` via ``experiment.log``; the step is sent
  as the ``trainer/global_step`` key (as ``WandbLogger.log_metrics`` does) rather than as wandb's own step, which
  would drop data logged out of order.
- ``TensorBoardLogger``: ``SummaryWriter.add_audio`` (one entry per channel; TensorBoard audio is mono),
  ``add_image`` and ``add_mesh``.
- ``CSVLogger``: media files are written under ``<logger.log_dir>/media`` (``<key>_<step:08>.wav/.png/.csv``).
- ``CometLogger`` (needs ``comet_ml``): ``log_audio`` / ``log_image`` / ``log_points_3d``.
- ``None``: no-op. Other logger types are skipped with a one-time warning.

Upstream keeps these in ``training/utils.py`` and supports only wandb and comet.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Set, Union

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from pytorch_lightning.loggers import CometLogger, CSVLogger, Logger, TensorBoardLogger, WandbLogger

__all__ = [
    "save_wav",
    "logger_media_dir",
    "logger_project_name",
    "media_dir",
    "log_audio",
    "log_image",
    "log_point_cloud",
    "log_metric",
]

PathLike = Union[str, "os.PathLike[str]"]
AudioSource = Union[PathLike, torch.Tensor, np.ndarray]

_log = logging.getLogger(__name__)
_warned_logger_types: Set[type] = set()


def _audio_array(audio: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """Audio as a ``[channels, samples]`` numpy array (a 1-D input becomes one channel)."""
    array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"audio must be [channels, samples] or [samples], got shape {array.shape}")
    return array


def _to_int16(audio: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """int16 ``[C, T]``: int16 input is kept; float input is clamped to [-1, 1], scaled by 32767 and truncated."""
    array = _audio_array(audio)
    if array.dtype == np.int16:
        return array
    return (np.clip(array.astype(np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


def _to_float(audio: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
    """float32 ``[C, T]`` in [-1, 1]; int16 input is divided by 32768."""
    array = _audio_array(audio)
    if array.dtype == np.int16:
        return array.astype(np.float32) / 32768.0
    return np.clip(array.astype(np.float32), -1.0, 1.0)


def _is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def save_wav(path: PathLike, audio: Union[torch.Tensor, np.ndarray], sample_rate: int) -> Path:
    """Write ``audio [C, T]`` as a 16-bit PCM WAV file, atomically (temp file in the same folder + ``os.replace``).

    Float audio is clamped to [-1, 1] and converted like upstream (``clamp(-1, 1).mul(32767).to(int16)``);
    int16 audio is written unchanged. Parent folders are created. Returns the path.
    """
    path = Path(path)
    data = _to_int16(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp_name, data.T, int(sample_rate), subtype="PCM_16", format="WAV")
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


def logger_project_name(logger: Optional[Logger]) -> Optional[str]:
    """The project (wandb: the run's project) or experiment name (other loggers) a logger writes to; None for none."""
    if logger is None:
        return None
    if isinstance(logger, WandbLogger):
        return logger.experiment.project
    name = logger.name
    return None if name is None else str(name)


def logger_media_dir(logger: Logger) -> Optional[Path]:
    """``<save_dir>/<project or name>/<run id or version>/media`` for ``logger`` (not created), or None.

    CSV and TensorBoard loggers use ``<logger.log_dir>/media`` (``version_<n>`` run folders); wandb uses the
    run's project and id (creating the run if needed), as upstream does.
    """
    if isinstance(logger, (CSVLogger, TensorBoardLogger)):
        return Path(logger.log_dir) / "media"
    if isinstance(logger, WandbLogger):
        experiment = logger.experiment
        name, version = experiment.project, experiment.id
    else:
        name, version = logger.name, logger.version
    save_dir = logger.save_dir
    if save_dir is None or not name or version is None:
        return None
    version_dir = f"version_{version}" if isinstance(version, int) else str(version)
    return Path(save_dir) / str(name) / version_dir / "media"


def media_dir(trainer: Any) -> Path:
    """Folder for demo media files, created if needed.

    Tries ``logger_media_dir(trainer.logger)``, then ``<trainer.default_root_dir>/media``, then the current
    working directory (upstream's fallback).
    """
    candidates = []
    logger = getattr(trainer, "logger", None)
    if logger is not None:
        try:
            derived = logger_media_dir(logger)
        except Exception:  # a logger in a bad state must not stop the demo; fall back instead
            _log.warning("could not derive a media folder from %s; falling back", type(logger).__name__,
                         exc_info=True)
            derived = None
        if derived is not None:
            candidates.append(derived)
    root = getattr(trainer, "default_root_dir", None)
    if root:
        candidates.append(Path(root) / "media")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            return candidate
        except OSError:
            _log.warning("cannot create media folder %s; trying the next location", candidate, exc_info=True)
    return Path.cwd()


def _media_file(logger: Logger, key: str, step: Optional[int], suffix: str) -> Path:
    """A file path under the logger's media folder named after ``key`` and ``step``."""
    folder = logger_media_dir(logger)
    if folder is None:
        raise ValueError(f"{type(logger).__name__} has no save_dir/name/version to derive a media folder from")
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "media"
    if step is not None:
        return folder / f"{stem}_{step:08}{suffix}"
    path, counter = folder / f"{stem}{suffix}", 1
    while path.exists():
        path, counter = folder / f"{stem}_{counter}{suffix}", counter + 1
    return path


def _wandb_payload(payload: dict, step: Optional[int]) -> dict:
    return payload if step is None else {**payload, "trainer/global_step": step}


def _warn_unsupported(logger: Any) -> None:
    if type(logger) not in _warned_logger_types:
        _warned_logger_types.add(type(logger))
        _log.warning("media logging is not supported for %s; media are only saved to disk", type(logger).__name__)


def log_audio(
    logger: Optional[Logger],
    key: str,
    path_or_tensor: AudioSource,
    sample_rate: int,
    caption: Optional[str] = None,
    step: Optional[int] = None,
) -> None:
    """Log audio given as a file path or a ``[C, T]`` tensor/array (float in [-1, 1] or int16)."""
    if logger is None:
        return
    is_path = _is_path(path_or_tensor)
    if isinstance(logger, WandbLogger):
        import wandb

        data = str(path_or_tensor) if is_path else _to_float(path_or_tensor).T
        audio = wandb.Audio(data, sample_rate=sample_rate, caption=caption)
        logger.experiment.log(_wandb_payload({key: audio}, step))
    elif isinstance(logger, TensorBoardLogger):
        if is_path:
            data, file_rate = sf.read(str(path_or_tensor), dtype="float32", always_2d=True)
            channels, sample_rate = data.T, file_rate
        else:
            channels = _to_float(path_or_tensor)
        writer = logger.experiment
        for index, channel in enumerate(channels):
            tag = key if len(channels) == 1 else f"{key}/channel_{index}"
            writer.add_audio(tag, torch.from_numpy(np.ascontiguousarray(channel)), global_step=step,
                             sample_rate=int(sample_rate))
    elif isinstance(logger, CSVLogger):
        target = _media_file(logger, key, step, ".wav")
        if not is_path:
            save_wav(target, path_or_tensor, sample_rate)
        elif Path(path_or_tensor).resolve().parent != target.parent.resolve():
            shutil.copyfile(path_or_tensor, target)
    elif isinstance(logger, CometLogger):
        if is_path:
            logger.experiment.log_audio(str(path_or_tensor), sample_rate=sample_rate, file_name=key, step=step)
        else:
            logger.experiment.log_audio(_to_float(path_or_tensor).T, sample_rate=sample_rate,
                                        file_name=f"{key}.wav", step=step)
    else:
        _warn_unsupported(logger)


def log_image(logger: Optional[Logger], key: str, pil_image: Image.Image, step: Optional[int] = None) -> None:
    """Log a PIL image."""
    if logger is None:
        return
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log(_wandb_payload({key: wandb.Image(pil_image)}, step))
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, np.asarray(pil_image.convert("RGB")), global_step=step, dataformats="HWC")
    elif isinstance(logger, CSVLogger):
        pil_image.save(_media_file(logger, key, step, ".png"))
    elif isinstance(logger, CometLogger):
        logger.experiment.log_image(pil_image, name=key, step=step)
    else:
        _warn_unsupported(logger)


def log_point_cloud(logger: Optional[Logger], key: str, points: np.ndarray, step: Optional[int] = None) -> None:
    """Log a coloured point cloud ``[N, 6]`` (``x, y, z, r, g, b`` with 0-255 colours, see ``pca_point_cloud``)."""
    if logger is None:
        return
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 6:
        raise ValueError(f"points must be an [N, 6] array of x, y, z, r, g, b; got shape {points.shape}")
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log(_wandb_payload({key: wandb.Object3D(points)}, step))
    elif isinstance(logger, TensorBoardLogger):
        vertices = torch.from_numpy(points[None, :, :3].astype(np.float32))
        colours = torch.from_numpy(np.clip(points[None, :, 3:], 0, 255).astype(np.uint8))
        logger.experiment.add_mesh(key, vertices=vertices, colors=colours, global_step=step)
    elif isinstance(logger, CSVLogger):
        np.savetxt(_media_file(logger, key, step, ".csv"), points, delimiter=",", header="x,y,z,r,g,b",
                   comments="")
    elif isinstance(logger, CometLogger):
        log_points = getattr(logger.experiment, "log_points_3d", None)
        if log_points is not None:
            log_points(scene_name=key, points=points.tolist(), step=step)
    else:
        _warn_unsupported(logger)


def log_metric(logger: Optional[Logger], key: str, value: Union[float, torch.Tensor], step: Optional[int] = None) -> None:
    """Log one scalar through the logger's ``log_metrics`` (every Lightning logger has it)."""
    if logger is None:
        return
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item()
    logger.log_metrics({key: float(value)}, step=step)
