"""Fused similarity-graph kernel: every group's edges in one launch, no dense matrix.

The groups form a ragged batch (each its own channel count ``n_g`` and feature
length ``d_g``), packed row-major into one flat float32 buffer. One thread block of
``TILE x TILE`` threads owns ``TILE`` rows of one group and sweeps that group's
columns tile by tile: both row tiles go through shared memory ``TILE`` features at
a time, each thread accumulates one dot product, and the result is tested at once:

* without ``k_max``, every ``(i, j)`` with ``S_ij >= tau_g`` and ``S_ij > 0`` is appended
  to the edge list through an atomic counter (both directions come out, since every
  ordered pair is visited; the sums are bit-identical either way);
* with ``k_max``, each row keeps its best ``k_max`` candidates in shared memory
  (insertion into a short sorted list), written out once at the end; the union
  of both directions is taken afterwards.

So global memory sees the features once per column tile and the edges, never the
``n x n`` similarities. Torch CUDA tensors go in and out without copies
(``__cuda_array_interface__``); on a machine without a GPU, ``NUMBA_ENABLE_CUDASIM=1``
(set before numba is imported) runs the same kernel in Numba's simulator on NumPy
views of CPU tensors, which is how CI tests it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:
    from numba import cuda, float32, int32

    has_numba = True
except ImportError:  # numba / numba-cuda are the "gpu" extra
    has_numba = False

__all__ = ["TILE", "KMAX", "has_numba", "kernel_usable", "similarity_edges"]

TILE = 16
KMAX = 32


def kernel_usable() -> bool:
    """True where the kernel can run: a CUDA GPU, or Numba's simulator."""
    if not has_numba:
        return False
    import os

    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda.is_available()


if has_numba:

    @cuda.jit
    def _edges_kernel(feats, feat_off, dims, row_off, n_rows, taus, tile_group, tile_row, k,
                      out_i, out_j, out_w, counter, capacity, top_v, top_j):
        g = tile_group[cuda.blockIdx.x]
        r0 = tile_row[cuda.blockIdx.x]
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        n = n_rows[g]
        d = dims[g]
        base = feat_off[g]
        tau = taus[g]
        a = cuda.shared.array((TILE, TILE), float32)
        b = cuda.shared.array((TILE, TILE), float32)
        s = cuda.shared.array((TILE, TILE), float32)
        tv = cuda.shared.array((TILE, KMAX), float32)
        ti = cuda.shared.array((TILE, KMAX), int32)
        i = r0 + ty
        if k > 0:
            for slot in range(tx, KMAX, TILE):
                tv[ty, slot] = -math.inf
                ti[ty, slot] = -1
        for c0 in range(0, n, TILE):
            j = c0 + tx
            acc = float32(0.0)
            for k0 in range(0, d, TILE):
                col = k0 + tx
                a[ty, tx] = feats[base + i * d + col] if (i < n and col < d) else float32(0.0)
                b[ty, tx] = feats[base + (c0 + ty) * d + col] if (c0 + ty < n and col < d) else float32(0.0)
                cuda.syncthreads()
                for kk in range(TILE):
                    acc += a[ty, kk] * b[tx, kk]
                cuda.syncthreads()
            keep = i < n and j < n and i != j and acc >= tau and acc > 0
            if k == 0:
                if keep:
                    pos = cuda.atomic.add(counter, 0, 1)
                    if pos < capacity:
                        out_i[pos] = row_off[g] + i
                        out_j[pos] = row_off[g] + j
                        out_w[pos] = acc
            else:
                s[ty, tx] = acc if keep else -math.inf
                cuda.syncthreads()
                if tx == 0 and i < n:
                    for jj in range(TILE):
                        v = s[ty, jj]
                        if v > tv[ty, k - 1]:  # insert into the sorted (descending) top-k list
                            p = k - 1
                            while p > 0 and tv[ty, p - 1] < v:
                                tv[ty, p] = tv[ty, p - 1]
                                ti[ty, p] = ti[ty, p - 1]
                                p -= 1
                            tv[ty, p] = v
                            ti[ty, p] = c0 + jj
                cuda.syncthreads()
        if k > 0 and i < n:
            for slot in range(tx, k, TILE):
                top_v[row_off[g] + i, slot] = tv[ty, slot]
                top_j[row_off[g] + i, slot] = ti[ty, slot] + row_off[g] if ti[ty, slot] >= 0 else -1


def _as_array(t: torch.Tensor):
    """Zero-copy view for Numba: device array on CUDA, NumPy view in the simulator."""
    return cuda.as_cuda_array(t) if t.is_cuda else t.numpy()


def similarity_edges(rows: list[torch.Tensor], taus: list[float], k_max: int | None = None):
    """Edges of every group's similarity graph from L2-normalised rows, in one launch.

    Returns ``edge_index`` [2, E] (both directions, sorted), ``edge_weight`` [E] and
    ``ptr`` [G + 1], on the rows' device, with the semantics of
    :func:`mrp_gpu.redundancy.similarity.build_graphs` (up to float ties at the threshold).
    """
    if not kernel_usable():
        raise ImportError("the similarity kernel needs numba + numba-cuda and a CUDA GPU "
                          "(or NUMBA_ENABLE_CUDASIM=1): pip install -e '.[gpu]'")
    if k_max is not None and not 1 <= k_max <= KMAX:
        raise ValueError(f"the kernel keeps at most {KMAX} neighbours per row; got k_max={k_max}")
    device = rows[0].device
    sizes = [r.shape[0] for r in rows]
    dims = [r.shape[1] for r in rows]
    ptr = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long, device=device)
    feats = torch.cat([r.float().contiguous().flatten() for r in rows])
    feat_off = torch.tensor(np.concatenate([[0], np.cumsum([n * d for n, d in zip(sizes, dims)])[:-1]]),
                            dtype=torch.int64, device=device)
    tile_group = torch.tensor([g for g, n in enumerate(sizes) for _ in range(0, n, TILE)], dtype=torch.int32,
                              device=device)
    tile_row = torch.tensor([r for n in sizes for r in range(0, n, TILE)], dtype=torch.int32, device=device)
    meta = [torch.tensor(x, dtype=dt, device=device) for x, dt in
            ((dims, torch.int64), (ptr[:-1].tolist(), torch.int64), (sizes, torch.int64),
             (taus, torch.float32))]
    total = int(ptr[-1])
    k = int(k_max or 0)
    capacity = 0 if k else max(1024, 8 * total)
    while True:
        out_i = torch.empty(capacity, dtype=torch.int64, device=device)
        out_j = torch.empty(capacity, dtype=torch.int64, device=device)
        out_w = torch.empty(capacity, dtype=torch.float32, device=device)
        counter = torch.zeros(1, dtype=torch.int64, device=device)
        top_v = torch.full((total if k else 1, max(k, 1)), -math.inf, dtype=torch.float32, device=device)
        top_j = torch.full((total if k else 1, max(k, 1)), -1, dtype=torch.int64, device=device)
        if len(tile_group):
            _edges_kernel[len(tile_group), (TILE, TILE)](
                _as_array(feats), _as_array(feat_off), *map(_as_array, meta), _as_array(tile_group),
                _as_array(tile_row), k, _as_array(out_i), _as_array(out_j), _as_array(out_w),
                _as_array(counter), capacity, _as_array(top_v), _as_array(top_j))
        if k or int(counter) <= capacity:
            break
        capacity = int(counter)  # too many edges for the first guess: run again with room for all
    if k:
        src = torch.arange(total, device=device).repeat_interleave(k)
        dst, w = top_j.flatten(), top_v.flatten()
        ok = dst >= 0
        src, dst, w = src[ok], dst[ok], w[ok]
        src, dst, w = torch.cat([src, dst]), torch.cat([dst, src]), torch.cat([w, w])
    else:
        m = int(counter)
        src, dst, w = out_i[:m], out_j[:m], out_w[:m]
    key, order = torch.sort(src * max(total, 1) + dst, stable=True)
    keep = torch.ones_like(key, dtype=torch.bool)
    keep[1:] = key[1:] != key[:-1]
    order = order[keep]
    return torch.stack([src[order], dst[order]]), w[order], ptr
