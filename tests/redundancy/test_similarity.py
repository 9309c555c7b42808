import math

import pytest
import torch
from conftest import edge_oracle

from mrp_gpu.redundancy.features import GroupFeatures, normalize_rows
from mrp_gpu.redundancy.similarity import build_graphs, chance_z, effective_dim, thresholds


def _features(seed=0, sizes=((12, 20), (30, 9), (5, 40))):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n, d in sizes:
        base = torch.randn(3, d, generator=g)
        x = base[torch.randint(0, 3, (n,), generator=g)] + 0.7 * torch.randn(n, d, generator=g)
        rows.append(normalize_rows(x.double()))
    return GroupFeatures(tuple(f"g{i}" for i in range(len(rows))), tuple(rows))


@pytest.mark.parametrize("tau,k_max", [(0.3, None), (0.5, 3), (-1.0, 4)])
def test_edges_match_a_float64edge_oracle(tau, k_max):
    feats = _features()
    graph = build_graphs(feats, tau=tau, k_max=k_max)
    ptr = graph.ptr.tolist()
    for g, f in enumerate(feats.rows):
        lo, hi = ptr[g], ptr[g + 1]
        sel = (graph.edge_index[0] >= lo) & (graph.edge_index[0] < hi)
        got = {(i - lo, j - lo) for i, j in graph.edge_index[:, sel].T.tolist()}
        assert got == edge_oracle(f.numpy(), tau, k_max)
        w = graph.edge_weight[sel]
        i, j = graph.edge_index[:, sel] - lo
        assert torch.allclose(w.double(), (f[i] * f[j]).sum(1))
    # PyG convention: both directions present, no self loops
    pairs = set(map(tuple, graph.edge_index.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    assert graph.num_nodes == sum(f.shape[0] for f in feats.rows)


def test_isolated_channels_stay_vertices():
    f = normalize_rows(torch.eye(4, dtype=torch.float64))  # orthogonal: no edge at all
    graph = build_graphs(GroupFeatures(("a",), (f,)), tau=0.1)
    assert graph.num_edges == 0 and graph.num_nodes == 4


def test_default_threshold_is_chance_corrected():
    # isotropic random rows: the participation ratio is close to d
    f = normalize_rows(torch.randn(2000, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert effective_dim(f) == pytest.approx(64, rel=0.1)
    # one coordinate carrying most energy shrinks it
    skew = f.clone()
    skew[:, 0] *= 10
    assert effective_dim(normalize_rows(skew)) < 10
    # wider groups need a larger z for the same chance degree
    assert chance_z(16, 0.05) < chance_z(64, 0.05) < chance_z(2048, 0.05)
    assert chance_z(64, 0.05) == pytest.approx(3.16, abs=0.02)
    feats = GroupFeatures(("a",), (f,))
    assert thresholds(feats, z=3.0) == [pytest.approx(3.0 / math.sqrt(effective_dim(f)))]
    assert thresholds(feats, tau=0.25) == [0.25]


def test_random_directions_give_few_chance_edges():
    g = torch.Generator().manual_seed(1)
    rows = tuple(normalize_rows(torch.randn(n, 144, generator=g)) for n in (16, 64, 256, 1024))
    graph = build_graphs(GroupFeatures(tuple("abcd"), rows))
    per_node = graph.edges_per_graph().double() * 2 / torch.tensor([16, 64, 256, 1024])
    assert (per_node < 0.2).all(), per_node  # about chance_degree = 0.05 expected


def test_kernels_load_from_a_source_checkout(monkeypatch):
    """On the GPU machine the code runs from the source tree, where kernels/ is not under mrp_gpu/."""
    import sys

    from mrp_gpu.redundancy.similarity import kernels_module

    monkeypatch.setitem(sys.modules, "mrp_gpu.kernels", None)  # as if setup.py had not mapped it
    module = kernels_module()
    assert module.__file__.endswith("kernels/__init__.py") and callable(module.similarity_edges)


def test_gram_from_blocks_is_symmetric_and_equals_the_product():
    from mrp_gpu.linalg import gram

    x = torch.randn(700, 90, generator=torch.Generator().manual_seed(0))  # 700: blocks of 256, 256, 188
    s = gram(x, block=256)
    assert torch.equal(s, s.T)
    assert torch.allclose(s, x @ x.T, atol=1e-4)
    assert torch.equal(gram(x[:200], block=256), x[:200] @ x[:200].T)  # one block: the plain product


@pytest.mark.parametrize("tau,k_max", [(0.3, None), (-1.0, None), (0.5, 3), (-1.0, 4)])
def test_upper_edges_are_each_undirected_edge_once(tau, k_max):
    from mrp_gpu.redundancy.similarity import similarity_edges

    f = _features(seed=3).rows[1]
    s = f @ f.T
    both, w_both = similarity_edges(s, tau, k_max)
    up, w_up = similarity_edges(s, tau, k_max, upper=True)
    first = both[0] < both[1]
    assert torch.equal(up, both[:, first]) and torch.equal(w_up, w_both[first])  # same order: row-major
    assert len(up[0]) * 2 == len(both[0])


def test_effective_dim_in_blocks_equals_the_float64_formula():
    f = normalize_rows(torch.randn(700, 50, generator=torch.Generator().manual_seed(2)))  # 3 blocks of rows
    f[:, :5] *= 4
    v = (f.double() ** 2).mean(0)
    assert effective_dim(f) == pytest.approx(float(v.sum() ** 2 / (v * v).sum()), rel=1e-12)
    assert effective_dim(f[:0]) == 1.0  # no rows: no energy
    g = f.double()
    before = g.clone()
    effective_dim(g)
    assert torch.equal(g, before)  # the caller's float64 rows are read, not squared in place
