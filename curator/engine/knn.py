"""The shared kNN graph: exact inner-product search over L2-normalised embeddings with FAISS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import write_npy


def _faiss_index(dim: int, device: torch.device):
    import faiss

    index = faiss.IndexFlatIP(dim)
    if device.type == "cuda" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device.index or 0, index)
    return index


def knn_graph(embeddings: np.ndarray, k: int, artifacts: Path, device: torch.device,
              batch: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int64, cosine similarities (N, k) float32) of each example's k nearest others.

    Queries k + 1 neighbours and drops the example itself. Stored as ``artifacts/knn_*.npy``; a
    stored graph with at least k neighbours is reused.
    """
    ind_path, sim_path = artifacts / "knn_indices.npy", artifacts / "knn_similarities.npy"
    if ind_path.exists() and sim_path.exists():
        ind = np.load(ind_path, mmap_mode="r")
        if ind.shape[1] >= k:
            return ind[:, :k], np.load(sim_path, mmap_mode="r")[:, :k]
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    k_eff = min(k, n - 1)
    index = _faiss_index(x.shape[1], device)
    index.add(x)
    indices = np.empty((n, k_eff), np.int64)
    sims = np.empty((n, k_eff), np.float32)
    for start in range(0, n, batch):
        q = x[start:start + batch]
        s, i = index.search(q, k_eff + 1)
        rows = np.arange(start, start + len(q))[:, None]
        # Drop self wherever it appears (ties can put a duplicate first); else drop the last column.
        is_self = i == rows
        keep = ~is_self
        keep[~is_self.any(1), -1] = False
        indices[start:start + len(q)] = i[keep].reshape(len(q), k_eff)
        sims[start:start + len(q)] = s[keep].reshape(len(q), k_eff)
    write_npy(ind_path, indices)
    write_npy(sim_path, sims)
    return indices, sims
