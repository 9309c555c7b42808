"""``allocation="loss"``: always the group whose next channel costs its consumers least per MAC it saves.

"Most redundant" read as "cheapest to rebuild": every group that can shrink is a
candidate, scored by the MACs its next removal saves over the loss the rule gives that
removal (an ``error`` or ``rebuild`` rule, ``mrp_gpu.pruner.state.losses``). A group's
next loss is computed once and kept until the group changes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LossAllocation"]


class LossAllocation:
    """Group scores of the loss allocation (see :func:`mrp_gpu.pruner.greedy.greedy_plan`)."""

    name = "loss"

    def __init__(self, state, config):
        self.state = state
        self.next_loss = np.full(len(state.groups), np.nan)  # what each group's next removal costs

    def scores(self, candidates: np.ndarray, savings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the candidates that may be chosen, every group's score); the highest score goes."""
        for h in candidates[np.isnan(self.next_loss[candidates])].tolist():
            self.next_loss[h] = self.state.loss(h)[self.state.pick(h, 1)[0][0]]
        return candidates, savings / np.maximum(self.next_loss, 1e-12)

    def changed(self, groups) -> None:
        """``groups`` changed since they were scored: their next loss is recomputed when needed."""
        self.next_loss[list(groups)] = np.nan
