"""The greedy loop of ``allocation="srp"`` and ``"loss"``: score the groups, cut the best, repeat.

Every iteration scores the groups that can still shrink (the allocation's scores),
removes the chosen group's quantum in the rule's order, updates the costs analytically,
and refreshes that group. With weight features the groups whose filters read the removed
channels change too: their Gram downdates are queued, and their graphs and losses are
recomputed every ``refresh_every`` iterations, or at once when such a group is about to
be chosen (so the chosen group's score is always current).
"""

from __future__ import annotations

import numpy as np

from ..errors import TargetError
from .allocation.loss import LossAllocation
from .allocation.srp import SRPAllocation
from .budget import Budget, Target
from .state import PlannerState

__all__ = ["greedy_plan", "ALLOCATIONS"]

ALLOCATIONS = {"srp": SRPAllocation, "loss": LossAllocation}


def _choose(state: PlannerState, allocation, budget: Budget, candidates: np.ndarray, savings: np.ndarray,
            stale: set) -> tuple[int, np.ndarray, bool]:
    """(the group to cut, the scores, whether it is a fallback step); a stale group about
    to be chosen is refreshed first."""
    while True:
        redundant, score = allocation.scores(candidates, savings)
        if len(redundant) == 0:  # scored by the cost its channels carry, the largest first
            score = savings * budget.counts
            return int(candidates[np.argmax(score[candidates])]), score, True
        g = int(redundant[np.argmax(score[redundant])])  # ties: the earlier group
        if not state.pending(g):
            return g, score, False
        state.refresh([g])
        stale.discard(g)
        allocation.changed([g])


def greedy_plan(state: PlannerState, budget: Budget, target: Target | None, config,
                progress=None) -> tuple[list[dict], list[dict], int, int]:
    """Run the loop until ``budget`` meets ``target`` (or, with ``target=None``, until no
    group can shrink: the trajectory is then the complete removal order).

    Returns the trajectory, the merges, the fallback steps and the iterations.
    """
    allocation = ALLOCATIONS[config.allocation](state, config)
    groups, communities = state.groups, state.communities is not None
    trajectory, merges, stale, fallbacks, it = [], [], set(), 0, 0
    while not budget.done():
        quanta = budget.quanta()
        candidates = np.flatnonzero(quanta > 0)
        if len(candidates) == 0:
            if target is None:
                break  # the complete order is known
            raise TargetError("no group can shrink further before the target is met")  # reachability was checked
        savings = groups.cost.savings(budget.counts)
        far = budget.overshoots(quanta[candidates] * savings[candidates])
        candidates = candidates[~far] if not far.all() else candidates  # a smaller step lands nearer
        g, score, fallback = _choose(state, allocation, budget, candidates, savings, stale)
        r_before, r_max = float(state.R[g]), float(state.R.max())
        chosen = state.pick(g, int(quanta[g]), by_norm=fallback, partners=bool(config.compensate))
        removed = [c for c, _, _ in chosen]
        merges += [m for _, _, m in chosen if m is not None]
        stale.update(state.remove(g, removed))
        budget.remove(g, removed)
        allocation.changed([g])
        it += 1
        if it % config.refresh_every == 0:  # every group whose filters lost inputs since, with g
            state.refresh(sorted(stale | {g}))
            allocation.changed(sorted(stale))
            stale.clear()
        else:
            state.refresh([g], flush=False)
            stale = {h for h in stale if state.pending(h)}
        fallbacks += int(fallback)
        for channel, size, _ in chosen:
            record = {"step": len(trajectory), "group": groups[g].id, "channel": channel,
                      "score": round(float(score[g]), 6), "fallback": bool(fallback)}
            if communities:
                record |= {"community_size": size, "R_before": round(r_before, 6),
                           "R_after": round(float(state.R[g]), 6), "R_max": round(r_max, 6)}
            trajectory.append(record | {"macs": int(budget.macs), "params": int(budget.params)})
        if progress is not None:
            progress(budget)
    return trajectory, merges, fallbacks, it
