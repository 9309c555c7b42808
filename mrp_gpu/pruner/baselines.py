"""The classic planners: a global ranking of normalised static scores, or one ratio for every group,
and the plan that removes a given prefix of each group's removal order."""

from __future__ import annotations

from collections import deque

import numpy as np

from ..dependency.groups import ChannelGroups
from ..plan import PruningPlan
from .allocation.uniform import allocate
from .budget import Budget, Target

__all__ = ["plan_global", "plan_uniform", "plan_from_orders"]


def plan_global(groups: ChannelGroups, scores: list[np.ndarray], target: Target, *, model: str,
                method: str, min_channels: float = 1, config: dict | None = None) -> PruningPlan:
    """Remove the channel with the lowest normalised score, model-wide, until the target is met."""
    budget = Budget(groups, target, min_channels=min_channels)
    flat = np.concatenate(scores)
    owner = np.repeat(np.arange(len(groups)), budget.sizes)
    local = np.concatenate([np.arange(n) for n in budget.sizes])
    orders = [np.argsort(s, kind="stable") for s in scores]
    trajectory, ranking, waiting, patient = [], deque(np.lexsort((owner, flat)).tolist()), [], True
    while not budget.done():  # ranking ties: earlier group first, deterministic
        if not ranking:
            if not waiting:
                break
            ranking, waiting, patient = deque(waiting), [], False  # only steps that overshoot are left
        k = ranking.popleft()
        g, c = owner[k], int(local[k])
        if not budget.alive[g][c] or not budget.quantum(g):
            continue
        # a grouped convolution's blocks lose one channel each at once: the lowest of each
        step = budget.choose(g, orders[g], groups[g].blocks) if groups[g].blocks > 1 else [c]
        if patient and budget.overshoots(len(step) * groups.cost.savings(budget.counts)[g]):
            waiting.append(k)  # it waits while a smaller step can land nearer the target
            continue
        for channel in step:
            budget.remove(g, int(channel))
            trajectory.append({"step": len(trajectory), "group": groups[g].id, "channel": int(channel),
                               "macs": int(budget.macs), "params": int(budget.params)})
    return budget.to_plan(model, method, config or {}, trajectory)


def plan_from_orders(groups: ChannelGroups, counts, orders: list, *, model: str, method: str,
                     config: dict | None = None) -> PruningPlan:
    """Group ``g`` keeps ``counts[g]`` channels: the first ``sizes[g] - counts[g]`` of
    ``orders[g]`` (a removal order, most removable first) go."""
    budget = Budget(groups, None)
    for g, n in enumerate(counts):
        drop = budget.choose(g, orders[g], int(budget.sizes[g] - n))
        if len(drop):
            budget.remove(g, drop)
    return budget.to_plan(model, method, config or {})


def plan_uniform(groups: ChannelGroups, scores: list[np.ndarray], target: Target, *, model: str,
                 method: str = "uniform", min_channels: float = 1, config: dict | None = None) -> PruningPlan:
    """The same fraction removed from every group (lowest scores first inside each)."""
    counts = allocate(groups, target, min_channels=min_channels)
    orders = [np.argsort(s, kind="stable") for s in scores]
    return plan_from_orders(groups, counts, orders, model=model, method=method, config=config)


