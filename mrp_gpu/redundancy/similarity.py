"""Similarity graphs of every group, as one batched graph.

Group ``g``'s graph has a vertex per channel and an edge ``(i, j)`` of weight
``S_ij = <f_i, f_j>`` (the features are L2-normalised, so ``S`` is the cosine) when
``S_ij >= tau_g``. By default ``tau_g = z / sqrt(d_g)``: the cosine of two random
vectors in ``d`` dimensions is about ``N(0, 1/d)``, so ``z`` measures "how far above
chance" with one number for layers of any width or kernel size (docs/method.md, section 3).
With ``k_max`` each channel keeps at most its ``k_max`` strongest neighbours (the
union of both directions is kept, so the graph stays undirected). Edges need a
positive weight; channels without edges stay as isolated vertices.

The batch is returned in the PyTorch Geometric convention: ``edge_index`` (2 x E,
both directions), ``edge_weight``, ``ptr``, on the device the features are on.
Each group's ``n x n`` similarity matrix is one matrix product (:func:`gram`); its edges
come from compiled CPU code (:mod:`mrp_gpu.redundancy.similarity_numba`) on a CPU and from tensor
operations elsewhere. The fused Numba kernel of :mod:`mrp_gpu.kernels` computes the
same edges on a GPU without materialising any ``n x n`` matrix.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from ..linalg import GRAM_BLOCK, gram
from .features import GroupFeatures

__all__ = ["BatchedGraph", "kernels_module", "effective_dim", "chance_z", "thresholds", "cosine",
           "similarity_edges", "group_edges", "build_graphs"]



@dataclass(frozen=True, eq=False)
class BatchedGraph:
    """All groups' similarity graphs side by side (node offsets in ``ptr``)."""

    ids: tuple[str, ...]
    edge_index: torch.Tensor  # [2, E], both directions
    edge_weight: torch.Tensor  # [E]
    ptr: torch.Tensor  # [G + 1]
    tau: tuple[float, ...]

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @property
    def num_edges(self) -> int:
        """Undirected edges."""
        return self.edge_index.shape[1] // 2

    def edges_per_graph(self) -> torch.Tensor:
        gid = torch.bucketize(self.edge_index[0], self.ptr[1:], right=True)
        return torch.bincount(gid, minlength=len(self.ids)) // 2


def kernels_module():
    """``mrp_gpu.kernels``: installed (setup.py maps ``kernels/`` there), or from a source checkout.

    Run from the source tree (``PYTHONPATH=.``, as on the GPU test machine), the
    top-level ``kernels/`` is loaded under the same name.
    """
    try:
        from .. import kernels
    except ImportError:
        src = Path(__file__).resolve().parents[2] / "kernels"
        if not (src / "__init__.py").is_file():
            raise ImportError("mrp_gpu.kernels is not installed and no kernels/ source folder is beside "
                              "the package") from None
        spec = importlib.util.spec_from_file_location("mrp_gpu.kernels", src / "__init__.py",
                                                      submodule_search_locations=[str(src)])
        kernels = importlib.util.module_from_spec(spec)
        sys.modules["mrp_gpu.kernels"] = kernels
        spec.loader.exec_module(kernels)
    return kernels


def effective_dim(f: torch.Tensor) -> float:
    """Participation ratio ``1 / sum_j v_j^2`` of L2-normalised rows, ``v_j = mean_i f_ij^2``.

    Two independent random rows whose coordinates have variances ``v_j`` have a
    cosine of variance ``sum v_j^2`` (``sum v_j = 1``): this is the dimension the chance
    model must use. It equals ``d`` for isotropic rows and is smaller when a few
    coordinates carry most of the energy (a 1x1 shortcut beside 3x3 convs, dead inputs).
    """
    v = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
    for i in range(0, len(f), GRAM_BLOCK):  # exact float64 squares, a block of rows at a time (no float64 copy of f)
        v += f[i:i + GRAM_BLOCK].to(torch.float64, copy=True).square_().sum(0)  # a copy even of float64 rows
    v /= max(len(f), 1)
    total = float(v.sum())
    return total * total / float((v * v).sum()) if total > 0 else 1.0


def chance_z(n: int, chance_degree: float) -> float:
    """The z at which a channel of an ``n``-channel group has ``chance_degree`` chance neighbours."""
    p = min(0.5, chance_degree / max(n - 1, 1))
    return NormalDist().inv_cdf(1.0 - p)


def thresholds(features: GroupFeatures, *, z: float | None = None, tau: float | None = None,
               chance_degree: float = 0.05) -> list[float]:
    """``tau_g`` for every group.

    An absolute ``tau`` wins. Otherwise ``tau_g = z_g / sqrt(d_g)``, with ``z_g = z`` when
    given, else the z at which each channel expects ``chance_degree`` neighbours by chance
    among its group's ``N_g - 1`` others (so wide layers are not flooded by chance
    edges), and ``d_g`` the participation ratio of the features (:func:`effective_dim`).
    """
    if tau is not None:
        return [float(tau)] * len(features)
    out = []
    for f in features.rows:
        d = effective_dim(f)
        zg = z if z is not None else chance_z(f.shape[0], chance_degree)
        out.append(zg / math.sqrt(max(d, 1.0)))
    return out


def _compiled(x: torch.Tensor) -> bool:
    """Whether the compiled CPU path takes ``x``: float32 or float64 on the CPU."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def cosine(prod: torch.Tensor, live: np.ndarray) -> torch.Tensor:
    """Cosine similarities from a Gram matrix ``prod``: ``G_ij / sqrt(G_ii G_jj)``, with the rows
    and columns of channels not ``live`` (a boolean array) or of zero norm set to 0."""
    if not _compiled(prod):
        return _cosine_torch(prod, live)
    from .similarity_numba import cosine

    return cosine(prod, live)


def _cosine_torch(prod: torch.Tensor, live: np.ndarray) -> torch.Tensor:
    d = prod.diagonal()
    ok = torch.as_tensor(live, device=d.device) & (d > 0)
    inv = torch.where(ok, d.rsqrt(), 0.0)
    return (prod * inv[:, None]).mul_(inv)


def similarity_edges(s: torch.Tensor, tau: float, k_max: int | None = None,
                     upper: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed edges ``(i, j)`` (both directions present; with ``upper`` only ``i < j``, each
    undirected edge once) and weights from a similarity matrix, in row-major order.

    On the CPU (float32 or float64) the compiled path of :mod:`mrp_gpu.redundancy.similarity_numba`
    runs; elsewhere tensor operations (:func:`_edges_torch`). Both give the same edges in
    the same order, except where a row's ``k_max``-th strongest value is tied: the compiled
    path keeps the lower indices, torch's ``topk`` any of them.
    """
    knn = k_max is not None and k_max < s.shape[0] - 1
    if not _compiled(s):
        return _edges_torch(s, tau, k_max if knn else None, upper)
    from .similarity_numba import above_threshold, strongest_union  # imports Numba: only when used

    return strongest_union(s, tau, k_max, upper) if knn else above_threshold(s, tau, upper)


def _edges_torch(s: torch.Tensor, tau: float, k_max: int | None, upper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = s.shape[0]
    if k_max is None:
        keep = s >= tau if tau > 0 else s > 0  # edges need a positive weight
        if upper:
            keep.triu_(1)
        else:
            keep.fill_diagonal_(False)
        at = keep.nonzero()
        return at.T, s[at[:, 0], at[:, 1]]
    # each row's k_max strongest others that pass the threshold: among its k_max + 1 strongest
    # entries, the first k_max that are not its own (no n x n mask is built)
    vals, nbr = s.topk(k_max + 1, dim=1)
    rows = torch.arange(n, device=s.device)[:, None].expand_as(nbr)
    other = nbr != rows
    sel = other & (other.cumsum(1) <= k_max) & (vals >= tau) & (vals > 0)
    i, j = rows[sel], nbr[sel]
    if n * n < 2 ** 31:  # 32-bit keys sort about twice as fast (CPU: 65,536 keys 0.95 vs 2.2 ms)
        i, j = i.int(), j.int()
    key = torch.cat([i * n + j, j * n + i]).unique()  # union of both directions, row-major like nonzero()
    edges = torch.stack([key // n, key % n]).long()
    if upper:
        edges = edges[:, edges[0] < edges[1]]
    return edges, s[edges[0], edges[1]]


def group_edges(f: torch.Tensor, tau: float, k_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of one group's graph from its L2-normalised features."""
    return similarity_edges(gram(f), tau, k_max)


def build_graphs(features: GroupFeatures, *, z: float | None = None, tau: float | None = None,
                 k_max: int | None = None, chance_degree: float = 0.05, engine: str = "torch") -> BatchedGraph:
    """One batched similarity graph for all groups (see the module docstring).

    ``engine="kernel"`` runs the fused Numba CUDA kernel (:mod:`mrp_gpu.kernels`) on
    all groups in one launch; ``"torch"`` runs one matrix product per group.
    """
    taus = thresholds(features, z=z, tau=tau, chance_degree=chance_degree)
    if engine == "kernel":
        ei, w, ptr = kernels_module().similarity_edges(list(features.rows), taus, k_max)
        return BatchedGraph(features.ids, ei, w, ptr, tuple(taus))
    if engine != "torch":
        raise ValueError(f"unknown similarity engine {engine!r}; choose torch or kernel")
    device = features.rows[0].device if len(features) else torch.device("cpu")
    parts, weights, offsets = [], [], [0]
    for f, t in zip(features.rows, taus):
        ei, w = group_edges(f, t, k_max)
        parts.append(ei + offsets[-1])
        weights.append(w)
        offsets.append(offsets[-1] + f.shape[0])
    edge_index = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long, device=device)
    edge_weight = torch.cat(weights) if weights else torch.zeros(0, device=device)
    return BatchedGraph(features.ids, edge_index, edge_weight, torch.tensor(offsets, device=device), tuple(taus))
