"""``allocation="uniform"``: the same fraction of every group, MRP's removal order inside each.

The counts come first (:func:`allocate`); then each group goes, alone, through the SRP
step (remove the rule's channel, recompute the group's communities) until it is down to
its count. Each group is ordered as if alone: its removals do not change the filters of
the groups that read it, so one state serves every group.
"""

from __future__ import annotations

import numpy as np

from ...dependency.groups import ChannelGroups
from ...errors import TargetError
from ..budget import Budget, Target
from ..state import PlannerState

__all__ = ["allocate", "group_steps", "plan_uniform_mrp"]


def allocate(groups: ChannelGroups, target: Target, *, min_channels: float = 1, round_to: int = 1) -> np.ndarray:
    """Kept channel counts: every group loses the fraction ``alpha`` of its width (capped at
    its minimum), with the smallest ``alpha`` that meets the target.

    With ``round_to`` every count is a multiple of it (rounded up), or the full width. The
    overshoot of whole channels is then given back, one channel at a time to the group
    cut hardest, while the target still holds.
    """
    budget = Budget(groups, target, min_channels=min_channels, round_to=round_to)
    m, sizes = budget.multiple, budget.sizes

    def reductions(c: np.ndarray) -> tuple[float, float]:
        return 1 - groups.cost.macs(c) / budget.macs0, 1 - groups.cost.params(c) / budget.params0

    def counts_at(alpha: float) -> np.ndarray:
        c = np.maximum(budget.mins, sizes - np.floor(sizes * min(alpha, 1.0)).astype(np.int64))
        c = np.where(sizes > m, np.minimum(sizes, np.ceil(c / m) * m), c)
        return np.maximum(budget.mins, c).astype(np.int64)

    lo, hi = 0.0, 1.0  # at hi every group sits at its minimum, which Budget checked is enough
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if target.met(*reductions(counts_at(mid))) else (mid, hi)
    counts = counts_at(hi)
    # Whole channels overshoot the target (16-channel groups move in steps of 6 %): give
    # channels back, most-cut group first, while the target still holds.
    unit = np.where(sizes > m, m, 1)
    while True:
        for g in np.argsort(-(1 - counts / sizes), kind="stable"):
            if counts[g] + unit[g] > sizes[g]:
                continue
            trial = counts.copy()
            trial[g] += unit[g]
            if target.met(*reductions(trial)):
                counts = trial
                break
        else:
            return counts


def group_steps(state: PlannerState, g: int, limit: int | None = None, step: float = 1,
                partners: bool = False) -> list[dict]:
    """Group ``g`` alone through the SRP step, ``limit`` removals or until one channel is left.

    ``step`` channels go between two community updates (a count, or a fraction of the
    live width). One record per removal: the channel, its merge (None when it was alone
    in its community or without ``partners``), its community's size, and ``R`` of the
    group before and after its quantum.
    """
    state.refresh([g])
    steps = []
    while (live := int(state.alive[g].sum())) > 1 and (limit is None or len(steps) < limit):
        k = int(step) if step >= 1 else max(1, round(step * live))
        k = min(k, live - 1, (limit - len(steps)) if limit is not None else live)
        r_before = float(state.R[g])
        picked = state.pick(g, k, partners=partners)
        state.remove(g, [c for c, _, _ in picked], propagate=False)
        state.refresh([g], flush=False)
        steps += [{"channel": c, "merge": merge, "community_size": size, "R_before": r_before,
                   "R_after": float(state.R[g])} for c, size, merge in picked]
    return steps


def _balanced_steps(state: PlannerState, budget: Budget, g: int, config, k: int) -> list[dict]:
    """The first ``k`` removals of group ``g`` in its SRP order; for a group feeding a grouped
    convolution, the first ``k / blocks`` of each block in that order (the order runs on
    until every block has its share)."""
    partners = bool(config.compensate)
    steps = group_steps(state, g, limit=k, step=config.step, partners=partners)
    block = state.groups[g].block
    if block is None or k == 0:
        return steps
    per = k // state.groups[g].blocks
    while True:
        short = per - np.bincount(block[[t["channel"] for t in steps]], minlength=state.groups[g].blocks)
        if short.max() <= 0 or state.alive[g].sum() <= 1:
            break
        steps += group_steps(state, g, limit=int(short.clip(0).sum()), step=config.step, partners=partners)
    keep = set(budget.choose(g, [t["channel"] for t in steps], k).tolist())
    return [t for t in steps if t["channel"] in keep]


def plan_uniform_mrp(state: PlannerState, target: Target | None,
                     config) -> tuple[Budget, list[dict], list[dict], np.ndarray]:
    """Counts by :func:`allocate`, channels in each group's own SRP order.

    Returns the budget after the removals, the trajectory, the merges and every group's
    ``R`` after its removals. ``R_max`` of a step is the largest ``R`` over the groups,
    each as of its last step so far.
    """
    if target is None:
        raise TargetError("allocation='uniform' needs a target; only 'srp' runs to exhaustion")
    groups = state.groups
    counts = allocate(groups, target, min_channels=config.min_channels, round_to=config.round_to)
    budget = Budget(groups, None)
    trajectory, merges = [], []
    communities = state.communities is not None
    R = state.R.copy()
    for g, n in enumerate(counts):
        for t in _balanced_steps(state, budget, g, config, int(groups.sizes[g] - n)):
            budget.remove(g, t["channel"])
            if t["merge"] is not None:
                merges.append(t["merge"])
            record = {"step": len(trajectory), "group": groups[g].id, "channel": t["channel"]}
            if communities:
                record |= {"community_size": t["community_size"], "R_before": round(t["R_before"], 6),
                           "R_after": round(t["R_after"], 6), "fallback": t["community_size"] == 1,
                           "R_max": round(float(R.max()), 6)}
                R[g] = t["R_after"]
            trajectory.append(record | {"macs": int(budget.macs), "params": int(budget.params)})
    return budget, trajectory, merges, R

