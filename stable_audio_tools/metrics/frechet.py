"""Frechet distance between two sets of embeddings (FD / FAD).

Each set is summarised by its mean and covariance, and the distance between the two Gaussians is

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

(Dowson & Landau, 1982). The trace of the square root is computed in float64 from the symmetric matrix
``A = S_1^(1/2) S_2 S_1^(1/2)``, which has the same eigenvalues as ``S_1 S_2``: both square roots come from
symmetric eigen-decompositions with tiny negative eigenvalues (round-off of positive semi-definite matrices)
clipped to zero. Near-singular or rank-deficient covariances (fewer embeddings than dimensions, constant
dimensions) therefore give a finite, real result without the diagonal offset and imaginary-part checks that a
general ``scipy.linalg.sqrtm`` of the non-symmetric product needs.
"""
from __future__ import annotations

import logging
from typing import Tuple, Union

import numpy as np
import torch

__all__ = ["embedding_statistics", "sqrtm_psd", "frechet_distance", "frechet_distance_from_embeddings"]

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_float64(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def embedding_statistics(embeddings: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``embeddings [N, D]``; needs ``N >= 2``.

    Warns when ``N <= D``: the covariance is then rank-deficient and the distance is strongly biased by the set
    size, so only compare numbers computed from sets of the same size.
    """
    emb = _as_float64(embeddings, "embeddings")
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D [count, dim] array, got shape {tuple(emb.shape)}")
    count, dim = emb.shape
    if count < 2:
        raise ValueError(f"a covariance needs at least 2 embeddings, got {count}")
    if count <= dim:
        log.warning("only %d embeddings of dimension %d: the covariance is rank-deficient and the Frechet distance "
                    "is biased by the set size", count, dim)
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def sqrtm_psd(matrix: ArrayLike) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (float64) by eigen-decomposition.

    The input is symmetrised first; eigenvalues below zero (round-off) are clipped to zero.
    """
    m = _as_float64(matrix, "matrix")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square, got shape {tuple(m.shape)}")
    m = 0.5 * (m + m.T)
    eigenvalues, eigenvectors = np.linalg.eigh(m)
    root = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * root) @ eigenvectors.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64 arithmetic).

    Args:
        mu1: mean ``[D]`` of the first set.
        sigma1: covariance ``[D, D]`` of the first set.
        mu2: mean ``[D]`` of the second set.
        sigma2: covariance ``[D, D]`` of the second set.
    """
    m1, m2 = np.atleast_1d(_as_float64(mu1, "mu1")), np.atleast_1d(_as_float64(mu2, "mu2"))
    s1, s2 = np.atleast_2d(_as_float64(sigma1, "sigma1")), np.atleast_2d(_as_float64(sigma2, "sigma2"))
    if m1.shape != m2.shape or m1.ndim != 1:
        raise ValueError(f"mu1 and mu2 must be vectors of one length, got {m1.shape} and {m2.shape}")
    expected = (m1.shape[0], m1.shape[0])
    if s1.shape != expected or s2.shape != expected:
        raise ValueError(f"sigma1 and sigma2 must be {expected} matrices, got {s1.shape} and {s2.shape}")
    root1 = sqrtm_psd(s1)
    inner = root1 @ (0.5 * (s2 + s2.T)) @ root1
    inner = 0.5 * (inner + inner.T)
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0.0, None)).sum())
    diff = m1 - m2
    distance = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    # The exact value is >= 0; round-off can leave a tiny negative number for (near) identical sets.
    return max(distance, 0.0)


def frechet_distance_from_embeddings(embeddings1: ArrayLike, embeddings2: ArrayLike) -> float:
    """Frechet distance between two embedding sets ``[N1, D]`` and ``[N2, D]`` (see :func:`frechet_distance`)."""
    mu1, sigma1 = embedding_statistics(embeddings1)
    mu2, sigma2 = embedding_statistics(embeddings2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two embedding sets have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance(mu1, sigma1, mu2, sigma2)
