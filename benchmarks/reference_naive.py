"""The straightforward MRP a researcher would write from the paper: the throughput baseline.

At every SRP step it rebuilds *every* layer's features from the current (masked)
weights, recomputes every cosine matrix with NumPy, builds every graph in networkx
and re-partitions it with ``networkx.community.louvain_communities``, then removes
the most replaceable channel (smallest BN-scaled L1 norm) of the largest community
of the most redundant layer. Same channel groups, thresholds, cost model and plan
semantics as mrp_gpu (with ``refresh_every=1`` and the paper's ranking by ``R`` alone,
``cost_aware=False``), so the two pick the same layers;
only the work per step differs. Used only as a baseline.
"""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import torch

from mrp_gpu.dependency.groups import ChannelGroups
from mrp_gpu.executor import apply_masks
from mrp_gpu.plan import PruningPlan
from mrp_gpu.pruner import Budget, Target
from mrp_gpu.redundancy.features import bn_scale, weight_features, weight_matrix
from mrp_gpu.redundancy.similarity import thresholds


def _partition(f: np.ndarray, alive: np.ndarray, tau: float, seed: int) -> dict[int, int]:
    """Louvain communities of the live channels (channel -> community)."""
    x = f[alive]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = x @ x.T
    idx = np.flatnonzero(alive)
    g = nx.Graph()
    g.add_nodes_from(idx.tolist())
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            if s[a, b] >= tau and s[a, b] > 0:
                g.add_edge(int(idx[a]), int(idx[b]), weight=float(s[a, b]))
    out = {}
    for c, members in enumerate(nx.community.louvain_communities(g, weight="weight", seed=seed)):
        for m in members:
            out[m] = c
    return out


def naive_plan(model, groups: ChannelGroups, target_flops: float, *, seed: int = 0, max_steps: int | None = None,
               model_name: str = "model") -> tuple[PruningPlan, list[float]]:
    """SRP recomputing everything every step; returns the plan and each step's seconds."""
    taus = thresholds(weight_features(model, groups))
    budget = Budget(groups, Target(flops=target_flops))
    trajectory, step_times = [], []
    while not budget.done() and (max_steps is None or len(trajectory) < max_steps):
        t0 = time.perf_counter()
        kept = {g.id: tuple(np.flatnonzero(a).tolist()) for g, a in zip(groups, budget.alive) if not a.all()}
        current = apply_masks(model, PruningPlan(model_name, groups.input_size, {g.id: g.size for g in groups},
                                                 kept, "naive"), groups)
        best = None
        for gi, g in enumerate(groups):  # every layer, every step
            if budget.quantum(gi) == 0:
                continue
            f = weight_matrix(current, g).double().numpy()
            part = _partition(f, budget.alive[gi], taus[gi], seed)
            r = budget.counts[gi] / len(set(part.values()))
            if best is None or r > best[0]:
                best = (r, gi, part)
        r, gi, part = best
        g = groups[gi]
        communities: dict[int, list[int]] = {}
        for c, k in part.items():
            communities.setdefault(k, []).append(c)
        scale = bn_scale(model, g)
        norms = weight_matrix(current, g).abs().sum(1) * (scale if scale is not None else 1.0)
        largest = max(communities.values(), key=lambda m: (len(m), -min(m)))  # ties: the one with the lowest channel
        if len(largest) > 1:
            channel = min(largest, key=lambda c: (float(norms[c]), c))
        else:
            channel = min(part, key=lambda c: (float(norms[c]), c))
        budget.remove(gi, channel)
        trajectory.append({"step": len(trajectory), "group": g.id, "channel": int(channel), "R_before": float(r),
                           "macs": int(budget.macs), "params": int(budget.params)})
        step_times.append(time.perf_counter() - t0)
    return budget.to_plan(model_name, "mrp-naive", {"seed": seed}, trajectory), step_times


if __name__ == "__main__":
    import sys

    from mrp_gpu.dependency.groups import build_groups
    from mrp_gpu.models import create_model, default_input_size

    name = sys.argv[1] if len(sys.argv) > 1 else "demo"
    torch.set_num_threads(2)
    model = create_model(name)
    groups = build_groups(model, default_input_size(name))
    p, times = naive_plan(model, groups, 0.5, max_steps=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(f"{name}: {len(times)} steps, {np.median(times) * 1e3:.1f} ms per step (median), "
          f"MACs -{p.macs_reduction:.1%}")
