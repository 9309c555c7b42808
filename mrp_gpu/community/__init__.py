"""Louvain community detection on a batch of graphs, behind a registry of engines.

>>> import torch
>>> from mrp_gpu.community import louvain
>>> ei = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 5], [1, 0, 2, 1, 4, 3, 5, 4]])
>>> louvain(ei, num_nodes=6, backend="igraph").tolist()
[0, 0, 0, 1, 1, 1]

Engines (``backend=``): ``numba`` (the project's sequential Louvain compiled for the
CPU: the CPU default), ``igraph`` (python-igraph's ``community_multilevel``),
``leiden`` (igraph's Leiden on the modularity objective: Louvain plus a refinement
that keeps communities connected; warm-starts from a given partition), ``torch`` (the
project's parallel batched Louvain, CPU or CUDA), ``cugraph`` (RAPIDS, GPU),
``networkx`` (slow; the test oracle). ``auto`` picks cuGraph when usable, else torch
on CUDA when a GPU is present, else numba, else igraph; the
``MRP_GPU_LOUVAIN_BACKEND`` environment variable overrides ``auto``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import engines
from .graph import UnionGraph, modularity, relabel, union_graph
from .torch_louvain import louvain_torch

__all__ = ["louvain", "louvain_graph", "modularity", "union_graph", "UnionGraph", "ENGINES",
           "resolve_backend", "available_backends", "cpu_backend", "has_numba"]


has_numba = importlib.util.find_spec("numba") is not None


def _louvain_numba(graph: UnionGraph, resolution: float = 1.0, seed: int = 0) -> torch.Tensor:
    from .numba_louvain import louvain_numba  # imports Numba (about half a second): only when used

    return louvain_numba(graph, resolution, seed)


@dataclass(frozen=True)
class Engine:
    run: Callable[..., torch.Tensor]
    available: Callable[[], bool]
    install: str
    device: str | None = None  # where the engine wants the graph; None: where it already is
    warm: bool = False  # takes ``initial=`` labels to start from


ENGINES: dict[str, Engine] = {
    "igraph": Engine(engines.louvain_igraph, lambda: engines.has_igraph, "pip install python-igraph", "cpu"),
    "leiden": Engine(engines.leiden_igraph, lambda: engines.has_igraph, "pip install python-igraph", "cpu",
                     warm=True),
    "numba": Engine(_louvain_numba, lambda: has_numba, "pip install numba", "cpu"),
    "torch": Engine(louvain_torch, lambda: True, "pip install torch"),
    "cugraph": Engine(engines.louvain_cugraph, engines.cugraph_usable,
                      "pip install cugraph-cu12 cupy-cuda12x (needs an NVIDIA GPU)"),
    "networkx": Engine(engines.louvain_networkx, lambda: engines.has_networkx, "pip install networkx", "cpu"),
}


def available_backends() -> list[str]:
    return [name for name, e in ENGINES.items() if e.available()]


def cpu_backend() -> str:
    """The fastest CPU engine installed: numba, else igraph, else torch."""
    if has_numba:
        return "numba"
    return "igraph" if engines.has_igraph else "torch"


def resolve_backend(backend: str = "auto") -> str:
    """Name the engine ``backend`` stands for; refuse one that cannot run here."""
    if backend == "auto":
        backend = os.environ.get("MRP_GPU_LOUVAIN_BACKEND", "auto")
    if backend == "auto":
        if engines.cugraph_usable():
            return "cugraph"
        if torch.cuda.is_available():
            return "torch"
        return cpu_backend()
    if backend not in ENGINES:
        raise ValueError(f"unknown Louvain backend {backend!r}; choose auto or one of {', '.join(ENGINES)}")
    if not ENGINES[backend].available():
        raise ImportError(f"Louvain backend {backend!r} is not usable here; install it with: "
                          f"{ENGINES[backend].install}")
    return backend


def louvain_graph(graph: UnionGraph, *, backend: str = "auto", resolution: float = 1.0,
                  seed: int = 0, consecutive: bool = True, initial: torch.Tensor | None = None) -> torch.Tensor:
    """Labels for a checked :class:`UnionGraph`.

    With ``consecutive`` (default) labels run 0, 1, ... by first node, unique across the
    batch; otherwise they are the engine's own (still never shared by two graphs).
    ``initial`` labels (never shared by two graphs) warm-start the engines that can
    start from a partition (``leiden``); the others ignore them.
    """
    name = resolve_backend(backend)
    engine = ENGINES[name]
    device = engine.device or ("cuda" if (backend == "auto" and name == "torch") else None)
    g = graph
    if device is not None and torch.device(device) != graph.device:
        g = UnionGraph(graph.src.to(device), graph.dst.to(device), graph.weight.to(device), graph.num_nodes,
                       graph.ptr.to(device))
    warm = {"initial": initial} if (engine.warm and initial is not None) else {}
    labels = engine.run(g, resolution=resolution, seed=seed, **warm).to(graph.device)
    return relabel(labels, graph.ptr) if consecutive else labels


def louvain(edge_index, edge_weight=None, num_nodes: int | None = None, ptr=None, *, backend: str = "auto",
            resolution: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Louvain communities of one graph or of a batch of graphs.

    Parameters
    ----------
    edge_index : LongTensor [2, E]
        Edges in both directions (PyTorch Geometric convention); duplicates of an
        undirected edge are merged, self loops are kept.
    edge_weight : Tensor [E], optional
        Non-negative weights (1 when omitted); zero-weight edges are dropped.
    num_nodes : int, optional
        Needed when the last nodes are isolated and ``ptr`` is not given.
    ptr : LongTensor [G + 1], optional
        Node offsets of each graph of a batch. Each graph gets its own partition, as
        if run alone: modularity is counted per graph (docs/method.md, section 4).
    backend : str
        ``auto``, ``igraph``, ``torch``, ``cugraph`` or ``networkx``.
    resolution : float
        Modularity resolution gamma (larger: smaller communities).
    seed : int
        Fixes the node order of igraph and networkx, and the torch engine's damping draws.

    Returns
    -------
    LongTensor [num_nodes]
        Community labels: consecutive, numbered by first node, unique across the batch.

    Notes
    -----
    Deterministic for a fixed seed on the same engine and device: igraph, networkx
    and torch on CPU. The torch engine on CUDA sums with atomics, so exact ties can
    break differently between runs; cuGraph takes no seed.

    References
    ----------
    Blondel, Guillaume, Lambiotte, Lefebvre (2008), "Fast unfolding of communities
    in large networks", J. Stat. Mech. P10008.
    """
    graph = union_graph(edge_index, edge_weight, num_nodes, ptr)
    return louvain_graph(graph, backend=backend, resolution=resolution, seed=seed)
