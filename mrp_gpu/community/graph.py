"""The union graph every Louvain engine receives, and modularity computed one way for all.

A batch of graphs arrives in the PyTorch Geometric convention: ``edge_index``
(2 x E, both directions), ``edge_weight`` and ``ptr`` (node offsets of each graph).
:func:`union_graph` turns it into one canonical undirected edge list (``src <= dst``,
each edge once, self loops kept) with the graph of every node, after checking it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["UnionGraph", "union_graph", "symmetric_union", "modularity", "relabel"]


@dataclass(frozen=True, eq=False)
class UnionGraph:
    """Undirected, weighted, possibly many graphs side by side.

    Attributes
    ----------
    src, dst : LongTensor [E]
        Endpoints with ``src <= dst``; each undirected edge once; ``src == dst`` is a self loop.
    weight : DoubleTensor [E]
        Positive weights.
    num_nodes : int
    ptr : LongTensor [G + 1]
        Node offsets: graph ``g`` owns nodes ``ptr[g] .. ptr[g+1]-1``.
    """

    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    num_nodes: int
    ptr: torch.Tensor

    @property
    def num_graphs(self) -> int:
        return len(self.ptr) - 1

    @property
    def device(self) -> torch.device:
        return self.src.device

    @cached_property
    def node_graph(self) -> torch.Tensor:
        """The graph each node belongs to."""
        counts = self.ptr[1:] - self.ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs, device=self.ptr.device), counts,
                                       output_size=self.num_nodes)

    def total_weight(self) -> torch.Tensor:
        """m_g: the sum of edge weights of each graph (each edge once, self loops once)."""
        gid = self.node_graph[self.src] if len(self.src) else self.src
        return torch.zeros(self.num_graphs, dtype=torch.float64, device=self.device).index_add_(0, gid, self.weight)

    def scaled_union(self, resolution: float) -> tuple[torch.Tensor, float, int]:
        """Weights with every graph's total scaled to 1, and the union's resolution.

        Modularity gains in the union are then each graph's own gains divided by the
        number ``L`` of graphs that have edges, once the resolution is ``gamma * L``:
        every local move keeps its sign and order (docs/method.md, section 4).
        """
        m = self.total_weight()
        gid = self.node_graph[self.src] if len(self.src) else self.src
        scaled = self.weight / m[gid] if len(self.src) else self.weight
        L = int((m > 0).sum())
        return scaled, resolution * max(L, 1), L


def symmetric_union(edge_index: torch.Tensor, edge_weight: torch.Tensor, num_nodes: int,
                    ptr: torch.Tensor) -> UnionGraph:
    """A :class:`UnionGraph` from edges known to be symmetric, unique and within graphs.

    What :func:`mrp_gpu.redundancy.similarity.build_graphs` emits: each undirected edge is kept
    once (``src < dst``) with no sorting or checking. (The SRP loop keeps its edges with
    ``src < dst`` already and builds its :class:`UnionGraph` directly.)
    """
    keep = edge_index[0] < edge_index[1]
    return UnionGraph(edge_index[0][keep], edge_index[1][keep], edge_weight[keep].double(), num_nodes, ptr)


def union_graph(edge_index, edge_weight=None, num_nodes: int | None = None, ptr=None) -> UnionGraph:
    """Check and canonicalise a batched graph (see module docstring)."""
    edge_index = torch.as_tensor(edge_index)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    edge_index = edge_index.long()
    device = edge_index.device
    E = edge_index.shape[1]
    if edge_weight is None:
        edge_weight = torch.ones(E, dtype=torch.float64, device=device)
    edge_weight = torch.as_tensor(edge_weight, device=device).double()
    if edge_weight.shape != (E,):
        raise ValueError(f"edge_weight must have shape [{E}], got {tuple(edge_weight.shape)}")
    if E and not torch.isfinite(edge_weight).all():
        raise ValueError("edge_weight has NaN or Inf entries")
    if E and (edge_weight < 0).any():
        raise ValueError("edge_weight must be non-negative (modularity needs non-negative weights)")
    if num_nodes is None:
        num_nodes = int(ptr[-1]) if ptr is not None else (int(edge_index.max()) + 1 if E else 0)
    if E and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
    if ptr is None:
        ptr = torch.tensor([0, num_nodes], device=device)
    ptr = torch.as_tensor(ptr, device=device).long()
    if ptr.dim() != 1 or len(ptr) < 2 or int(ptr[0]) != 0 or int(ptr[-1]) != num_nodes or (ptr[1:] < ptr[:-1]).any():
        raise ValueError(f"ptr must rise from 0 to num_nodes={num_nodes}, got {ptr.tolist()[:8]}")
    keep = edge_weight > 0
    u, v, w = edge_index[0][keep], edge_index[1][keep], edge_weight[keep]
    lo, hi = torch.minimum(u, v), torch.maximum(u, v)
    if len(lo):
        gid = torch.bucketize(lo, ptr[1:], right=True)
        if (hi >= ptr[gid + 1]).any():
            raise ValueError("an edge joins two different graphs of the batch (check ptr)")
    key = lo * num_nodes + hi
    key, order = torch.sort(key, stable=True)
    w = w[order]
    uniq, first = _first_of_runs(key)
    return UnionGraph(uniq // max(num_nodes, 1), uniq % max(num_nodes, 1), w[first], num_nodes, ptr)


def _first_of_runs(sorted_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values of a sorted tensor and the position of each one's first occurrence."""
    if len(sorted_keys) == 0:
        return sorted_keys, sorted_keys
    start = torch.ones_like(sorted_keys, dtype=torch.bool)
    start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    first = torch.nonzero(start).flatten()
    return sorted_keys[first], first


def relabel(labels: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """Community labels made consecutive, in order of first appearance, unique across graphs."""
    labels = labels.long()
    n = len(labels)
    gid = torch.repeat_interleave(torch.arange(len(ptr) - 1, device=labels.device), ptr[1:] - ptr[:-1],
                                  output_size=n)
    if n == 0:
        return labels
    key = gid * (int(labels.max()) + 1) + labels  # labels of two graphs never merge
    uniq, inv = torch.unique(key, return_inverse=True)
    # order communities by their first node
    first = torch.full((len(uniq),), n, dtype=torch.long, device=labels.device)
    first.scatter_reduce_(0, inv, torch.arange(n, device=labels.device), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(first), device=labels.device)
    return rank[inv]


def modularity(graph: UnionGraph, labels: torch.Tensor, resolution: float = 1.0) -> torch.Tensor:
    """Newman-Girvan modularity of each graph of the batch (float64, [G]).

    ``Q = sum_c L_c / m - gamma * (d_c / 2m)^2`` with ``L_c`` the weight inside community
    ``c`` (self loops once) and ``d_c`` its total degree (self loops twice). A graph
    without edges has modularity 0.
    """
    labels = relabel(labels.to(graph.device), graph.ptr)
    n, G = graph.num_nodes, graph.num_graphs
    m = graph.total_weight()
    deg = torch.zeros(n, dtype=torch.float64, device=graph.device)
    deg.index_add_(0, graph.src, graph.weight).index_add_(0, graph.dst, graph.weight)
    inside = labels[graph.src] == labels[graph.dst]
    L = torch.zeros(n, dtype=torch.float64, device=graph.device).index_add_(
        0, labels[graph.src][inside], graph.weight[inside])
    d = torch.zeros(n, dtype=torch.float64, device=graph.device).index_add_(0, labels, deg)
    gid_of_label = torch.zeros(n, dtype=torch.long, device=graph.device)
    gid_of_label[labels] = graph.node_graph
    m_c = m[gid_of_label]
    safe = torch.where(m_c > 0, m_c, torch.ones_like(m_c))
    per_comm = torch.where(m_c > 0, L / safe - resolution * (d / (2 * safe)) ** 2, torch.zeros_like(L))
    return torch.zeros(G, dtype=torch.float64, device=graph.device).index_add_(0, gid_of_label, per_comm)
