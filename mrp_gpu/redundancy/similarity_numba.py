"""The CPU path of :func:`~mrp_gpu.redundancy.similarity.cosine` and
:func:`~mrp_gpu.redundancy.similarity.similarity_edges`,
compiled with Numba.

The tensor path's results (edges in the same order with the same weights; cosines equal
up to the rounding of ``1 / sqrt``), each in one call instead of several tensor operations:
the SRP loop refreshes a few 16- to 64-channel groups per step, where each tensor
operation's fixed cost outweighs its work, and ResNet-50's kNN edges take 27 ms
instead of 59 (``topk`` and a sort of the edge keys).

* ``_cosine``: cosine similarities from a Gram matrix, removed channels zeroed.
* ``_above``: every ``(i, j)``, ``i != j``, with ``S_ij >= tau`` and ``S_ij > 0``, in
  row-major order (one pass; no ``n x n`` mask, no ``nonzero``).
* ``_strongest`` + ``_union``: each row's ``k`` strongest admissible others, then the
  union of both directions in row-major order. A row is read in chunks of
  ``CHUNK`` entries: the ``(k + 1)``-th largest chunk maximum ``b`` is a lower bound on
  the row's ``k``-th largest entry other than its own (those ``k + 1`` maxima are
  distinct entries, at most one of them on the diagonal), so only chunks whose maximum
  reaches ``b`` are searched. On ResNet-50's 2,048-channel group that is about 17 chunks
  of 256 per row. Rows run in parallel (on one thread in a process forked from one
  that ran them in parallel: :func:`strongest_union`). Ties go to the lower column
  index (torch's ``topk`` leaves them unspecified).

The first call in a process loads the compiled code from Numba's cache. The first use on
a machine compiles it: about 4 s for the three float32 functions (2.9 of them for the
kNN search and union). :mod:`mrp_gpu.redundancy.similarity` imports this module only on a CPU.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from numba import njit, prange

__all__ = ["cosine", "above_threshold", "strongest_union"]

CHUNK = 8  # entries per chunk: one AVX2 register of float32
_pool_pid: int | None = None  # the process that launched Numba's thread pool (see strongest_union)


@njit(cache=True)
def _cosine(g, live):
    n = g.shape[0]
    inv = np.zeros(n, g.dtype)
    for i in range(n):
        if live[i] and g[i, i] > 0:
            inv[i] = 1 / np.sqrt(g[i, i])
    out = np.empty_like(g)
    for i in range(n):
        for j in range(n):
            out[i, j] = g[i, j] * inv[i] * inv[j]
    return out


@njit(cache=True)
def _above(s, tau, upper):
    n = s.shape[0]
    count = 0
    for i in range(n):
        for j in range(i + 1 if upper else 0, n):
            v = s[i, j]
            if v >= tau and v > 0 and j != i:
                count += 1
    rows = np.empty(count, np.int64)
    cols = np.empty(count, np.int64)
    w = np.empty(count, s.dtype)
    e = 0
    for i in range(n):
        for j in range(i + 1 if upper else 0, n):
            v = s[i, j]
            if v >= tau and v > 0 and j != i:
                rows[e], cols[e], w[e] = i, j, v
                e += 1
    return rows, cols, w


@njit(inline="always")
def _push(vals, idx, c, k, v, j):
    """Insert ``(v, j)`` into the descending top-``k`` buffer holding ``c`` entries; the new count."""
    if c == k:
        p = k - 1
    else:
        p = c
        c += 1
    while p > 0 and vals[p - 1] < v:
        vals[p] = vals[p - 1]
        idx[p] = idx[p - 1]
        p -= 1
    vals[p] = v
    idx[p] = j
    return c


@njit(inline="always")
def _chunk_max(row, j):
    m = row[j]
    for q in range(1, CHUNK):  # a fixed trip count: the loop unrolls
        m = max(m, row[j + q])
    return m


@njit(inline="always")
def _strongest_row(s, i, tau, k, nbr, cnt):
    """Row ``i``'s ``k`` strongest ``j != i`` with ``S_ij >= tau`` and ``S_ij > 0`` into ``nbr[i]``, ``cnt[i]``."""
    n = s.shape[0]
    full = n // CHUNK
    row = s[i]
    vals = np.empty(k + 1, s.dtype)
    idx = np.empty(k + 1, np.int32)
    bound = -np.inf
    if full > k:  # the (k + 1)-th largest full-chunk maximum
        c = 0
        for ch in range(full):
            m = _chunk_max(row, ch * CHUNK)
            if c <= k or m > vals[k]:
                c = _push(vals, idx, c, k + 1, m, ch)
        bound = vals[k]
    c = 0
    for ch in range(full + 1):
        lo = ch * CHUNK
        hi = min(lo + CHUNK, n)
        if ch < full and _chunk_max(row, lo) < bound:
            continue
        for j in range(lo, hi):
            v = row[j]
            if v >= bound and v >= tau and v > 0 and j != i and (c < k or v > vals[k - 1]):
                c = _push(vals, idx, c, k, v, j)
    cnt[i] = c
    for t in range(c):
        nbr[i, t] = idx[t]


@njit(cache=True, parallel=True)
def _strongest(s, tau, k):
    """Every row's ``k`` strongest admissible others, rows in parallel: (columns [n, k], counts [n])."""
    nbr = np.empty((s.shape[0], k), np.int32)
    cnt = np.zeros(s.shape[0], np.int32)
    for i in prange(s.shape[0]):
        _strongest_row(s, i, tau, k, nbr, cnt)
    return nbr, cnt


@njit(cache=True)
def _strongest_serial(s, tau, k):
    """:func:`_strongest` on one thread (a forked child of a process that ran it in parallel)."""
    nbr = np.empty((s.shape[0], k), np.int32)
    cnt = np.zeros(s.shape[0], np.int32)
    for i in range(s.shape[0]):
        _strongest_row(s, i, tau, k, nbr, cnt)
    return nbr, cnt


@njit(cache=True)
def _union(s, nbr, cnt, upper):
    """Row-major edges of the union of ``i -> nbr[i]`` and its reverse (``upper``: ``i < j`` only)."""
    n = s.shape[0]
    start = np.zeros(n + 1, np.int64)  # in-lists in compressed rows: who chose j, ascending
    for i in range(n):
        for t in range(cnt[i]):
            start[nbr[i, t] + 1] += 1
    for j in range(n):
        start[j + 1] += start[j]
    incoming = np.empty(start[n], np.int32)
    fill = start[:n].copy()
    for i in range(n):
        for t in range(cnt[i]):
            j = nbr[i, t]
            incoming[fill[j]] = i
            fill[j] += 1
    cap = 2 * start[n]
    rows = np.empty(cap, np.int64)
    cols = np.empty(cap, np.int64)
    w = np.empty(cap, s.dtype)
    out = np.empty(nbr.shape[1], np.int32)
    e = 0
    for i in range(n):
        c = cnt[i]
        for t in range(c):  # this row's own choices, sorted by column
            j = nbr[i, t]
            p = t
            while p > 0 and out[p - 1] > j:
                out[p] = out[p - 1]
                p -= 1
            out[p] = j
        a, b, b_end = 0, start[i], start[i + 1]
        last = -1
        while a < c or b < b_end:
            if b == b_end or (a < c and out[a] <= incoming[b]):
                j = out[a]
                a += 1
            else:
                j = incoming[b]
                b += 1
            if j == last or (upper and j < i):
                continue
            last = j
            rows[e], cols[e], w[e] = i, j, s[i, j]
            e += 1
    return rows[:e], cols[:e], w[:e]


def _edges(rows, cols, w) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([torch.from_numpy(rows), torch.from_numpy(cols)]), torch.from_numpy(w)


def cosine(gram: torch.Tensor, live: np.ndarray) -> torch.Tensor:
    """``G_ij / sqrt(G_ii G_jj)``; rows and columns of channels not ``live`` or of zero norm are 0."""
    return torch.from_numpy(_cosine(gram.detach().contiguous().numpy(), live))


def above_threshold(s: torch.Tensor, tau: float, upper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of every entry ``>= tau`` and ``> 0`` off the diagonal (see the module docstring)."""
    a = s.detach().contiguous().numpy()
    return _edges(*_above(a, a.dtype.type(tau), upper))


def strongest_union(s: torch.Tensor, tau: float, k: int, upper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of the union of each row's ``k`` strongest admissible others (see the module docstring).

    Rows run in parallel, except in a process forked from one that already did: Numba's
    GNU OpenMP layer kills such a child at its first parallel launch, so it runs them on
    one thread.
    """
    global _pool_pid
    a = s.detach().contiguous().numpy()
    if _pool_pid in (None, os.getpid()):
        _pool_pid = os.getpid()
        strongest = _strongest
    else:
        strongest = _strongest_serial
    nbr, cnt = strongest(a, a.dtype.type(tau), k)  # compared in the matrix's precision, as torch does
    return _edges(*_union(a, nbr, cnt, upper))
