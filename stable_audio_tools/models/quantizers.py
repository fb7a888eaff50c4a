"""Vector quantizers used by the discrete bottlenecks (own implementations).

* :class:`ResidualVQ` / :class:`VectorQuantize` / :class:`EuclideanCodebook` reproduce
  vector-quantize-pytorch 1.14.41 as used by upstream's ``rvq`` bottlenecks: same module tree and
  buffers (``layers.{q}._codebook.{initted,cluster_size,embed_avg,embed}``), same distance
  (``-sqrt(clamp(|x|^2 + |e|^2 - 2 x.e, 0))`` + argmax), EMA codebook updates with Laplace smoothing,
  k-means initialisation, dead-code expiry and commitment loss.
* :class:`ResidualVectorQuantize` / :class:`FactorizedVectorQuantize` reproduce descript-audio-codec
  1.0.0's RVQ (``quantizers.{q}.in_proj/out_proj/codebook``): factorised, L2-normalised code lookup.
* :class:`FSQ` reproduces vector-quantize-pytorch 1.14.41's finite scalar quantizer.
* :class:`DitheredFSQ` is upstream stable-audio-tools' own dithered FSQ (no parameters).
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .wn import WNConv1d

__all__ = [
    "EuclideanCodebook",
    "VectorQuantize",
    "ResidualVQ",
    "FactorizedVectorQuantize",
    "ResidualVectorQuantize",
    "FSQ",
    "DitheredFSQ",
    "round_ste",
    "leaky_hard_clip",
]


# ----------------------------------------------------------------------------- helpers
def _neg_cdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative euclidean distance ``[h, n, c]`` between ``x [h, n, d]`` and ``y [h, c, d]``.

    Computed as vector-quantize-pytorch does (expanded square, clamped at 0, sqrt) so that the
    argmax picks exactly the same codes.
    """
    x2 = (x ** 2).sum(dim=-1)
    y2 = (y ** 2).sum(dim=-1)
    xy = torch.einsum("b i d, b j d -> b i j", x, y) * -2
    return -(x2.unsqueeze(-1) + y2.unsqueeze(-2) + xy).clamp(min=0).sqrt()


def _sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``samples [n, d]``: without replacement if possible, else with replacement."""
    num_samples = samples.shape[0]
    if num_samples >= num:
        indices = torch.randperm(num_samples, device=samples.device)[:num]
    else:
        indices = torch.randint(0, num_samples, (num,), device=samples.device)
    return samples[indices]


def _kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd k-means over ``samples [h, n, d]``; returns ``(means [h, c, d], bins [h, c])``."""
    num_codebooks, dim = samples.shape[0], samples.shape[-1]
    means = torch.stack([_sample_vectors(s, num_clusters) for s in samples.unbind(dim=0)], dim=0)
    bins = torch.zeros(num_codebooks, num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        buckets = _neg_cdist(samples, means).argmax(dim=-1)
        bins = torch.zeros(num_codebooks, num_clusters, dtype=buckets.dtype, device=samples.device)
        bins.scatter_add_(-1, buckets, torch.ones_like(buckets))
        zero_mask = bins == 0
        bins_min_clamped = bins.masked_fill(zero_mask, 1)
        new_means = torch.zeros(num_codebooks, num_clusters, dim, dtype=samples.dtype, device=samples.device)
        new_means.scatter_add_(1, buckets.unsqueeze(-1).expand(-1, -1, dim), samples)
        new_means = new_means / bins_min_clamped.unsqueeze(-1)
        means = torch.where(zero_mask.unsqueeze(-1), means, new_means)
    return means, bins


def _laplace_smoothing(x: torch.Tensor, n_categories: int, eps: float) -> torch.Tensor:
    return (x + eps) / (x.sum(dim=-1, keepdim=True) + n_categories * eps)


def _uniform_init(*shape: int) -> torch.Tensor:
    t = torch.empty(shape)
    nn.init.kaiming_uniform_(t)
    return t


def _gumbel_noise(t: torch.Tensor) -> torch.Tensor:
    noise = torch.zeros_like(t).uniform_(0, 1)
    return -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))


def _distributed_world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def leaky_hard_clip(x: torch.Tensor, alpha: float = 1e-3) -> torch.Tensor:
    """Clamp to [-1, 1] with a small slope ``alpha`` outside: ``(1 - alpha) * clamp(x, -1, 1) + alpha * x``."""
    return (1 - alpha) * torch.clamp(x, -1, 1) + alpha * x


def round_ste(z: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient."""
    return z + (z.round() - z).detach()


# ----------------------------------------------------------------------------- EMA VQ
class EuclideanCodebook(nn.Module):
    """Single EMA-updated euclidean codebook (vector-quantize-pytorch ``EuclideanCodebook``).

    Buffers: ``initted [1]`` (1.0 once initialised), ``cluster_size [1, K]``,
    ``embed_avg [1, K, D]``, ``embed [1, K, D]``. With ``kmeans_init`` the codebook starts at zero
    and is set by k-means on the first batch it sees (in train *or* eval mode, as the library).
    When ``sync_codebook`` (default: a multi-process group is initialised) the EMA statistics are
    summed over processes like the library; k-means and dead-code samples are drawn locally (DDP's
    buffer broadcast keeps ranks consistent).
    """

    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = False, kmeans_iters: int = 10,
                 decay: float = 0.8, eps: float = 1e-5, threshold_ema_dead_code: float = 2,
                 reset_cluster_size: Optional[float] = None, ema_update: bool = True,
                 stochastic_sample_codes: bool = False, sample_codebook_temp: float = 1.0,
                 sync_codebook: Optional[bool] = None) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.eps = eps
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.reset_cluster_size = threshold_ema_dead_code if reset_cluster_size is None else reset_cluster_size
        self.ema_update = ema_update
        self.stochastic_sample_codes = stochastic_sample_codes
        self.sample_codebook_temp = sample_codebook_temp
        self.sync_codebook = sync_codebook
        embed = torch.zeros(1, codebook_size, dim) if kmeans_init else _uniform_init(1, codebook_size, dim)
        self.register_buffer("initted", torch.Tensor([not kmeans_init]))
        self.register_buffer("cluster_size", torch.zeros(1, codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("embed", embed)

    def _all_reduce(self, t: torch.Tensor) -> None:
        sync = _distributed_world() if self.sync_codebook is None else self.sync_codebook
        if sync:
            dist.all_reduce(t)

    @torch.no_grad()
    def init_embed_(self, flatten: torch.Tensor) -> None:
        """k-means initialise from ``flatten [1, n, d]`` unless already initialised."""
        if self.initted:
            return
        embed, cluster_size = _kmeans(flatten, self.codebook_size, self.kmeans_iters)
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed * cluster_size.unsqueeze(-1))
        self.cluster_size.copy_(cluster_size)
        self.initted.copy_(torch.Tensor([True]))

    @torch.no_grad()
    def expire_codes_(self, flatten: torch.Tensor) -> None:
        """Replace codes whose EMA cluster size fell below ``threshold_ema_dead_code`` by batch samples."""
        if self.threshold_ema_dead_code == 0:
            return
        expired = self.cluster_size < self.threshold_ema_dead_code
        if not torch.any(expired):
            return
        for ind, (samples, mask) in enumerate(zip(flatten, expired)):
            sampled = _sample_vectors(samples, int(mask.sum().item()))
            self.embed[ind][mask] = sampled
            self.cluster_size[ind][mask] = self.reset_cluster_size
            self.embed_avg[ind][mask] = sampled * self.reset_cluster_size

    @torch.no_grad()
    def _ema_update(self, flatten: torch.Tensor, onehot: torch.Tensor) -> None:
        cluster_size = onehot.sum(dim=1)
        self._all_reduce(cluster_size)
        self.cluster_size.lerp_(cluster_size, 1 - self.decay)
        embed_sum = torch.einsum("h n d, h n c -> h c d", flatten, onehot).contiguous()
        self._all_reduce(embed_sum)
        self.embed_avg.lerp_(embed_sum, 1 - self.decay)
        smoothed = _laplace_smoothing(self.cluster_size, self.codebook_size, self.eps) \
            * self.cluster_size.sum(dim=-1, keepdim=True)
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(-1))
        self.expire_codes_(flatten)

    def forward(self, x: torch.Tensor, freeze_codebook: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Quantize ``x [b, n, d]`` (float32, autocast off); returns ``(quantized, indices [b, n])``."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            flatten = x.reshape(1, -1, x.shape[-1])
            self.init_embed_(flatten)
            embed = self.embed.detach()
            dist_ = _neg_cdist(flatten, embed)
            logits = dist_
            if self.training and self.stochastic_sample_codes and self.sample_codebook_temp > 0:
                logits = dist_ / self.sample_codebook_temp + _gumbel_noise(dist_)
            ind = logits.argmax(dim=-1)
            quantize = embed[0][ind[0]].reshape(x.shape)
            if self.training and self.ema_update and not freeze_codebook:
                self._ema_update(flatten.detach(), F.one_hot(ind, self.codebook_size).type(dist_.dtype))
        return quantize, ind.reshape(x.shape[:-1])


class VectorQuantize(nn.Module):
    """One residual layer: an EMA codebook plus straight-through estimator and commitment loss.

    Matches vector-quantize-pytorch's ``VectorQuantize`` as ResidualVQ builds it (single head,
    ``dim == codebook_dim`` so no projections; channel-last input ``[b, n, d]``).
    Forward returns ``(quantized, indices [b, n], loss [1])``; the loss is 0 in eval mode and
    ``commitment_weight * mse(sg(q), x)`` in training.
    """

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.8, eps: float = 1e-5,
                 kmeans_init: bool = False, kmeans_iters: int = 10, threshold_ema_dead_code: float = 0,
                 commitment_weight: float = 1.0, ema_update: bool = True, stochastic_sample_codes: bool = False,
                 sample_codebook_temp: float = 1.0, sync_codebook: Optional[bool] = None) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.commitment_weight = commitment_weight
        self._codebook = EuclideanCodebook(
            dim, codebook_size, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, decay=decay, eps=eps,
            threshold_ema_dead_code=threshold_ema_dead_code, ema_update=ema_update,
            stochastic_sample_codes=stochastic_sample_codes, sample_codebook_temp=sample_codebook_temp,
            sync_codebook=sync_codebook)
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors ``[K, D]``."""
        return self._codebook.embed[0]

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    def forward(self, x: torch.Tensor, freeze_codebook: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quantize, indices = self._codebook(x, freeze_codebook=freeze_codebook)
        loss = torch.tensor([0.0], device=x.device, requires_grad=self.training)
        if self.training:
            commit_quantize = quantize.detach()
            quantize = x + (quantize - x).detach()
            if self.commitment_weight > 0:
                loss = loss + F.mse_loss(commit_quantize, x) * self.commitment_weight
        return quantize, indices, loss


class ResidualVQ(nn.Module):
    """Residual stack of EMA vector quantizers (vector-quantize-pytorch 1.14.41 ``ResidualVQ``).

    Children: ``project_in`` / ``project_out`` (``nn.Linear`` when ``codebook_dim != dim``, else
    Identity) and ``layers.{q}`` (:class:`VectorQuantize`). Input/output are channel-last
    ``[b, n, dim]``; forward returns ``(quantized, indices [b, n, q], losses [1, q])``.
    ``quantize_dropout`` (training only) stops at a random layer; dropped layers give index -1.
    """

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, codebook_dim: Optional[int] = None,
                 shared_codebook: bool = False, quantize_dropout: bool = False,
                 quantize_dropout_cutoff_index: int = 0, quantize_dropout_multiple_of: int = 1,
                 decay: float = 0.8, eps: float = 1e-5, kmeans_init: bool = False, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 0, commitment_weight: float = 1.0, ema_update: bool = True,
                 stochastic_sample_codes: bool = False, sample_codebook_temp: float = 1.0,
                 sync_codebook: Optional[bool] = None) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"ResidualVQ needs num_quantizers >= 1, got {num_quantizers}")
        if quantize_dropout_cutoff_index < 0:
            raise ValueError("quantize_dropout_cutoff_index must be >= 0")
        codebook_dim = dim if codebook_dim is None else codebook_dim
        self.has_projections = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.layers = nn.ModuleList([
            VectorQuantize(codebook_dim, codebook_size, decay=decay, eps=eps, kmeans_init=kmeans_init,
                           kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
                           commitment_weight=commitment_weight, ema_update=ema_update,
                           stochastic_sample_codes=stochastic_sample_codes,
                           sample_codebook_temp=sample_codebook_temp, sync_codebook=sync_codebook)
            for _ in range(num_quantizers)])
        self.quantize_dropout = quantize_dropout and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.quantize_dropout_multiple_of = quantize_dropout_multiple_of
        if shared_codebook:
            for layer in self.layers[1:]:
                layer._codebook = self.layers[0]._codebook

    @property
    def codebooks(self) -> torch.Tensor:
        """All code vectors ``[q, K, codebook_dim]``."""
        return torch.stack([layer._codebook.embed[0] for layer in self.layers], dim=0)

    def get_codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-layer code vectors ``[q, b, n, codebook_dim]`` for ``indices [b, n, q']``.

        ``q' < num_quantizers`` (coarse codes) is padded with -1; index -1 gives a zero vector.
        """
        if indices.shape[-1] > self.num_quantizers:
            raise ValueError(f"got {indices.shape[-1]} quantizer indices per frame, but this ResidualVQ has "
                             f"{self.num_quantizers} quantizers (indices must be [batch, frames, quantizers])")
        indices = F.pad(indices.long(), (0, self.num_quantizers - indices.shape[-1]), value=-1)
        mask = indices == -1
        indices = indices.masked_fill(mask, 0)
        codes = torch.stack([cb[indices[..., q]] for q, cb in enumerate(self.codebooks)], dim=0)
        return codes.masked_fill(mask.movedim(-1, 0).unsqueeze(-1), 0.0)

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Quantized output ``[b, n, dim]`` (sum of codes, projected out) for ``indices [b, n, q]``."""
        return self.project_out(self.get_codes_from_indices(indices).sum(dim=0))

    def forward(self, x: torch.Tensor, freeze_codebook: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.project_in(x)
        quantized_out: Union[float, torch.Tensor] = 0.0
        residual = x
        all_losses: List[torch.Tensor] = []
        all_indices: List[torch.Tensor] = []
        dropout_index = self.num_quantizers
        if self.training and self.quantize_dropout:
            dropout_index = random.randrange(self.quantize_dropout_cutoff_index, self.num_quantizers)
            mult = self.quantize_dropout_multiple_of
            if mult != 1:
                dropout_index = -(-(dropout_index + 1) // mult) * mult - 1
        for q, layer in enumerate(self.layers):
            if q > dropout_index:
                all_indices.append(torch.full(x.shape[:2], -1, device=x.device, dtype=torch.long))
                all_losses.append(torch.zeros(1, device=x.device, dtype=x.dtype))
                continue
            quantized, indices, loss = layer(residual, freeze_codebook=freeze_codebook)
            residual = residual - quantized.detach()
            quantized_out = quantized_out + quantized
            all_indices.append(indices)
            all_losses.append(loss)
        return (self.project_out(quantized_out), torch.stack(all_indices, dim=-1),
                torch.stack(all_losses, dim=-1))


# ----------------------------------------------------------------------------- DAC RVQ
class FactorizedVectorQuantize(nn.Module):
    """DAC 1.0.0 ``VectorQuantize``: 1x1 WN projection to ``codebook_dim``, L2-normalised lookup.

    Forward on ``z [B, input_dim, T]`` returns ``(z_q, commitment_loss [B], codebook_loss [B],
    indices [B, T], z_e [B, codebook_dim, T])`` with a straight-through estimator.
    """

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.in_proj = WNConv1d(input_dim, codebook_dim, kernel_size=1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        z_e = self.in_proj(z)
        z_q, indices = self.decode_latents(z_e)
        commitment_loss = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2])
        codebook_loss = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2])
        z_q = z_e + (z_q - z_e).detach()
        return self.out_proj(z_q), commitment_loss, codebook_loss, indices, z_e

    def decode_code(self, embed_id: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, codebook_dim, T]`` for ``embed_id [B, T]``."""
        return F.embedding(embed_id, self.codebook.weight).transpose(1, 2)

    def decode_latents(self, latents: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Nearest code (cosine) for ``latents [B, codebook_dim, T]``: ``(z_q, indices [B, T])``."""
        encodings = F.normalize(latents.transpose(1, 2).reshape(-1, latents.shape[1]))
        codebook = F.normalize(self.codebook.weight)
        dist_ = (encodings.pow(2).sum(1, keepdim=True) - 2 * encodings @ codebook.t()
                 + codebook.pow(2).sum(1, keepdim=True).t())
        indices = (-dist_).max(1)[1].reshape(latents.shape[0], -1)
        return self.decode_code(indices), indices


class ResidualVectorQuantize(nn.Module):
    """DAC 1.0.0 ``ResidualVectorQuantize`` (SoundStream RVQ with factorised codes).

    ``forward(z, n_quantizers=None)`` returns ``(z_q, codes [B, n, T], latents [B, n*codebook_dim, T],
    commitment_loss, codebook_loss)`` (losses summed over codebooks of per-item means). In eval only
    the first ``n_quantizers`` codebooks run; in training the argument is ignored and, for the first
    ``int(B * quantizer_dropout)`` items, a random number of codebooks is kept (as DAC).
    """

    def __init__(self, input_dim: int = 512, n_codebooks: int = 9, codebook_size: int = 1024,
                 codebook_dim: Union[int, Sequence[int]] = 8, quantizer_dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(codebook_dim, int):
            codebook_dim = [codebook_dim] * n_codebooks
        if len(codebook_dim) != n_codebooks:
            raise ValueError(f"codebook_dim has {len(codebook_dim)} entries but n_codebooks is {n_codebooks}")
        self.n_codebooks = n_codebooks
        self.codebook_dim = list(codebook_dim)
        self.codebook_size = codebook_size
        self.quantizers = nn.ModuleList([
            FactorizedVectorQuantize(input_dim, codebook_size, codebook_dim[i]) for i in range(n_codebooks)])
        self.quantizer_dropout = quantizer_dropout

    def forward(self, z: torch.Tensor, n_quantizers: Optional[int] = None) -> Tuple[torch.Tensor, ...]:
        if n_quantizers is None:
            n_quantizers = self.n_codebooks
        if not self.training and n_quantizers < 1:
            raise ValueError(f"n_quantizers must be >= 1, got {n_quantizers}")
        limit: Union[int, torch.Tensor] = n_quantizers
        if self.training:
            limit = torch.ones((z.shape[0],)) * self.n_codebooks + 1
            dropout = torch.randint(1, self.n_codebooks + 1, (z.shape[0],))
            n_dropout = int(z.shape[0] * self.quantizer_dropout)
            limit[:n_dropout] = dropout[:n_dropout]
            limit = limit.to(z.device)
        z_q: Union[float, torch.Tensor] = 0
        residual = z
        commitment_loss: Union[float, torch.Tensor] = 0
        codebook_loss: Union[float, torch.Tensor] = 0
        codebook_indices, latents = [], []
        for i, quantizer in enumerate(self.quantizers):
            if not self.training and i >= n_quantizers:
                break
            z_q_i, commitment_loss_i, codebook_loss_i, indices_i, z_e_i = quantizer(residual)
            mask = torch.full((z.shape[0],), fill_value=i, device=z.device) < limit
            z_q = z_q + z_q_i * mask[:, None, None]
            residual = residual - z_q_i
            commitment_loss = commitment_loss + (commitment_loss_i * mask).mean()
            codebook_loss = codebook_loss + (codebook_loss_i * mask).mean()
            codebook_indices.append(indices_i)
            latents.append(z_e_i)
        return z_q, torch.stack(codebook_indices, dim=1), torch.cat(latents, dim=1), commitment_loss, codebook_loss

    def from_codes(self, codes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``codes [B, n, T]`` (n <= n_codebooks) -> ``(z_q [B, D, T], code vectors [B, n*cd, T], codes)``."""
        if codes.shape[1] > self.n_codebooks:
            raise ValueError(f"got {codes.shape[1]} codebooks of codes but this quantizer has {self.n_codebooks} "
                             "(codes must be [batch, codebooks, frames])")
        z_q: Union[float, torch.Tensor] = 0.0
        z_p = []
        for i in range(codes.shape[1]):
            z_p_i = self.quantizers[i].decode_code(codes[:, i, :])
            z_p.append(z_p_i)
            z_q = z_q + self.quantizers[i].out_proj(z_p_i)
        return z_q, torch.cat(z_p, dim=1), codes


# ----------------------------------------------------------------------------- FSQ
class FSQ(nn.Module):
    """Finite scalar quantization (vector-quantize-pytorch 1.14.41 ``FSQ``), channel-last.

    Non-persistent buffers ``_levels``, ``_basis`` (int32) and ``implicit_codebook``; children
    ``project_in``/``project_out`` are ``nn.Linear`` when ``dim != len(levels) * num_codebooks``.
    ``forward(z [b, n, dim])`` -> ``(out [b, n, dim], indices)`` with int32 indices ``[b, n, c]``
    (``[b, n]`` when ``keep_num_codebooks_dim`` is false). Quantisation runs in float32/float64
    with autocast disabled. ``scale`` is accepted and stored but unused, as in the library.
    """

    def __init__(self, levels: Sequence[int], dim: Optional[int] = None, num_codebooks: int = 1,
                 keep_num_codebooks_dim: Optional[bool] = None, scale: Optional[float] = None,
                 projection_has_bias: bool = True) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0, dtype=torch.int32),
                             persistent=False)
        self.scale = scale
        self.codebook_dim = len(levels)
        self.num_codebooks = num_codebooks
        self.effective_codebook_dim = self.codebook_dim * num_codebooks
        if keep_num_codebooks_dim is None:
            keep_num_codebooks_dim = num_codebooks > 1
        if num_codebooks > 1 and not keep_num_codebooks_dim:
            raise ValueError("keep_num_codebooks_dim must be true when num_codebooks > 1")
        self.keep_num_codebooks_dim = keep_num_codebooks_dim
        self.dim = self.effective_codebook_dim if dim is None else dim
        self.has_projections = self.dim != self.effective_codebook_dim
        self.project_in = (nn.Linear(self.dim, self.effective_codebook_dim, bias=projection_has_bias)
                           if self.has_projections else nn.Identity())
        self.project_out = (nn.Linear(self.effective_codebook_dim, self.dim, bias=projection_has_bias)
                            if self.has_projections else nn.Identity())
        self.codebook_size = int(self._levels.prod().item())
        self.register_buffer("implicit_codebook", self._indices_to_codes(torch.arange(self.codebook_size)),
                             persistent=False)
        self.allowed_dtypes = (torch.float32, torch.float64)

    def bound(self, z: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        half_l = (self._levels - 1) * (1 + eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Bound, round (straight-through) and renormalise to [-1, 1]."""
        return round_ste(self.bound(z)) / (self._levels // 2)

    def _indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        level_indices = (indices.unsqueeze(-1) // self._basis) % self._levels
        half_width = self._levels // 2
        return (level_indices - half_width) / half_width

    def codes_to_indices(self, zhat: torch.Tensor) -> torch.Tensor:
        half_width = self._levels // 2
        return ((zhat * half_width + half_width) * self._basis).sum(dim=-1).to(torch.int32)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[b, n, c]`` (or ``[b, n]``) -> projected codes ``[b, n, dim]`` (channel-last)."""
        codes = self._indices_to_codes(indices.long())
        if self.keep_num_codebooks_dim:
            codes = codes.flatten(-2)
        return self.project_out(codes)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expected {self.dim} channels in the last dim, got {z.shape[-1]}")
        orig_dtype = z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = self.project_in(z)
            z = z.reshape(*z.shape[:-1], self.num_codebooks, self.codebook_dim)
            if z.dtype not in self.allowed_dtypes:
                z = z.float()
            codes = self.quantize(z)
            indices = self.codes_to_indices(codes)
            codes = codes.flatten(-2)
            if codes.dtype != orig_dtype:
                codes = codes.type(orig_dtype)
            out = self.project_out(codes)
        if not self.keep_num_codebooks_dim:
            indices = indices.squeeze(-1)
        return out, indices


class DitheredFSQ(nn.Module):
    """Upstream's dithered FSQ (``models/fsq.py``): tanh, then grid rounding or dithering.

    Non-persistent buffers ``_levels``, ``_basis`` (int64) and ``half_l = 2 * scale / (levels - 1)``.
    Eval: round to the level grid (straight-through). Training: per batch item, with probability
    ``noise_dropout`` keep the un-rounded value instead of the rounded one; then, again per item with
    probability ``noise_dropout`` keep that, otherwise use ``z + (U - 0.5) * half_l``.
    ``dither_inference`` is stored but (as upstream) has no effect. Input ``[b, n, c*d]``;
    returns ``(codes [b, n, c*d], indices [b, n, c] int64)``.
    """

    def __init__(self, levels: Sequence[int], dither_inference: bool = False, num_codebooks: int = 1,
                 noise_dropout: float = 0.5, scale: float = 1.0) -> None:
        super().__init__()
        self.levels = [int(level) for level in levels]
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + self.levels[:-1]), dim=0,
                                                     dtype=torch.int64), persistent=False)
        self.codebook_dim = len(self.levels)
        self.codebook_size = int(self._levels.prod().item())
        self.num_codebooks = num_codebooks
        self.dim = self.codebook_dim * num_codebooks
        self.dither_inference = dither_inference
        self.scale = scale
        self.register_buffer("half_l", self.scale * 2 / (self._levels - 1), persistent=False)
        self.allowed_dtypes = (torch.float32, torch.float64)
        self.noise_dropout = noise_dropout

    def _scale_and_shift(self, z: torch.Tensor) -> torch.Tensor:
        return (z + self.scale) / self.half_l

    def _scale_and_shift_inverse(self, level_indices: torch.Tensor) -> torch.Tensor:
        return level_indices * self.half_l - self.scale

    def quantize(self, z: torch.Tensor, skip_tanh: bool = False) -> torch.Tensor:
        if not skip_tanh:
            z = torch.tanh(z)
        rounded = self._scale_and_shift_inverse(round_ste(self._scale_and_shift(z)))
        if not self.training:
            return rounded
        probs = torch.full([z.shape[0], 1, 1, 1], self.noise_dropout, device=z.device)
        mask = torch.bernoulli(probs).bool().expand_as(z)
        quantized = torch.where(mask, z, rounded)
        mask = torch.bernoulli(probs).bool().expand_as(z)
        return torch.where(mask, quantized, z + (torch.rand_like(z) - 0.5) * self.half_l)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        return (self._scale_and_shift(codes).round().to(torch.int64) * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[..., num_codebooks]`` -> codes ``[..., num_codebooks * codebook_dim]``."""
        if indices.shape[-1] != self.num_codebooks:
            raise ValueError(f"expected indices with last dimension {self.num_codebooks} (codebooks), "
                             f"got shape {tuple(indices.shape)}")
        level_indices = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        return self._scale_and_shift_inverse(level_indices).flatten(-2)

    def forward(self, z: torch.Tensor, skip_tanh: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"DitheredFSQ expected {self.dim} channels in the last dim, got {z.shape[-1]}")
        orig_dtype = z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.reshape(*z.shape[:-1], self.num_codebooks, self.codebook_dim)
            if z.dtype not in self.allowed_dtypes:
                z = z.to(torch.float64)
            codes = self.quantize(z, skip_tanh=skip_tanh)
            indices = self.codes_to_indices(codes)
            codes = codes.flatten(-2)
        if codes.dtype != orig_dtype:
            codes = codes.type(orig_dtype)
        return codes, indices
