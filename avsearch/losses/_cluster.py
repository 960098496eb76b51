"""K-means and PCA through faiss, shared by VHMT's structure matrix and AutoSSVH's centres.

faiss is imported on first use, so ``import avsearch`` stays light and a missing faiss only
fails the functions that cluster.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_float32_matrix", "faiss_module", "kmeans", "pca_reduce", "nearest"]


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("clustering needs faiss (pip install faiss-cpu)") from exc
    return faiss


def as_float32_matrix(x: torch.Tensor | np.ndarray, name: str = "features") -> np.ndarray:
    """A C-contiguous float32 (N, D) numpy copy of x (faiss's input format)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def pca_reduce(x: np.ndarray, dim: int | None) -> np.ndarray:
    """Project x (N, D) on its first ``dim`` principal components (faiss PCAMatrix: centred,
    no whitening). ``None`` or ``dim >= D`` returns x unchanged; dim is capped at N (faiss
    cannot output more components than there are points)."""
    n, d = x.shape
    if dim is None or dim >= d:
        return x
    if dim < 1:
        raise ValueError(f"pca_dim must be >= 1, got {dim}")
    pca = faiss_module().PCAMatrix(d, min(dim, n))
    pca.train(x)
    return np.ascontiguousarray(pca.apply(x), dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """faiss K-means (L2; initial centroids drawn at random with ``seed``): the (k, D) centroids.

    Deterministic for a seed at a fixed thread count.
    """
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} points")
    km = faiss_module().Kmeans(d, int(k), niter=int(niter), seed=int(seed), verbose=False,
                               min_points_per_centroid=1)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def nearest(x: np.ndarray, centroids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest centroids of every row of x, nearest first: (squared L2 distances,
    indices), each (N, k)."""
    faiss = faiss_module()
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(f"centroids have width {centroids.shape[1]}, features {x.shape[1]}")
    if not 1 <= k <= len(centroids):
        raise ValueError(f"cannot take the {k} nearest of {len(centroids)} centroids")
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, idx = index.search(x, int(k))
    return dist, idx.astype(np.int64)
