"""Benchmark-style graphs shared by the community tests (and nothing else)."""

import numpy as np
import torch


def planted(n_comm, size, p_in, p_out, seed=0):
    """Stochastic block model: edge_index (both directions), truth labels."""
    rng = np.random.default_rng(seed)
    n = n_comm * size
    truth = np.repeat(np.arange(n_comm), size)
    iu = np.triu_indices(n, 1)
    p = np.where(truth[iu[0]] == truth[iu[1]], p_in, p_out)
    keep = rng.random(len(p)) < p
    u, v = iu[0][keep], iu[1][keep]
    return torch.tensor(np.stack([np.r_[u, v], np.r_[v, u]])), n, truth


def knn(n, d=16, k=16, clusters=8, noise=1.5, seed=0):
    """kNN graph (cosine weights) of noisy clustered points: edge_index, edge_weight, n."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    x = torch.tensor(x / np.linalg.norm(x, axis=1, keepdims=True))
    s = x @ x.T
    s.fill_diagonal_(-2)
    w, j = s.topk(k, 1)
    i = torch.arange(n).repeat_interleave(k)
    j, w = j.flatten(), w.flatten().clamp_min(1e-6)
    return torch.stack([torch.cat([i, j]), torch.cat([j, i])]), torch.cat([w, w]), n


def batch(graphs):
    """Stack (edge_index, edge_weight, n) graphs into one batch with ptr."""
    eis, ws, ptr = [], [], [0]
    for ei, w, n in graphs:
        eis.append(ei + ptr[-1])
        ws.append(w if w is not None else torch.ones(ei.shape[1], dtype=torch.float64))
        ptr.append(ptr[-1] + n)
    return torch.cat(eis, 1), torch.cat(ws), torch.tensor(ptr)
