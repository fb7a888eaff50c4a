"""Plotting helpers for training demos and the Gradio interface (foundation layer: imports nothing from the
package; ``stable_audio_tools.interface.aeiou`` re-exports every name, as upstream keeps them there).

Mel-spectrogram images, latent ("token") images and 3-D PCA point clouds, following upstream
``stable_audio_tools/interface/aeiou.py`` (derived from the aeiou package's ``viz`` module). Upstream draws with
matplotlib and computes mels with torchaudio; here the mel spectrogram is computed with ``torch.stft`` and an
HTK-scale, Slaney-normalised filterbank (torchaudio's ``MelSpectrogram(norm="slaney", mel_scale="htk")``), and the
figures are rendered with Pillow and small built-in colormaps, so neither matplotlib nor torchaudio is required.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "apply_colormap",
    "tab20_color",
    "mel_filterbank",
    "mel_spectrogram",
    "power_to_db",
    "spectrogram_image",
    "audio_spectrogram_image",
    "tokens_spectrogram_image",
    "project_down",
    "proj_pca",
    "point_cloud",
    "pca_point_cloud",
    "embeddings_table",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

# Colormap anchor colours (RGB in [0, 1]) at evenly spaced positions, linearly interpolated in between.
_VIRIDIS = (
    (0.267, 0.005, 0.329), (0.283, 0.131, 0.449), (0.230, 0.322, 0.546), (0.173, 0.449, 0.558),
    (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.369, 0.789, 0.383), (0.678, 0.864, 0.190),
    (0.993, 0.906, 0.144),
)
_COOLWARM = (
    (0.230, 0.299, 0.754), (0.552, 0.690, 0.996), (0.865, 0.865, 0.865), (0.958, 0.604, 0.482),
    (0.706, 0.016, 0.150),
)
_COLORMAPS = {"viridis": _VIRIDIS, "coolwarm": _COOLWARM}

# Matplotlib's qualitative "tab20" palette (a listed colormap with 20 entries).
_TAB20 = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)

_DPI = 100
_JUSTIMAGE_SIZE = 384  # upstream: a 4.145-inch, 100-dpi figure with a 15-pixel border cropped off


def apply_colormap(values: ArrayLike, name: str = "viridis") -> np.ndarray:
    """Map ``values`` (expected in [0, 1]; clipped, NaN -> 0) to ``uint8`` RGB with shape ``values.shape + (3,)``."""
    if name not in _COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; available: {', '.join(sorted(_COLORMAPS))}")
    anchors = np.asarray(_COLORMAPS[name], dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors))
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(v, positions, anchors[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


def tab20_color(value: float) -> Tuple[int, int, int]:
    """The tab20 colour for ``value`` in [0, 1], indexed like a matplotlib listed colormap."""
    index = min(max(int(math.floor(value * len(_TAB20))), 0), len(_TAB20) - 1)
    hex_colour = _TAB20[index]
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _hz_to_mel_htk(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_filterbank(
    n_freqs: int,
    sample_rate: int,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: Optional[float] = None,
    norm: Optional[str] = "slaney",
) -> torch.Tensor:
    """Triangular HTK-scale mel filterbank ``[n_freqs, n_mels]`` (same construction as torchaudio's
    ``melscale_fbanks(..., mel_scale="htk")``); ``norm="slaney"`` scales each filter to unit area per Hz."""
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    f_max = float(sample_rate) / 2.0 if f_max is None else float(f_max)
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = -slopes[:, :-2] / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down_slopes, up_slopes), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


def mel_spectrogram(
    waveform: torch.Tensor,
    sample_rate: int = 48000,
    power: float = 2.0,
    n_fft: int = 1024,
    hop_length: Optional[int] = None,
    n_mels: int = 128,
) -> torch.Tensor:
    """Mel spectrogram ``[..., n_mels, frames]`` of ``waveform [..., T]`` (Hann window, centred reflect padding).

    Audio shorter than ``n_fft // 2 + 1`` samples is zero-padded first so that reflect padding is possible.
    """
    hop_length = n_fft // 2 if hop_length is None else hop_length
    x = waveform.detach().to("cpu", torch.float32)
    leading = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    min_len = n_fft // 2 + 1
    if x.shape[-1] < min_len:
        x = torch.nn.functional.pad(x, (0, min_len - x.shape[-1]))
    spec = torch.stft(
        x, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=torch.hann_window(n_fft),
        center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
    ).abs().pow(power)
    fb = mel_filterbank(n_fft // 2 + 1, sample_rate, n_mels)
    mel = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)
    return mel.reshape(*leading, n_mels, mel.shape[-1])


def power_to_db(spec: ArrayLike, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """``10 * log10(max(spec, amin))``, floored at ``max - top_db`` (upstream aeiou ``power_to_db``)."""
    magnitude = spec.detach().cpu().numpy() if isinstance(spec, torch.Tensor) else np.asarray(spec)
    log_spec = 10.0 * np.log10(np.maximum(amin, magnitude.astype(np.float64)))
    return np.maximum(log_spec, log_spec.max() - top_db)


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> Tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _heat_to_image(heat_rgb: np.ndarray, size: Tuple[int, int], resample: int) -> Image.Image:
    """Flip so that row 0 is at the bottom (``origin='lower'``) and resize to ``size``."""
    return Image.fromarray(np.ascontiguousarray(heat_rgb[::-1]), mode="RGB").resize(size, resample=resample)


def _render_figure(
    heat_rgb: np.ndarray,
    *,
    size: Tuple[int, int],
    title: str,
    xlabel: str,
    ylabel: str,
    cmap: str,
    vmin: float,
    vmax: float,
    resample: int,
    subtitle: Optional[str] = None,
    vlines: Sequence[int] = (),
) -> Image.Image:
    """Draw ``heat_rgb [rows, cols, 3]`` as a labelled plot with a colorbar, like a small matplotlib figure."""
    width, height = size
    rows, cols = heat_rgb.shape[:2]
    canvas = Image.new("RGBA", size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, title_font = _font(11), _font(13)
    black = (0, 0, 0, 255)

    title_w, title_h = _text_size(draw, title, title_font)
    sub_h = _text_size(draw, subtitle, font)[1] + 4 if subtitle else 0
    tick_w = max(_text_size(draw, str(rows), font)[0], _text_size(draw, "0", font)[0])
    label_w, label_h = _text_size(draw, ylabel, font)
    cbar_labels = [_fmt(vmax), _fmt((vmin + vmax) / 2.0), _fmt(vmin)]
    cbar_label_w = max(_text_size(draw, t, font)[0] for t in cbar_labels)
    x_label_w, x_label_h = _text_size(draw, xlabel, font)

    top = 8 + title_h + sub_h + 8
    left = 6 + label_h + 6 + tick_w + 6
    bottom = height - (6 + x_label_h + 6 + label_h + 6)
    cbar_w = 14
    right = width - (6 + cbar_label_w + 4 + cbar_w + 14)
    if right - left < 8 or bottom - top < 8:
        raise ValueError(f"figure size {size} is too small for its labels")

    canvas.paste(_heat_to_image(heat_rgb, (right - left, bottom - top), resample), (left, top))
    for x_pos in vlines:
        px = left + round(x_pos * (right - left) / max(cols, 1))
        for y in range(top, bottom, 6):
            draw.line([(px, y), (px, min(y + 3, bottom))], fill=black)
    draw.rectangle([left - 1, top - 1, right, bottom], outline=black)

    draw.text(((left + right - title_w) / 2, 8), title, font=title_font, fill=black)
    if subtitle:
        sub_w = _text_size(draw, subtitle, font)[0]
        draw.text(((left + right - sub_w) / 2, 8 + title_h + 4), subtitle, font=font, fill=black)

    for text, y in (("0", bottom), (str(rows), top)):
        tw, th = _text_size(draw, text, font)
        draw.line([(left - 4, y), (left - 1, y)], fill=black)
        draw.text((left - 6 - tw, y - th / 2 - 2), text, font=font, fill=black)
    for text, x in (("0", left), (str(cols), right)):
        tw, th = _text_size(draw, text, font)
        draw.line([(x, bottom), (x, bottom + 3)], fill=black)
        draw.text((x - tw / 2, bottom + 5), text, font=font, fill=black)
    draw.text(((left + right - x_label_w) / 2, bottom + 6 + label_h + 6), xlabel, font=font, fill=black)

    label_img = Image.new("RGBA", (label_w + 2, label_h + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((0, 0), ylabel, font=font, fill=black)
    label_img = label_img.rotate(90, expand=True)
    canvas.alpha_composite(label_img, (6, max(0, (top + bottom - label_img.height) // 2)))

    cbar_x0 = right + 14
    gradient = apply_colormap(np.linspace(1.0, 0.0, bottom - top)[:, None].repeat(cbar_w, axis=1), cmap)
    canvas.paste(Image.fromarray(gradient, mode="RGB"), (cbar_x0, top))
    draw.rectangle([cbar_x0 - 1, top - 1, cbar_x0 + cbar_w, bottom], outline=black)
    for text, y in zip(cbar_labels, (top, (top + bottom) / 2, bottom)):
        th = _text_size(draw, text, font)[1]
        draw.line([(cbar_x0 + cbar_w, y), (cbar_x0 + cbar_w + 3, y)], fill=black)
        draw.text((cbar_x0 + cbar_w + 5, y - th / 2 - 2), text, font=font, fill=black)
    return canvas


def spectrogram_image(
    spec: ArrayLike,
    title: Optional[str] = None,
    ylabel: str = "freq_bin",
    db_range: Sequence[float] = (35.0, 120.0),
    justimage: bool = False,
    figsize: Tuple[float, float] = (5, 4),
) -> Image.Image:
    """RGBA image of a power spectrogram ``[bins, frames]`` in dB (viridis, colour range ``db_range``).

    ``justimage=True`` returns only the 384x384 heat map; otherwise a ``figsize``-inch (100 dpi) figure with
    title, axis labels and colorbar.
    """
    db = power_to_db(spec).squeeze()
    if db.ndim != 2:
        raise ValueError(f"spectrogram must be 2-D [bins, frames] after squeezing, got shape {tuple(db.shape)}")
    lo, hi = float(db_range[0]), float(db_range[1])
    if hi <= lo:
        raise ValueError(f"db_range must be increasing, got {tuple(db_range)}")
    heat = apply_colormap((db - lo) / (hi - lo), "viridis")
    if justimage:
        return _heat_to_image(heat, (_JUSTIMAGE_SIZE, _JUSTIMAGE_SIZE), Image.Resampling.BILINEAR).convert("RGBA")
    size = (int(round(figsize[0] * _DPI)), int(round(figsize[1] * _DPI)))
    return _render_figure(
        heat, size=size, title=title or "Spectrogram (dB)", xlabel="frame", ylabel=ylabel, cmap="viridis",
        vmin=lo, vmax=hi, resample=Image.Resampling.BILINEAR,
    )


def audio_spectrogram_image(
    waveform: torch.Tensor,
    sample_rate: int = 48000,
    power: float = 2.0,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    db_range: Sequence[float] = (35.0, 120.0),
    justimage: bool = False,
    figsize: Tuple[float, float] = (5, 4),
) -> Image.Image:
    """Mel-spectrogram image (RGBA) of the left channel of ``waveform [C, T]`` (or ``[T]``).

    The default ``db_range`` of 35-120 dB suits int16-scaled audio (what upstream's demo callbacks pass in);
    for audio in [-1, 1] pass a lower range.
    """
    if waveform.ndim not in (1, 2):
        raise ValueError(f"waveform must be [channels, samples] or [samples], got shape {tuple(waveform.shape)}")
    left = waveform if waveform.ndim == 1 else waveform[0]
    mel = mel_spectrogram(left, sample_rate=sample_rate, power=power, n_fft=n_fft, hop_length=hop_length,
                          n_mels=n_mels)
    return spectrogram_image(mel, title="MelSpectrogram", ylabel="mel bins (log freq)", db_range=db_range,
                             justimage=justimage, figsize=figsize)


def tokens_spectrogram_image(
    tokens: torch.Tensor,
    title: str = "Embeddings",
    ylabel: str = "index",
    cmap: str = "coolwarm",
    symmetric: bool = True,
    figsize: Tuple[float, float] = (8, 4),
    dpi: int = _DPI,
    mark_batches: bool = False,
) -> Image.Image:
    """RGBA image of latents ``tokens [B, D, N]``, batch items side by side along time (``d (b n)``).

    ``symmetric=True`` centres the colour scale on zero (``±max|x|``) and adds a min/max subtitle.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, dim, frames], got shape {tuple(tokens.shape)}")
    batch, dim, frames = tokens.shape
    emb = tokens.detach().to("cpu", torch.float32).permute(1, 0, 2).reshape(dim, batch * frames).numpy()
    data_min, data_max = float(emb.min()), float(emb.max())
    if symmetric:
        vmax = float(np.abs(emb).max())
        vmin = -vmax
    else:
        vmin, vmax = data_min, data_max
    scale = vmax - vmin
    normed = (emb - vmin) / scale if scale > 0 else np.full_like(emb, 0.5)
    heat = apply_colormap(normed, cmap)
    subtitle = f"min={data_min:0.4g}, max={data_max:0.4g}" if symmetric else None
    vlines = [i * frames for i in range(1, batch)] if mark_batches else []
    return _render_figure(
        heat, size=(int(round(figsize[0] * dpi)), int(round(figsize[1] * dpi))), title=title,
        xlabel="time frame (samples, in batches)", ylabel=ylabel, cmap=cmap, vmin=vmin, vmax=vmax,
        resample=Image.Resampling.NEAREST, subtitle=subtitle, vlines=vlines,
    )


def project_down(tokens: torch.Tensor, proj_dims: int = 3) -> torch.Tensor:
    """Project ``tokens [B, D, N]`` onto their first ``proj_dims`` principal axes -> ``[B, N, <=proj_dims]``.

    As upstream, the axes come from the centred data but the uncentred vectors are projected; data with
    ``D <= proj_dims`` is returned unprojected. Exact SVD is used (deterministic, unlike ``pca_lowrank``).
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, dim, frames], got shape {tuple(tokens.shape)}")
    batch, dim, frames = tokens.shape
    flat = tokens.detach().to("cpu", torch.float32).permute(0, 2, 1).reshape(batch * frames, dim)
    if dim > proj_dims:
        centred = flat - flat.mean(dim=0, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        flat = flat @ vh[:proj_dims].T
    return flat.reshape(batch, frames, -1)


def proj_pca(tokens: torch.Tensor, proj_dims: int = 3) -> torch.Tensor:
    """PCA projection of ``tokens [B, D, N]`` to ``[B, N, proj_dims]`` (see :func:`project_down`)."""
    return project_down(tokens, proj_dims=proj_dims)


def _project(tokens: torch.Tensor, method: str) -> np.ndarray:
    if method == "pca":
        return project_down(tokens, proj_dims=3).numpy().astype(np.float64)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("point_cloud(method='umap') needs the umap-learn package: pip install umap-learn") \
                from None
        batch, dim, frames = tokens.shape
        flat = tokens.detach().to("cpu", torch.float64).permute(0, 2, 1).reshape(batch * frames, dim).numpy()
        return umap.UMAP(n_components=3).fit_transform(flat).reshape(batch, frames, 3)
    raise ValueError(f"unknown projection method {method!r}; use 'pca' or 'umap'")


def _point_colours(batch: int, frames: int, color_scheme: Union[str, int]) -> np.ndarray:
    """``[batch, frames, 3]`` RGB (0-255): tab20 per batch item, per group of items, or viridis over time."""
    if color_scheme == "batch":
        per_item = np.array([tab20_color((bi + 1) / batch) for bi in range(batch)], dtype=np.float64)
        return np.repeat(per_item[:, None], frames, axis=1)
    if isinstance(color_scheme, int) or str(color_scheme).isnumeric():
        groups = int(color_scheme)
        group_len = max(batch // groups, 1)
        per_item = np.array([tab20_color((bi // group_len) / groups) for bi in range(batch)], dtype=np.float64)
        return np.repeat(per_item[:, None], frames, axis=1)
    per_step = apply_colormap(np.arange(frames) / max(frames, 1), "viridis").astype(np.float64)
    return np.repeat(per_step[None], batch, axis=0)


def point_cloud(tokens: torch.Tensor, method: str = "pca", color_scheme: Union[str, int] = "batch",
                output_type: str = "wandbobj", mode: str = "markers", size: int = 3, line: Optional[dict] = None,
                ds_preproj: int = 1, ds_preplot: int = 1, darkmode: Union[bool, str] = False,
                layout_dict: Optional[dict] = None, rgb_float: bool = False) -> Any:
    """3-D point cloud of latents ``tokens [B, D, N]`` (upstream's aeiou ``point_cloud``).

    Args:
        tokens (Tensor): ``[batch, dim, frames]`` latents.
        method (str): ``"pca"`` or ``"umap"`` (needs ``umap-learn``). Default ``"pca"``.
        color_scheme (str or int): ``"batch"`` (one tab20 colour per item), an integer ``n`` (``n`` colour groups
            of consecutive items) or anything else (viridis over the frames). Default ``"batch"``.
        output_type (str): ``"points"`` (``[B * N, 6]`` rows ``x, y, z, r, g, b``), ``"plotly"`` (a
            ``plotly`` Scatter3d figure; needs ``plotly``) or ``"wandbobj"`` (``wandb.Object3D``). Default
            ``"wandbobj"``.
        mode (str): plotly scatter mode. Default ``"markers"``.
        size (int): plotly marker size. Default 3.
        line (dict, optional): plotly line options for ``mode="lines+markers"``. Default None.
        ds_preproj (int): keep every n-th item (after shuffling) before projecting. Default 1.
        ds_preplot (int): keep every n-th point in the plotly figure. Default 1.
        darkmode (bool or str): plotly dark template (a string also sets the paper colour). Default False.
        layout_dict (dict, optional): extra plotly layout options. Default None.
        rgb_float (bool): colours as 0-1 floats instead of 0-255 integers. Default False.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, dim, frames], got shape {tuple(tokens.shape)}")
    if output_type not in ("points", "plotly", "wandbobj"):
        raise ValueError(f"unknown output_type {output_type!r}; use 'points', 'plotly' or 'wandbobj'")
    if ds_preproj != 1:
        tokens = tokens[torch.randperm(tokens.shape[0])][::ds_preproj]
    data = _project(tokens, method)
    if data.shape[-1] < 3:
        data = np.pad(data, ((0, 0), (0, 0), (0, 3 - data.shape[-1])))
    batch, frames = data.shape[:2]
    colours = _point_colours(batch, frames, color_scheme)
    if rgb_float:
        colours = colours / 255.0
    points = np.concatenate([data.reshape(batch * frames, 3), colours.reshape(batch * frames, 3)], axis=1)
    if output_type == "points":
        return points
    if output_type == "wandbobj":
        import wandb

        return wandb.Object3D(points)
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ImportError("point_cloud(output_type='plotly') needs the plotly package: pip install plotly") from None
    shown = points[::ds_preplot]
    fig = go.Figure(data=[go.Scatter3d(
        x=shown[:, 0], y=shown[:, 1], z=shown[:, 2], marker=dict(size=size, color=shown[:, 3:6]), mode=mode,
        text=[f"bi: {i // frames}, ti: {i % frames}" for i in range(0, len(points), ds_preplot)],
        line=line if line is not None else dict(color="rgba(10,10,10,0.01)"))])
    fig.update_layout(margin=dict(l=0, r=0, b=0, t=0))
    if darkmode:
        fig.layout.template = "plotly_dark"
        if isinstance(darkmode, str):
            fig.update_layout(paper_bgcolor=darkmode)
    if layout_dict:
        fig.update_layout(**layout_dict)
    return fig


def pca_point_cloud(tokens: torch.Tensor, rgb_float: bool = False) -> np.ndarray:
    """3-D PCA point cloud of latents ``tokens [B, D, N]`` as ``[B * N, 6]`` rows ``x, y, z, r, g, b``.

    Each batch item gets its own tab20 colour (0-255 integers, or 0-1 floats with ``rgb_float``); data with
    fewer than three dimensions is zero-padded to 3-D (:func:`point_cloud` with ``output_type="points"``).
    """
    return point_cloud(tokens, method="pca", color_scheme="batch", output_type="points", rgb_float=rgb_float)


def embeddings_table(tokens: torch.Tensor) -> Any:
    """A ``wandb.Table`` of the latent vectors of ``tokens [B, D, N]``: one row per frame with columns
    ``dim_0 ... dim_{D-1}`` and ``LABEL`` = ``demo<b>`` (the batch item, for grouping)."""
    import wandb

    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, dim, frames], got shape {tuple(tokens.shape)}")
    vectors = tokens.detach().to("cpu", torch.float32).permute(0, 2, 1)
    rows = [[*vectors[b, n].tolist(), f"demo{b}"] for b in range(vectors.shape[0]) for n in range(vectors.shape[1])]
    return wandb.Table(columns=[f"dim_{i}" for i in range(tokens.shape[1])] + ["LABEL"], data=rows)
