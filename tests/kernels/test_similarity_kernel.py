"""The fused similarity kernel against a float64 NumPy oracle and the torch path.

Without a GPU this runs in Numba's CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1), so shapes stay tiny: the simulator runs every thread in Python.
"""

import numpy as np
import pytest
import torch

from mrp_gpu.redundancy.features import GroupFeatures, normalize_rows
from mrp_gpu.redundancy.similarity import (
    build_graphs,
    kernels_module,
)

kernels = kernels_module().similarity
pytestmark = pytest.mark.skipif(not kernels.kernel_usable(), reason="numba-cuda not installed")

MARGIN = 1e-5  # pairs this close to the threshold may fall either way in float32


def _rows(sizes, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, d in sizes:
        base = torch.randn(2, d, generator=g)
        x = base[torch.randint(0, 2, (n,), generator=g)] + 0.8 * torch.randn(n, d, generator=g)
        out.append(normalize_rows(x).to(device))
    return out


def _oracle(rows, taus, k_max):
    """float64 NumPy: the edge set, and the pairs too close to the threshold to judge."""
    edges, unsure, off = set(), set(), 0
    for f, tau in zip(rows, taus):
        f = f.cpu().double().numpy()
        s = f @ f.T
        n = len(f)
        np.fill_diagonal(s, -np.inf)
        keep = (s >= tau) & (s > 0)
        near = np.abs(s - max(tau, 0.0)) < MARGIN
        if k_max is not None and k_max < n - 1:
            masked = np.where(keep, s, -np.inf)
            kth = -np.sort(-masked, axis=1)[:, k_max - 1:k_max]
            with np.errstate(invalid="ignore"):  # -inf against -inf (rows with fewer than k_max edges)
                near |= np.abs(s - kth) < MARGIN
            top = masked >= kth
            keep = (top & keep) | (top & keep).T
        edges |= {(i + off, j + off) for i, j in zip(*np.nonzero(keep))}
        unsure |= {(i + off, j + off) for i, j in zip(*np.nonzero(near))}
        unsure |= {(j, i) for i, j in unsure}
        off += n
    return edges, unsure


@pytest.mark.parametrize("k_max", [None, 3])
def test_kernel_edges_match_float64(k_max):
    rows = _rows([(7, 5), (18, 20), (3, 33)])  # ragged: sizes and feature lengths differ; > one tile
    taus = [0.1, 0.25, -1.0]
    ei, w, ptr = kernels.similarity_edges(rows, taus, k_max)
    got = set(map(tuple, ei.T.tolist()))
    want, unsure = _oracle(rows, taus, k_max)
    assert got - unsure == want - unsure
    assert ptr.tolist() == [0, 7, 25, 28]
    for (i, j), wij in zip(ei.T.tolist(), w.tolist()):
        g = int(torch.searchsorted(ptr, torch.tensor(i), right=True)) - 1
        f = rows[g].double()
        assert wij == pytest.approx(float(f[i - ptr[g]] @ f[j - ptr[g]]), abs=1e-5)
    assert all((b, a) in got for a, b in got)  # both directions


def test_kernel_agrees_with_the_torch_path():
    rows = _rows([(20, 12), (9, 4)], seed=3)
    feats = GroupFeatures(("a", "b"), tuple(rows))
    ref = build_graphs(feats, tau=0.2)
    ei, w, ptr = kernels.similarity_edges(rows, list(ref.tau), None)
    got, want = set(map(tuple, ei.T.tolist())), set(map(tuple, ref.edge_index.T.tolist()))
    _, unsure = _oracle(rows, list(ref.tau), None)
    assert got - unsure == want - unsure
    assert torch.equal(ptr, ref.ptr)


def test_kernel_overflows_into_a_second_pass():
    rows = [normalize_rows(torch.ones(40, 3) + 0.01 * torch.randn(40, 3, generator=torch.Generator().manual_seed(1)))]
    ei, _, _ = kernels.similarity_edges(rows, [0.0], None)  # complete graph: 40*39 > first guess of 1024
    assert ei.shape[1] == 40 * 39


def test_kernel_rejects_large_k():
    with pytest.raises(ValueError, match="at most 32"):
        kernels.similarity_edges(_rows([(4, 3)]), [0.0], 64)


@pytest.mark.gpu
def test_kernel_on_cuda_matches_torch_on_cuda():
    rows = _rows([(300, 576), (700, 1152), (64, 27)], device="cuda")
    feats = GroupFeatures(("a", "b", "c"), tuple(rows))
    for k_max in (None, 16):
        ref = build_graphs(feats, k_max=k_max, tau=0.05 if k_max is None else -1.0)
        ei, w, _ = kernels.similarity_edges(rows, list(ref.tau), k_max)
        got, want = set(map(tuple, ei.T.tolist())), set(map(tuple, ref.edge_index.T.tolist()))
        _, unsure = _oracle(rows, list(ref.tau), k_max)
        assert got - unsure == want - unsure
