"""The Louvain engines other than the project's own: igraph, networkx, cuGraph.

Each takes a :class:`~mrp_gpu.community.graph.UnionGraph` and returns one label per
node. igraph and cuGraph run the whole batch as one union graph (weights scaled per
graph, resolution times the number of graphs); networkx, the test oracle, runs each
graph alone.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .graph import UnionGraph

__all__ = ["louvain_igraph", "leiden_igraph", "louvain_networkx", "louvain_cugraph", "cugraph_inputs",
           "has_igraph", "has_networkx", "has_cugraph", "cugraph_usable"]

try:
    import igraph

    has_igraph = True
except ImportError:
    has_igraph = False

try:
    import networkx

    has_networkx = True
except ImportError:
    has_networkx = False

try:
    import pylibcugraph

    has_cugraph = True
except ImportError:
    has_cugraph = False


def cugraph_usable() -> bool:
    """cuGraph imports on machines without a GPU and fails at the first call: ask CuPy."""
    if not has_cugraph:
        return False
    try:
        import cupy

        return bool(cupy.is_available())
    except ImportError:
        return False


def _igraph_union(graph: UnionGraph, resolution: float):
    """The union as an igraph Graph, its scaled weights (a list) and the union's resolution."""
    weight, gamma, _ = graph.scaled_union(resolution)
    edges = torch.stack([graph.src, graph.dst], 1).cpu().numpy()
    g = igraph.Graph(n=graph.num_nodes, directed=False)
    g.add_edges(edges)  # from the array in one call: a third of the constructor's time with edges=
    return g, weight.cpu().numpy().tolist(), gamma


def _seeded(seed: int, run):
    """``run()`` with Python's random module (igraph's source of randomness) seeded, then restored."""
    state = random.getstate()
    random.seed(seed)
    try:
        return run()
    finally:
        random.setstate(state)


def louvain_igraph(graph: UnionGraph, resolution: float = 1.0, seed: int = 0) -> torch.Tensor:
    """python-igraph's ``community_multilevel`` (C core) on the union graph."""
    g, weight, gamma = _igraph_union(graph, resolution)
    # the low-level call returns the membership list without building a VertexClustering
    membership = _seeded(seed, lambda: igraph.GraphBase.community_multilevel(g, weight, False, gamma))
    return torch.as_tensor(np.asarray(membership, dtype=np.int64), device=graph.device)


LEIDEN_ITERATIONS = 2


def leiden_igraph(graph: UnionGraph, resolution: float = 1.0, seed: int = 0,
                  initial: torch.Tensor | None = None) -> torch.Tensor:
    """python-igraph's ``community_leiden`` with the modularity objective on the union graph.

    Leiden (Traag et al., 2019) is Louvain with a refinement step: its communities are
    always connected. ``initial`` labels start it from a known partition (the SRP loop's
    warm start: one channel fewer than at the last call); two iterations.
    """
    g, weight, gamma = _igraph_union(graph, resolution)
    start = None if initial is None else initial.cpu().numpy().tolist()
    # node weights default to the weighted degrees, and the normalised resolution makes it modularity
    membership, _quality = _seeded(seed, lambda: igraph.GraphBase.community_leiden(
        g, edge_weights=weight, resolution=gamma, normalize_resolution=True, beta=0.01,
        initial_membership=start, n_iterations=LEIDEN_ITERATIONS))
    return torch.as_tensor(np.asarray(membership, dtype=np.int64), device=graph.device)


def louvain_networkx(graph: UnionGraph, resolution: float = 1.0, seed: int = 0) -> torch.Tensor:
    """networkx's ``louvain_communities``, one graph at a time (slow; the test oracle)."""
    labels = np.arange(graph.num_nodes)
    src, dst, w = graph.src.cpu().numpy(), graph.dst.cpu().numpy(), graph.weight.cpu().numpy()
    ptr = graph.ptr.cpu().numpy()
    gid = np.searchsorted(ptr[1:], src, side="right")
    for g in range(graph.num_graphs):
        sel = gid == g
        if not sel.any():
            continue
        G = networkx.Graph()
        G.add_nodes_from(range(ptr[g], ptr[g + 1]))
        G.add_weighted_edges_from(zip(src[sel].tolist(), dst[sel].tolist(), w[sel].tolist()))
        for members in networkx.community.louvain_communities(G, weight="weight", resolution=resolution, seed=seed):
            labels[list(members)] = min(members)
    return torch.as_tensor(labels, device=graph.device)


def cugraph_inputs(graph: UnionGraph, resolution: float = 1.0):
    """The arrays cuGraph is called with: both directions, scaled weights, every vertex.

    Vertices are listed explicitly so isolated channels stay in the result.
    """
    weight, gamma, L = graph.scaled_union(resolution)
    loops = graph.src == graph.dst
    src = torch.cat([graph.src, graph.dst[~loops]])
    dst = torch.cat([graph.dst, graph.src[~loops]])
    w = torch.cat([weight, weight[~loops]])
    vertices = torch.arange(graph.num_nodes, device=graph.device, dtype=torch.int64)
    return src, dst, w, vertices, gamma, L


def louvain_cugraph(graph: UnionGraph, resolution: float = 1.0, seed: int = 0,
                    threshold: float = 1e-7) -> torch.Tensor:
    """``pylibcugraph.louvain`` on the union graph, torch CUDA tensors passed zero-copy."""
    import cupy

    src, dst, w, vertices, gamma, L = cugraph_inputs(graph, resolution)
    as_cp = cupy.from_dlpack
    handle = pylibcugraph.ResourceHandle()
    props = pylibcugraph.GraphProperties(is_symmetric=True, is_multigraph=False)
    G = pylibcugraph.SGGraph(
        handle, props,
        src_or_offset_array=as_cp(src.int().cuda()), dst_or_index_array=as_cp(dst.int().cuda()),
        vertices_array=as_cp(vertices.int().cuda()), weight_array=as_cp(w.float().cuda()),
        store_transposed=False, renumber=True, do_expensive_check=False)
    verts, parts, _ = pylibcugraph.louvain(handle, G, 500, threshold / max(L, 1), gamma, False)
    labels = torch.empty(graph.num_nodes, dtype=torch.long, device="cuda")
    labels[torch.from_dlpack(verts).long()] = torch.from_dlpack(parts).long()
    return labels.to(graph.device)
