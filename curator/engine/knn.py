"""The shared kNN graph: inner-product search over L2-normalised embeddings with FAISS.

Exact (a flat index) for groups of up to ``EXACT_MAX`` rows; above that an inverted-file index
(IVF-Flat: ``4 sqrt(M)`` k-means cells, ``NPROBE`` of them searched per query), whose cost grows as
M^1.5 instead of M^2: at half a million rows per fold, exact search would cost 2.5e11 dot products.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path

# FAISS GPU brute-force selection handles k <= 1024 in every release (2048 in recent ones).
_GPU_MAX_K = 1024
#: Groups larger than this are searched approximately (IVF-Flat).
EXACT_MAX = 200_000
#: IVF cells searched per query.
NPROBE = 24
#: k-means problems of at most this many (row, centre) pairs run on one OpenMP thread (a class of a
#: thousand-class set: about 200 rows, 4 centres, clustered in a fraction of a millisecond).
SMALL_KMEANS = 1 << 16


def unit_rows(x: np.ndarray) -> np.ndarray:
    """A float32 copy of ``x`` (M, D) with every row scaled to unit L2 norm (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def spherical_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(M,) cluster of each L2-normalised row of ``x`` (M, D): FAISS spherical k-means, 20 iterations,
    seeded (small inputs are clustered as they are, without FAISS's warning about them)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    if x.shape[0] * k <= SMALL_KMEANS:
        faiss.omp_set_num_threads(1)     # starting OpenMP threads costs more than such a problem
    try:
        kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, min_points_per_centroid=1)
        kmeans.train(x)
        _, assigned = kmeans.index.search(x, 1)
    finally:
        faiss.omp_set_num_threads(threads)
    return assigned[:, 0]


def _flat_ip_index(dim: int, device: torch.device, k: int):
    """(exact inner-product index, GPU resources or None): on the GPU when FAISS was built with GPU
    support and ``device`` is CUDA, else on the CPU. The caller keeps the resources alive while the
    index is in use."""
    import faiss

    return _to_device(faiss.IndexFlatIP(dim), device, k)


def _ivf_ip_index(x: np.ndarray, device: torch.device, k: int):
    """(trained IVF-Flat inner-product index for the rows of ``x``, GPU resources or None).

    ``4 sqrt(M)`` cells, k-means on a seeded sample of 64 rows per cell, ``NPROBE`` cells searched."""
    import faiss

    m, dim = x.shape
    nlist = int(4 * np.sqrt(m))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(m, min(m, 64 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.nprobe = min(NPROBE, nlist)
    return _to_device(index, device, k)


def _to_device(index, device: torch.device, k: int):
    import faiss

    if (device.type == "cuda" and k <= _GPU_MAX_K and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0):
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, device.index or 0, index), resources
    return index, None


def _search_without_self(x: np.ndarray, k: int, device: torch.device, batch: int,
                         exact_max: int = EXACT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """k nearest others of every row of ``x`` (M, D) among the rows of ``x``: (M, k) local indices, sims.

    Exact up to ``exact_max`` rows, IVF above; a query whose probed cells hold fewer than k + 1 rows
    is answered exactly."""
    m = len(x)
    approximate = m > exact_max
    index, resources = _ivf_ip_index(x, device, k + 1) if approximate else _flat_ip_index(x.shape[1], device, k + 1)
    index.add(x)
    exact = None
    indices = np.empty((m, k), np.int64)
    sims = np.empty((m, k), np.float32)
    for start in range(0, m, batch):
        s, i = index.search(x[start:start + batch], k + 1)
        short = (i < 0).any(axis=1)
        if short.any():                      # IVF only: too few rows in the probed cells
            if exact is None:
                exact = _flat_ip_index(x.shape[1], torch.device("cpu"), k + 1)[0]
                exact.add(x)
            s[short], i[short] = exact.search(x[start:start + batch][short], k + 1)
        rows = np.arange(start, start + len(s))[:, None]
        # Self need not come first (exact duplicates tie with it) nor at all (more than k duplicates):
        # drop it where it appears, else drop the farthest of the k + 1.
        keep = i != rows
        keep[keep.all(axis=1), -1] = False
        indices[start:start + len(s)] = i[keep].reshape(len(s), k)
        sims[start:start + len(s)] = s[keep].reshape(len(s), k)
    del index, exact, resources  # the GPU index goes before the resources it runs on
    return indices, sims


def knn_graph(embeddings: np.ndarray, k: int, artifacts: Path, device: torch.device,
              groups: np.ndarray | None = None, batch: int = 16384,
              exact_max: int = EXACT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k') int64, cosine similarities (N, k') float32) of each example's k' nearest others,
    most similar first, k' = min(k, smallest group size - 1).

    embeddings: (N, D) float. groups: (N,) int or None; when given, neighbours are searched only
    within an example's own group. Curator passes the folds: out-of-fold embeddings of different folds
    come from different networks, so similarities across folds compare unrelated feature spaces.
    Queries k' + 1 neighbours and drops the example itself. Groups of more than ``exact_max`` rows
    are searched with IVF (approximate; see the module docstring). Stored as ``artifacts/knn_*.npy``;
    a stored graph with N rows and at least k' neighbours is reused.
    """
    n = len(embeddings)
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    k_eff = min(int(k), min((len(m) for m in members), default=0) - 1)
    if k_eff < 1:
        raise ValueError(f"kNN graph with k={k}: every group needs at least 2 examples")
    ind_path, sim_path = artifacts / "knn_indices.npy", artifacts / "knn_similarities.npy"
    if ind_path.exists() and sim_path.exists():
        ind = np.load(ind_path, mmap_mode="r")
        if ind.shape[0] == n and ind.shape[1] >= k_eff:
            return ind[:, :k_eff], np.load(sim_path, mmap_mode="r")[:, :k_eff]
    # Built group by group straight into memory-mapped files: no (N, D) copy, no (N, k) arrays in memory.
    with atomic_path(ind_path) as ind_tmp, atomic_path(sim_path) as sim_tmp:
        indices = np.lib.format.open_memmap(ind_tmp, "w+", np.int64, (n, k_eff))
        sims = np.lib.format.open_memmap(sim_tmp, "w+", np.float32, (n, k_eff))
        for rows in members:
            local, s = _search_without_self(unit_rows(embeddings[rows]), k_eff, device, batch, exact_max)
            indices[rows] = rows[local]
            sims[rows] = s
        indices.flush()
        sims.flush()
        del indices, sims
    return np.load(ind_path, mmap_mode="r"), np.load(sim_path, mmap_mode="r")
