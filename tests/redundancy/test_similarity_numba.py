"""The compiled CPU edges against the tensor path and a float64 oracle."""

import os

import numpy as np
import pytest
import torch
from conftest import edge_oracle

from mrp_gpu.redundancy.features import normalize_rows
from mrp_gpu.redundancy.similarity import _edges_torch, similarity_edges


def _clustered(n, d, seed, dtype=torch.float32, duplicates=0, zeros=0):
    """Rows around a few directions; some exact copies (ties) and some zero rows (no edges)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(5, d, generator=g, dtype=torch.float64)
    x = base[torch.randint(0, 5, (n,), generator=g)] + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    x[1:1 + duplicates] = x[0]  # rows 0..duplicates are one channel repeated: tied similarities
    x[n - zeros:] = 0
    return normalize_rows(x).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [9, 40, 301])  # 301: 37 full chunks of 8 and a tail of 5
@pytest.mark.parametrize("tau", [0.2, 0.0, -1.0])
def test_compiled_threshold_edges_equal_the_tensor_path(n, dtype, tau):
    f = _clustered(n, 24, seed=n, dtype=dtype, duplicates=4, zeros=3)
    s = f @ f.T
    for upper in (False, True):
        got, w = similarity_edges(s, tau, None, upper=upper)
        want, w_want = _edges_torch(s, tau, None, upper)
        assert got.dtype == torch.long and w.dtype == dtype
        assert torch.equal(got, want) and torch.equal(w, w_want)


@pytest.mark.parametrize("n", [40, 301, 1000])
@pytest.mark.parametrize("tau,k_max", [(0.3, 5), (-1.0, 16), (0.6, 16), (-1.0, 1), (0.2, 60)])
def test_compiled_knn_edges_match_the_oracle_ties_included(n, tau, k_max):
    f = _clustered(n, 24, seed=n + 1, dtype=torch.float64, duplicates=20, zeros=3)
    s = f @ f.T
    got, w = similarity_edges(s, tau, k_max)
    assert set(map(tuple, got.T.tolist())) == edge_oracle(f.numpy(), tau, k_max)  # ties: the lower index wins
    order = got[0] * n + got[1]
    assert (order[1:] > order[:-1]).all()  # row-major, each edge once per direction
    assert torch.equal(w, s[got[0], got[1]])
    up, w_up = similarity_edges(s, tau, k_max, upper=True)
    first = got[0] < got[1]
    assert torch.equal(up, got[:, first]) and torch.equal(w_up, w[first])


def test_compiled_knn_edges_equal_topk_without_ties():
    f = _clustered(2000, 64, seed=7)  # continuous values: torch's topk and the chunked search must agree
    s = f @ f.T
    for tau in (-1.0, 0.25):
        for upper in (False, True):
            got, w = similarity_edges(s, tau, 16, upper=upper)
            want, w_want = _edges_torch(s, tau, 16, upper)
            assert torch.equal(got, want) and torch.equal(w, w_want)


def test_threshold_compared_in_the_matrix_precision():
    s = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float32)  # float32(0.3) > 0.3 as a float64
    for k_max in (None, 1):
        got, _ = similarity_edges(s, 0.3, k_max)
        want, _ = _edges_torch(s, 0.3, None, False)
        assert got.tolist() == want.tolist() == [[0, 1], [1, 0]]


def test_non_contiguous_input():
    f = _clustered(50, 12, seed=2)
    s = (f @ f.T).T[:, :]  # a transposed view: symmetric values, non-contiguous strides
    assert not s.is_contiguous()
    got, w = similarity_edges(s, 0.1, 4)
    want, w_want = similarity_edges(s.contiguous(), 0.1, 4)
    assert torch.equal(got, want) and torch.equal(w, w_want)
    assert np.isfinite(w.numpy()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_cosine_equals_the_tensor_path(dtype):
    from mrp_gpu.redundancy.similarity import _cosine_torch, cosine

    g = torch.Generator().manual_seed(4)
    x = torch.randn(37, 11, generator=g, dtype=dtype)
    x[5] = 0  # zero norm: its row and column are 0
    prod = x @ x.T
    live = np.ones(37, dtype=bool)
    live[[2, 30]] = False  # removed: zero rows and columns although their norm is not 0
    got = cosine(prod, live)
    assert torch.allclose(got, _cosine_torch(prod, live), rtol=1e-6, atol=1e-7)
    assert got.dtype == dtype and (got[[2, 5, 30]] == 0).all() and (got[:, [2, 5, 30]] == 0).all()
    on = np.flatnonzero(live & (np.arange(37) != 5))
    assert torch.allclose(got.diagonal()[on], torch.ones(len(on), dtype=dtype))


def test_other_dtypes_take_the_tensor_path():
    f = _clustered(30, 12, seed=5)
    s = (f @ f.T).to(torch.bfloat16)  # numpy has no bfloat16: the tensor operations handle it
    got, w = similarity_edges(s, 0.2, 3)
    want, w_want = _edges_torch(s, 0.2, 3, False)
    assert torch.equal(got, want) and torch.equal(w, w_want) and w.dtype == torch.bfloat16
    from mrp_gpu.redundancy.similarity import _cosine_torch, cosine

    live = np.ones(30, dtype=bool)
    assert torch.equal(cosine(s, live), _cosine_torch(s, live))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_still_gets_knn_edges():
    """Numba's GNU OpenMP layer kills a forked child at its first parallel launch when the
    parent launched the pool: the child must run the search on one thread."""
    f = _clustered(300, 24, seed=9)
    s = f @ f.T
    want, w_want = similarity_edges(s, 0.1, 6)  # the parent launches the pool
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only with the same edges
        try:
            got, w = similarity_edges(s, 0.1, 6)
            os._exit(0 if torch.equal(got, want) and torch.equal(w, w_want) else 3)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
