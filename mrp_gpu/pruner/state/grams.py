"""Each group's feature Gram matrix, with the downdates its filters' lost inputs queue.

Weight features: removing an *input* channel of a group's filters is a rank-k downdate
of its Gram matrix (``G -= C C^T``, ``C`` the dropped weight columns), never a
recomputation from the weights. Downdates wait in a queue and are applied in one
product when the group's similarity is next needed. A Gram matrix is computed on first
use, so a plan whose rule and allocation read none computes none.
"""

from __future__ import annotations

import torch

from ...linalg import gram

__all__ = ["Grams"]


class Grams:
    """Gram matrices (float32) of the rows of every group, computed lazily.

    Parameters
    ----------
    rows : callable
        ``rows(g)``: the feature rows of group ``g`` on the planner's device.
    count : int
        Number of groups.
    """

    def __init__(self, rows, count: int):
        self._rows = rows
        self._gram: list[torch.Tensor | None] = [None] * count
        self.pending: list[list[torch.Tensor]] = [[] for _ in range(count)]  # queued dropped columns

    def __getitem__(self, g: int) -> torch.Tensor:
        """Group ``g``'s Gram matrix as of its last :meth:`flush`."""
        if self._gram[g] is None:
            self._gram[g] = gram(self._rows(g)).float()
        return self._gram[g]

    def queue(self, g: int, cols: torch.Tensor) -> None:
        """Group ``g``'s filters lost the input columns ``cols`` ([N, k])."""
        self.pending[g].append(cols)

    def flush(self, g: int) -> bool:
        """Apply the queued downdates of group ``g``; whether there were any."""
        if not self.pending[g]:
            return False
        cols = self.pending[g][0] if len(self.pending[g]) == 1 else torch.cat(self.pending[g], 1)
        self[g].sub_(cols @ cols.T)
        self.pending[g] = []
        return True
