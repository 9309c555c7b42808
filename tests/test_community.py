import numpy as np
import pytest
import torch
from graphs import batch, knn, planted

from mrp_gpu.community import ENGINES, has_numba, louvain, modularity, resolve_backend, union_graph
from mrp_gpu.community.engines import cugraph_inputs

CPU_ENGINES = ["igraph", "torch", "networkx"] + (["numba"] if has_numba else [])


def nmi(a, b):
    from scipy.stats import entropy

    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    mi = (joint[joint > 0] * np.log(joint[joint > 0] / np.outer(pa, pb)[joint > 0])).sum()
    return 2 * mi / (entropy(pa) + entropy(pb))


def is_partition(labels, n):
    return labels.shape == (n,) and labels.dtype == torch.long and sorted(set(labels.tolist())) == list(
        range(int(labels.max()) + 1))


@pytest.mark.parametrize("backend", CPU_ENGINES)
def test_planted_partition_is_recovered(backend):
    ei, n, truth = planted(8, 40, 0.35, 0.01, seed=1)
    labels = louvain(ei, num_nodes=n, backend=backend, seed=0)
    assert is_partition(labels, n)
    assert nmi(labels.numpy(), truth) >= 0.95


@pytest.mark.parametrize("graph", [dict(n=600, clusters=6, noise=1.2, seed=0), dict(n=1500, clusters=20, noise=1.5,
                                                                                        seed=1),
                                   dict(n=800, clusters=1, noise=1.0, seed=2)])
@pytest.mark.parametrize("ours", ["torch"] + (["numba"] if has_numba else []))
def test_own_engines_reach_igraph_modularity(graph, ours):
    ei, w, n = knn(**graph)
    g = union_graph(ei, w, n)
    q = {b: modularity(g, louvain(ei, w, n, backend=b)).item() for b in ("igraph", ours, "networkx")}
    assert q[ours] >= 0.99 * q["igraph"]
    assert q[ours] >= 0.99 * q["networkx"]  # the oracle


@pytest.mark.skipif(not has_numba, reason="numba is not installed")
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_numba_engine_with_self_loops_and_resolution_is_a_local_optimum(gamma):
    # a weighted graph with self loops: no single node can raise modularity by moving (checked
    # by brute force over every node and every target community), at every resolution
    ei, w, n = knn(200, clusters=5, noise=1.0, seed=4)
    loops = torch.arange(0, n, 7)
    ei = torch.cat([ei, torch.stack([loops, loops])], 1)
    w = torch.cat([w, torch.full((len(loops),), 0.5, dtype=w.dtype)])
    g = union_graph(ei, w, n)
    labels = louvain(ei, w, n, backend="numba", resolution=gamma)
    q = modularity(g, labels, gamma).item()
    assert q > 0.2
    for i in range(n):
        for c in labels.unique().tolist():
            moved = labels.clone()
            moved[i] = c
            assert modularity(g, moved, gamma).item() <= q + 1e-9, (i, c)


@pytest.mark.parametrize("backend", CPU_ENGINES)
def test_batch_with_ptr_equals_per_graph_runs(backend):
    # clear structure, so every engine's per-graph optimum is unambiguous and seed noise stays below 1e-3
    graphs = [knn(300, clusters=4, noise=0.6, seed=1), knn(120, clusters=3, noise=0.6, seed=2, k=8),
              knn(500, clusters=10, noise=0.6, seed=3)]
    ei, w, ptr = batch(graphs)
    ug = union_graph(ei, w, ptr=ptr)
    q_batch = modularity(ug, louvain(ei, w, ptr=ptr, backend=backend))
    q_alone = torch.tensor([modularity(union_graph(e, x, n), louvain(e, x, n, backend=backend)).item()
                            for e, x, n in graphs], dtype=torch.float64)
    assert torch.allclose(q_batch, q_alone, atol=1e-3), (q_batch, q_alone)


def test_labels_never_span_graphs_and_isolated_nodes_stay():
    ei, w, ptr = batch([(torch.tensor([[0, 1], [1, 0]]), None, 3), (torch.tensor([[0, 1], [1, 0]]), None, 2)])
    for backend in CPU_ENGINES:
        labels = louvain(ei, w, ptr=ptr, backend=backend).tolist()
        assert labels == [0, 0, 1, 2, 2], backend  # node 2 alone; graphs apart


@pytest.mark.parametrize("backend", ["igraph", "torch"] + (["numba"] if has_numba else []))
def test_deterministic_for_a_seed(backend):
    ei, w, n = knn(700, clusters=1, noise=1.0, seed=5)
    a = louvain(ei, w, n, backend=backend, seed=3)
    b = louvain(ei, w, n, backend=backend, seed=3)
    assert torch.equal(a, b)


def test_modularity_matches_networkx():
    import networkx as nx

    ei, n, _ = planted(4, 20, 0.5, 0.05, seed=3)
    labels = louvain(ei, num_nodes=n, backend="igraph")
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(ei.T.tolist())
    comms = [set(np.flatnonzero(labels.numpy() == c)) for c in range(int(labels.max()) + 1)]
    for gamma in (0.5, 1.0, 2.0):
        ours = modularity(union_graph(ei, None, n), labels, gamma).item()
        assert ours == pytest.approx(nx.community.modularity(G, comms, resolution=gamma), abs=1e-12)


def test_self_loops_count_once_in_modularity():
    # a single node with a self loop of weight 1 and one edge: networkx convention
    import networkx as nx

    ei = torch.tensor([[0, 0, 1], [0, 1, 0]])
    w = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    G = nx.Graph()
    G.add_edge(0, 0, weight=1.0)
    G.add_edge(0, 1, weight=2.0)
    for labels, comms in (([0, 1], [{0}, {1}]), ([0, 0], [{0, 1}])):
        ours = modularity(union_graph(ei, w, 2), torch.tensor(labels)).item()
        assert ours == pytest.approx(nx.community.modularity(G, comms, weight="weight"))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        louvain(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        louvain(torch.tensor([[0, 1], [1, 0]]), torch.tensor([-1.0, -1.0]))
    with pytest.raises(ValueError, match="different graphs"):
        louvain(torch.tensor([[0, 2], [2, 0]]), ptr=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="outside"):
        louvain(torch.tensor([[0, 5], [5, 0]]), num_nodes=3)
    with pytest.raises(ValueError, match="unknown Louvain backend"):
        resolve_backend("louvain-9000")


def test_missing_backend_says_how_to_install():
    if ENGINES["cugraph"].available():
        pytest.skip("cuGraph is usable here")
    with pytest.raises(ImportError, match="pip install cugraph"):
        resolve_backend("cugraph")


def test_auto_is_numba_on_cpu_and_env_overrides(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("auto picks a GPU engine here")
    assert resolve_backend("auto") == ("numba" if has_numba else "igraph")
    monkeypatch.setenv("MRP_GPU_LOUVAIN_BACKEND", "torch")
    assert resolve_backend("auto") == "torch"


def test_cugraph_inputs_keep_isolated_vertices_and_scale_each_graph():
    ei, w, ptr = batch([(torch.tensor([[0, 1], [1, 0]]), torch.tensor([4.0, 4.0]), 3),
                        (torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), torch.tensor([1.0, 1.0, 3.0, 3.0]), 3)])
    src, dst, weight, vertices, gamma, L = cugraph_inputs(union_graph(ei, w, ptr=ptr), resolution=1.0)
    assert vertices.tolist() == list(range(6))  # node 2 has no edge and is still listed
    assert L == 2 and gamma == 2.0
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (1, 0), (3, 4), (4, 3), (4, 5), (5, 4)]
    per_graph = [weight[src < 3].sum().item(), weight[src >= 3].sum().item()]
    assert per_graph == pytest.approx([2.0, 2.0])  # each graph's total (both directions) scaled alike


@pytest.mark.gpu
def test_torch_engine_on_cuda_matches_cpu_quality():
    ei, w, n = knn(3000, clusters=12, noise=1.5, seed=4)
    g = union_graph(ei, w, n)
    q_cpu = modularity(g, louvain(ei, w, n, backend="torch")).item()
    q_gpu = modularity(g, louvain(ei.cuda(), w.cuda(), n, backend="torch").cpu()).item()
    assert q_gpu >= 0.995 * q_cpu
