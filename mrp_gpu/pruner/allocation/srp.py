"""``allocation="srp"``: the paper's loop, always the group with the highest redundancy ``R``.

With ``cost_aware``, ``R_g`` is weighed by the MACs one of the group's channels saves
(normalised over the candidates), so a cheap layer's redundancy counts for less. A group
of singletons (``R_g = 1``) is no candidate; when no group that can shrink has a
community of two, the loop falls back to the group with the largest MACs share.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SRPAllocation"]


class SRPAllocation:
    """Group scores of the SRP loop (see :func:`mrp_gpu.pruner.greedy.greedy_plan`)."""

    name = "srp"

    def __init__(self, state, config):
        self.state, self.cost_aware = state, config.cost_aware

    def scores(self, candidates: np.ndarray, savings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the candidates that may be chosen, every group's score); the highest score goes."""
        redundant = candidates[self.state.R[candidates] > 1.0]
        score = self.state.R.copy()
        if self.cost_aware and len(redundant):
            score = score * savings / max(savings[redundant].max(), 1e-12)
        return redundant, score

    def changed(self, groups) -> None:
        """``groups`` changed since they were scored (their ``R`` is refreshed by the loop)."""
