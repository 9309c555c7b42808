"""Live similarity graphs and communities of every group, refreshed in one batched Louvain call.

Channels keep their original numbering: a removed channel becomes an isolated vertex
that no longer counts, so a removal never copies a matrix. Each group's normalised
similarity and edge list are cached and rebuilt only after its Gram matrix changed.
Thresholds ``tau_g`` are fixed from the unpruned model.
"""

from __future__ import annotations

import numpy as np
import torch

from ...community import ENGINES, louvain_graph, resolve_backend
from ...community.graph import UnionGraph
from ...redundancy.similarity import cosine, similarity_edges, thresholds
from .grams import Grams

__all__ = ["Communities"]


class Communities:
    """Graphs, community labels and ``R`` of every group.

    Parameters
    ----------
    grams : Grams
    alive : list of bool arrays
        The planner's live-channel masks (shared, not copied).
    feats : GroupFeatures
        The unpruned features: they fix the thresholds.
    config : MRPConfig
        Thresholds, ``k_max``, Louvain engine, resolution and seed.
    device : torch.device
    """

    def __init__(self, grams: Grams, alive: list[np.ndarray], feats, config, device):
        self.grams, self.alive, self.config, self.device = grams, alive, config, device
        self.tau = thresholds(feats, z=config.z, tau=config.tau, chance_degree=config.chance_degree)
        count = len(alive)
        self.sim: list[torch.Tensor | None] = [None] * count
        self.edges: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * count
        self.labels = [np.arange(len(a)) for a in alive]
        self.R = np.ones(count)
        self.warm = ENGINES[resolve_backend(config.backend)].warm  # each refresh starts from the last partition

    def invalidate(self, g: int) -> None:
        """Group ``g``'s Gram matrix changed: its similarity and edges are rebuilt when next needed."""
        self.sim[g] = self.edges[g] = None

    def similarity(self, g: int) -> torch.Tensor:
        """Cosine similarities of group ``g`` (rows and columns of removed channels are 0)."""
        if self.sim[g] is None:
            self.sim[g] = cosine(self.grams[g], self.alive[g])
        return self.sim[g]

    def refresh(self, which: list[int]) -> None:
        """Rebuild the graphs of ``which`` where needed, then their communities and ``R``."""
        if not which:
            return
        parts, weights, offsets, initial = [], [], [0], []
        for g in which:
            if self.edges[g] is None:  # each undirected edge once (i < j)
                self.edges[g] = similarity_edges(self.similarity(g), self.tau[g], self.config.k_max, upper=True)
            ei, w = self.edges[g]
            # the graph holds the live channels only, renumbered from offsets[-1] on (order kept)
            rank = torch.as_tensor(np.cumsum(self.alive[g]) - 1 + offsets[-1], device=ei.device)
            parts.append(rank.take(ei))
            weights.append(w)
            if self.warm:  # the partition so far, as a warm start (labels made unique across the batch)
                initial.append(np.unique(self.labels[g][self.alive[g]], return_inverse=True)[1] + offsets[-1])
            offsets.append(offsets[-1] + int(np.count_nonzero(self.alive[g])))
        ptr = torch.tensor(offsets, device=self.device)
        edges = torch.cat(parts, 1)
        ug = UnionGraph(edges[0], edges[1], torch.cat(weights).double(), offsets[-1], ptr)
        labels = louvain_graph(ug, backend=self.config.backend, resolution=self.config.resolution,
                               seed=self.config.seed, consecutive=False,
                               initial=torch.as_tensor(np.concatenate(initial)) if self.warm else None).cpu().numpy()
        for k, g in enumerate(which):
            live = labels[offsets[k]:offsets[k + 1]]
            self.labels[g] = np.full(len(self.alive[g]), -1, dtype=np.int64)
            self.labels[g][self.alive[g]] = live
            self.R[g] = len(live) / np.count_nonzero(np.bincount(live)) if len(live) else 1.0

    def drop(self, g: int, channels: np.ndarray) -> None:
        """``channels`` of group ``g`` are gone (``alive`` already says so): trim the caches."""
        if self.sim[g] is not None:
            idx = torch.as_tensor(channels, device=self.sim[g].device)
            self.sim[g].index_fill_(0, idx, 0).index_fill_(1, idx, 0)
        if self.edges[g] is not None and self.config.k_max is None:
            ei, w = self.edges[g]
            keep = torch.as_tensor(self.alive[g], device=ei.device).take(ei).all(0).nonzero().squeeze(1)
            self.edges[g] = (ei.index_select(1, keep), w.index_select(0, keep))  # both ends live
        else:  # a kNN graph: the neighbours of the removed channel pick new ones
            self.edges[g] = None
