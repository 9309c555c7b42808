"""The target, and the budget every planner spends: kept channels per group and the running cost.

Every planner removes channels one quantum at a time and stops as soon as the target is
met, so it lands as close above the target as the granularity allows: a step that would
overshoot the MACs target by more than ``LANDING`` of the unpruned MACs (a transformer's
stream loses one channel per head at once, each a share of every layer) waits while a
smaller step can still be taken. Costs are
analytic (:class:`~mrp_gpu.dependency.cost.CostModel`): no forward pass per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dependency.groups import ChannelGroups
from ..errors import TargetError
from ..plan import PruningPlan

__all__ = ["Target", "Budget", "LANDING"]

LANDING = 0.02  # how far past the MACs target a step may go (share of the unpruned MACs) while others go less


@dataclass(frozen=True)
class Target:
    """Fractions of MACs and/or parameters to remove (``0.5``: at least half)."""

    flops: float | None = None
    params: float | None = None

    def __post_init__(self):
        if self.flops is None and self.params is None:
            raise TargetError("give a target: --target-flops and/or --target-params")
        for name in ("flops", "params"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 1:
                raise TargetError(f"--target-{name} is the fraction to remove, in (0, 1); got {v}")

    def met(self, macs_reduction: float, params_reduction: float) -> bool:
        return ((self.flops is None or macs_reduction >= self.flops - 1e-12)
                and (self.params is None or params_reduction >= self.params - 1e-12))

    def describe(self) -> str:
        parts = [f"{name} -{v:.1%}" for name, v in (("MACs", self.flops), ("params", self.params)) if v is not None]
        return " and ".join(parts)


class Budget:
    """Kept channels per group, the running cost, and when to stop.

    Parameters
    ----------
    groups : ChannelGroups
    target : Target or None
        None: no target; the planner goes on until no group can shrink.
    min_channels : int or float
        A count (>= 1) or a fraction (< 1) of each group's width that it keeps.
    round_to : int
        Kept counts stay multiples of this (or the full width).
    step : int or float
        Channels per removal, at least: a count, or a fraction of the current width.
    """

    def __init__(self, groups: ChannelGroups, target: Target | None, *, min_channels: float = 1,
                 round_to: int = 1, step: float = 1):
        self.groups, self.target, self.round_to, self.step = groups, target, round_to, step
        self.sizes = groups.sizes
        # kept counts move in multiples of round_to and of a grouped convolution's groups
        self.multiple = np.array([math.lcm(round_to, g.blocks) for g in groups], dtype=np.int64)
        if min_channels < 1:
            self.mins = np.maximum(1, np.ceil(self.sizes * min_channels)).astype(np.int64)
        else:
            self.mins = np.minimum(self.sizes, int(min_channels))
        m = self.multiple  # the smallest count a group may reach must itself be a multiple
        self.mins = np.where(self.sizes > m, np.minimum(self.sizes, np.ceil(self.mins / m) * m), self.sizes)
        self.mins = self.mins.astype(np.int64)
        self.alive = [np.ones(n, dtype=bool) for n in self.sizes]
        self.counts = self.sizes.copy()
        self.macs0, self.params0 = groups.cost.macs(), groups.cost.params()
        self.macs, self.params = self.macs0, self.params0
        self.check_reachable()

    def check_reachable(self) -> None:
        if self.target is None:
            return
        macs, params = self.groups.cost.macs(self.mins), self.groups.cost.params(self.mins)
        best_m, best_p = 1 - macs / self.macs0, 1 - params / self.params0
        if not self.target.met(best_m, best_p):
            raise TargetError(
                f"target {self.target.describe()} cannot be reached: with every group at its minimum "
                f"(min_channels, round_to) at most MACs -{best_m:.1%} and params -{best_p:.1%} can be removed")

    def reductions(self) -> tuple[float, float]:
        return 1 - self.macs / self.macs0, 1 - self.params / self.params0

    def done(self) -> bool:
        return self.target is not None and self.target.met(*self.reductions())

    def overshoots(self, saved) -> np.ndarray:
        """Per step considered: whether saving ``saved`` MACs would overshoot the MACs target
        by more than ``LANDING``."""
        saved = np.asarray(saved, dtype=np.float64)
        if self.target is None or self.target.flops is None:
            return np.zeros(saved.shape, dtype=bool)
        return 1 - (self.macs - saved) / self.macs0 > self.target.flops + LANDING

    def quantum(self, g: int) -> int:
        """Channels group ``g`` loses at its next selection; 0 when it cannot shrink.

        At least ``step`` (a count, or a fraction of the current width), and with
        ``round_to`` down to the next multiple at least that far below.
        """
        return int(self.quanta()[g])

    def quanta(self) -> np.ndarray:
        """``quantum`` of every group at once."""
        n = self.counts
        if self.step >= 1:
            q = np.full_like(n, int(self.step))
        else:
            q = np.maximum(1, np.round(self.step * n)).astype(n.dtype)
        q = n - np.maximum(0, n - q) // self.multiple * self.multiple
        return np.where(n > self.mins, np.minimum(q, n - self.mins), 0)

    def choose(self, g: int, order, k: int) -> np.ndarray:
        """The first ``k`` live channels of ``order`` (most removable first), taken evenly
        across the blocks of a grouped convolution (``k / blocks`` from each)."""
        order = np.asarray(order, dtype=np.int64)
        order = order[self.alive[g][order]]
        block = self.groups[g].block
        if block is None:
            return order[:k]
        per = k // self.groups[g].blocks
        of = block[order]
        rank = np.zeros(len(order), dtype=np.int64)  # position of each channel within its block's order
        for b in np.unique(of):
            rank[of == b] = np.arange(np.count_nonzero(of == b))
        return order[rank < per]

    def remove(self, g: int, channels) -> None:
        """Remove ``channels`` (one index or several) of group ``g`` and update the costs."""
        channels = np.atleast_1d(channels)
        if not self.alive[g][channels].all() or len(set(channels.tolist())) != len(channels):
            raise ValueError(f"group {self.groups[g].id}: a channel of {channels.tolist()} was already removed")
        self.alive[g][channels] = False
        self.counts[g] -= len(channels)
        self.macs, self.params = self.groups.cost.macs(self.counts), self.groups.cost.params(self.counts)

    def to_plan(self, model: str, method: str, config: dict, trajectory=None, notes=None,
                merges=None) -> PruningPlan:
        kept = {g.id: tuple(np.flatnonzero(a).tolist()) for g, a in zip(self.groups, self.alive)
                if not a.all()}
        return PruningPlan(model=model, input_size=tuple(self.groups.input_size),
                           sizes={g.id: g.size for g in self.groups}, kept=kept, method=method,
                           config=config, macs_before=self.macs0, macs_after=self.macs,
                           params_before=self.params0, params_after=self.params,
                           trajectory=list(trajectory or []), merges=list(merges or []),
                           notes=list(notes or []) + self._held_note())

    def _held_note(self) -> list[str]:
        held = self.groups.held
        if not held:
            return []
        return [f"{len(held)} channel group(s) left whole: " + "; ".join(held[:3]) + (" ..." if len(held) > 3 else "")]
