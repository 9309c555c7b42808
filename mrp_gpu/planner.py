"""Planners: from channel groups and a compression target to a :class:`PruningPlan`.

``plan_mrp`` is Structural Redundancy Pruning (docs/method.md, section 7): recompute
redundancy, remove the most replaceable channel of the most redundant group, repeat
until the target is met. ``plan_global`` and ``plan_uniform`` are the classic
baselines: a global ranking of normalised static scores, or one ratio for every group.

Every planner removes channels one quantum at a time and stops as soon as the
target is met, so it lands as close above the target as the granularity allows.
Costs are analytic (:class:`~mrp_gpu.cost.CostModel`): no forward pass per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .community import ENGINES, louvain_graph, resolve_backend
from .community.graph import UnionGraph
from .errors import ModelError, MRPError, TargetError, stage
from .groups import ChannelGroups
from .plan import PruningPlan
from .redundancy import (
    ERROR_RULES,
    LOSS_RULES,
    NEEDS_SIMILARITY,
    REBUILD_RULES,
    Precision,
    Rebuild,
    largest_community,
    most_replaceable,
)
from .similarity import cosine, gram, similarity_edges, thresholds
from .timing import Stopwatch

# ``rebuild`` rules: consumers with more inputs are not counted (a [n, n] float64 covariance each;
# 8192 inputs take 512 MB), e.g. a classifier reading a flattened 7x7 map of 512 channels
REBUILD_INPUTS = 8192

__all__ = ["Target", "Budget", "allocate", "plan_from_orders", "plan_global", "plan_uniform", "plan_mrp",
           "removal_order"]


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


def plan_global(groups: ChannelGroups, scores: list[np.ndarray], target: Target, *, model: str,
                method: str, min_channels: float = 1, config: dict | None = None) -> PruningPlan:
    """Remove the channel with the lowest normalised score, model-wide, until the target is met."""
    budget = Budget(groups, target, min_channels=min_channels)
    flat = np.concatenate(scores)
    owner = np.repeat(np.arange(len(groups)), budget.sizes)
    local = np.concatenate([np.arange(n) for n in budget.sizes])
    orders = [np.argsort(s, kind="stable") for s in scores]
    trajectory = []
    for k in np.lexsort((owner, flat)):  # ties: earlier group first, deterministic
        if budget.done():
            break
        g, c = owner[k], int(local[k])
        if not budget.alive[g][c] or not budget.quantum(g):
            continue
        # a grouped convolution's blocks lose one channel each at once: the lowest of each
        for channel in (budget.choose(g, orders[g], groups[g].blocks) if groups[g].blocks > 1 else [c]):
            budget.remove(g, int(channel))
            trajectory.append({"step": len(trajectory), "group": groups[g].id, "channel": int(channel),
                               "macs": int(budget.macs), "params": int(budget.params)})
    return budget.to_plan(model, method, config or {}, trajectory)


def allocate(groups: ChannelGroups, target: Target, weights: np.ndarray | None = None, *,
             min_channels: float = 1, floor: np.ndarray | None = None, round_to: int = 1) -> np.ndarray:
    """Kept channel counts: every group loses the fraction ``alpha * weights[g]`` of its
    width (capped at its minimum), with the smallest ``alpha`` that meets the target.

    ``weights=None`` is the uniform allocation (the same fraction everywhere); a
    group with weight 0 is left whole. ``floor``: counts no group goes below. With
    ``round_to`` every count is a multiple of it (rounded up), or the full width. The
    overshoot of whole channels is then given back, one channel at a time to the
    group cut hardest (relative to its weight), while the target still holds.
    """
    budget = Budget(groups, target, min_channels=min_channels, round_to=round_to)
    if floor is not None:
        budget.mins = np.maximum(budget.mins, floor)
        budget.check_reachable()
    w = np.ones(len(groups)) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (w >= 0).all() or not w.max() > 0:
        raise ValueError("allocation weights must be >= 0 with at least one > 0")
    w = w / w.max()

    m = budget.multiple

    def counts_at(alpha: float) -> np.ndarray:
        frac = np.minimum(alpha * w, 1.0)
        c = np.maximum(budget.mins, budget.sizes - np.floor(budget.sizes * frac).astype(np.int64))
        c = np.where(budget.sizes > m, np.minimum(budget.sizes, np.ceil(c / m) * m), c)
        return np.maximum(budget.mins, c).astype(np.int64)

    def met(alpha: float) -> bool:
        c = counts_at(alpha)
        return target.met(1 - groups.cost.macs(c) / budget.macs0, 1 - groups.cost.params(c) / budget.params0)

    lo, hi = 0.0, 1.0 / max(w[w > 0].min(), 1e-12)  # at hi every weighted group sits at its minimum
    if not met(hi):
        raise TargetError(f"target {target.describe()} cannot be reached while the groups with weight 0 "
                          "are left whole")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if met(mid) else (mid, hi)
    counts = counts_at(hi)
    # Whole channels overshoot the target (16-channel groups move in steps of 6 %): give
    # channels back, most-cut group first, while the target still holds.
    unit = np.where(budget.sizes > m, m, 1)
    cut = w > 0
    while True:
        for g in np.argsort(-(1 - counts / budget.sizes) / np.maximum(w, 1e-12), kind="stable"):
            if not cut[g] or counts[g] + unit[g] > budget.sizes[g]:
                continue
            trial = counts.copy()
            trial[g] += unit[g]
            if target.met(1 - groups.cost.macs(trial) / budget.macs0, 1 - groups.cost.params(trial) / budget.params0):
                counts = trial
                break
        else:
            return counts


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


# ----------------------------------------------------------------------------- SRP
class _Redundancy:
    """Live similarity state of every group for the SRP loop.

    Channels keep their original numbering: a removed channel becomes an isolated
    vertex that no longer counts (``alive`` masks it), so removal never copies a
    matrix. Weight features live as an unnormalised Gram matrix per group (float32);
    removing
    an *input* channel of a group's filters is a rank-k downdate (``G -= C C^T``, ``C``
    the dropped weight columns), never a recomputation from the weights. Downdates
    are queued and applied in one product when the group's similarity is next needed;
    the normalised similarity and the edge list of each group are cached and rebuilt
    only then. Thresholds ``tau_g`` are fixed from the unpruned model.
    """

    def __init__(self, model, groups: ChannelGroups, config, feats, device, calibration=None):
        from .features import bn_scale, consumer_energy, output_scale, weight_matrix

        self.groups, self.config, self.device, self.model = groups, config, device, model
        self.tau = thresholds(feats, z=config.z, tau=config.tau, chance_degree=config.chance_degree,
                              corrected_dim=config.corrected_dim)
        self.alive = [np.ones(g.size, dtype=bool) for g in groups]
        self.l1, self.scale, self.gram = [], [], []
        self.loudness = [output_scale(model, g).double().cpu().numpy() for g in groups]
        self.salience = ([self.loudness[gi] ** 2 * consumer_energy(model, g).numpy() for gi, g in enumerate(groups)]
                         if config.replace in ERROR_RULES else None)
        self.prec: list[tuple | None] = [None] * len(groups)  # error rules: (Precision, channel -> its row)
        self.rebuild: list[Rebuild | None] = [None] * len(groups)  # rebuild rules
        self.losses: list[np.ndarray | None] = [None] * len(groups)  # loss rules: until the group changes
        self.calibration, self.covs = calibration, None
        if config.replace in REBUILD_RULES and calibration is None:
            raise MRPError(f"replace={config.replace!r} needs calibration images (--data)")
        for gi, g in enumerate(groups):
            w = weight_matrix(model, g).to(device)
            s = bn_scale(model, g)
            self.l1.append(w.abs().sum(1).double().cpu().numpy())
            self.scale.append(np.ones(g.size) if s is None else s.double().cpu().numpy())
            if config.features == "weight":
                x = torch.cat([w, s.to(device)[:, None]], 1) if (config.bn_scale and s is not None) else w
            else:
                x = feats.rows[gi].to(device)
            self.gram.append(gram(x).float())
        self.pending: list[list[torch.Tensor]] = [[] for _ in groups]  # queued dropped columns
        self.sim: list[torch.Tensor | None] = [None] * len(groups)
        self.edges: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(groups)
        self.labels = [np.arange(g.size) for g in groups]
        self.R = np.ones(len(groups))
        self.warm = ENGINES[resolve_backend(config.backend)].warm  # each refresh starts from the last partition
        # producer module -> (group index, its out slice): where a dropped input column lands
        self.producer_of = {s.module: (gi, s) for gi, g in enumerate(groups) for s in g.producers}
        self.consumers: dict[str, tuple] = {}  # see _consumer

    def norms(self, g: int) -> np.ndarray:
        return self.l1[g] * self.scale[g]

    def pick(self, g: int, k: int, rule: str, by_norm: bool = False,
             partners: bool = False) -> list[tuple[int, int, dict | None]]:
        """The ``k`` channels of group ``g`` to remove next: (channel, community size, merge).

        Each comes from the largest community of the current partition (the most
        replaceable by ``rule``; ``norm-in-redundant`` looks at every community of two
        or more); when every live channel is alone, or with ``by_norm``,
        the smallest-norm channel goes. With ``partners``, each channel taken from a
        community also gets a merge: its most similar remaining community member, and the ratio
        of their output scales (clipped to [-4, 4]).
        """
        live = self.alive[g].copy()
        needs_sim = (rule in NEEDS_SIMILARITY or partners) and not by_norm
        sim = self.similarity(g) if needs_sim else None
        chosen = []
        for _ in range(k):  # one community state serves the whole quantum
            pos = np.flatnonzero(live)
            labels_of = self.labels[g]
            labels = labels_of[pos]
            merge = None
            counts = np.bincount(labels)
            if by_norm or (rule not in ("error", "rebuild") and counts.max() == 1):  # every live channel alone
                channel, size = int(pos[np.argmin(self.norms(g)[pos])]), 1
            else:
                if rule == "norm-in-redundant":  # every channel that has a community partner
                    members = pos[counts[labels] > 1]
                elif rule in ("error", "rebuild"):
                    members = pos
                else:
                    members = pos[largest_community(labels)]
                loss = self.loss(g, rule) if rule in LOSS_RULES else None
                channel = int(most_replaceable(rule, members, self.norms(g), sim, self.gram[g], loss=loss)[0])
                size = int((labels_of[members] == labels_of[channel]).sum())
                others = members[(members != channel) & (labels_of[members] == labels_of[channel])]
                if partners and len(others):  # ``error`` may take a channel that is alone in its community
                    into = int(others[int(torch.argmax(sim[channel, torch.as_tensor(others)]))])
                    ratio = self.loudness[g][channel] / self.loudness[g][into] if self.loudness[g][into] else 0.0
                    merge = {"group": self.groups[g].id, "channel": channel, "into": into,
                             "scale": float(np.clip(ratio, -4.0, 4.0))}
            chosen.append((channel, size, merge))
            live[channel] = False
        return chosen

    def flush(self, g: int) -> None:
        """Apply queued downdates to group ``g`` (its similarity and edges are then rebuilt)."""
        if self.pending[g]:
            cols = self.pending[g][0] if len(self.pending[g]) == 1 else torch.cat(self.pending[g], 1)
            self.gram[g].sub_(cols @ cols.T)
            self.pending[g] = []
            self.sim[g] = self.edges[g] = self.prec[g] = self.losses[g] = None

    def loss(self, g: int, rule: str) -> np.ndarray:
        """What the consumers of ``g`` lose, once refit, if each channel went next (``LOSS_RULES``).

        Computed once per state of the group (a removal or a refreshed Gram matrix renews it),
        so inside one quantum of several channels the loss is that of the quantum's start."""
        if self.losses[g] is None:
            if rule in ERROR_RULES:
                self.losses[g] = self.unexplained(g) * self.salience[g]
            else:
                if self.rebuild[g] is None:
                    self.rebuild[g] = self._rebuild(g)
                self.losses[g] = self.rebuild[g].loss()
        return self.losses[g]

    def _rebuild(self, g: int) -> Rebuild:
        """The :class:`Rebuild` state of group ``g``: its dense consumers on the calibration batch
        (the input covariances of every group's consumers come from one pass, at the first call)."""
        from .features import input_covariances, is_dense

        def counted(name: str) -> bool:  # a dense layer of at most REBUILD_INPUTS inputs
            m = self.model.get_submodule(name)
            return is_dense(m) and m.weight[0].numel() <= REBUILD_INPUTS

        if self.covs is None:
            names = sorted({s.module for group in self.groups for s in group.consumers if counted(s.module)})
            self.covs = input_covariances(self.model, names, self.calibration, seed=self.config.seed)
        group, consumers = self.groups[g], []
        for s in group.consumers:
            if s.module not in self.covs:
                continue
            channels, times = np.unique(s.channel, return_counts=True)
            if (times != times[0]).any():
                continue  # channels read at unequal numbers of positions: not counted
            w = self.model.get_submodule(s.module).weight.detach()
            per = int(np.prod(w.shape[2:]))  # columns per input position: the kernel's taps
            # every position a channel occupies (e.g. 49 after flattening a 7x7 map), times the taps
            pos = s.idxs[np.argsort(s.channel, kind="stable")]
            cols = (pos[:, None] * per + np.arange(per)).reshape(len(channels), -1)
            consumers.append((self.covs[s.module].to(self.device), w.flatten(1).to(self.device), channels, cols))
        rebuild = Rebuild(consumers, group.size)
        for c in np.flatnonzero(~self.alive[g]).tolist():
            rebuild.drop(c)
        return rebuild

    def unexplained(self, g: int) -> np.ndarray:
        """The share of each live channel of ``g`` its other live channels cannot rebuild (0 for removed ones).

        The precision matrix of the live channels is inverted once, then each removal
        updates its diagonal (:class:`~mrp_gpu.redundancy.Precision`): O(n k) a step.
        Inside one quantum of several channels the share is that of the quantum's start.
        """
        if self.prec[g] is None:
            live = np.flatnonzero(self.alive[g])
            at = torch.as_tensor(live, device=self.gram[g].device)
            where = np.full(self.groups[g].size, -1)
            where[live] = np.arange(len(live))
            self.prec[g] = (Precision(self.gram[g][at][:, at]), where)
        prec, where = self.prec[g]
        share = np.zeros(self.groups[g].size)
        inside = where >= 0
        share[inside] = prec.share().cpu().numpy()[where[inside]]
        return share

    def similarity(self, g: int) -> torch.Tensor:
        """Cosine similarities of group ``g`` (rows and columns of removed channels are 0)."""
        if self.sim[g] is None:
            self.sim[g] = cosine(self.gram[g], self.alive[g])
        return self.sim[g]

    def refresh(self, which: list[int], flush: bool = True) -> None:
        """Rebuild graphs where needed, then communities (one batched Louvain call) and R.

        With ``flush=False`` queued downdates wait (the group's graph only loses the
        channels removed since).
        """
        if not which:
            return
        parts, weights, offsets, initial = [], [], [0], []
        for g in which:
            if flush:
                self.flush(g)
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
            self.labels[g] = np.full(self.groups[g].size, -1, dtype=np.int64)
            self.labels[g][self.alive[g]] = live
            self.R[g] = len(live) / np.count_nonzero(np.bincount(live)) if len(live) else 1.0

    def remove(self, g: int, channels: list[int], propagate: bool = True) -> list[int]:
        """Drop ``channels`` of group ``g``; return the groups whose filters changed.

        With ``propagate=False`` the groups that read ``g`` keep their filters as they
        were (each group is then pruned as if alone, as the allocated plans do).
        """
        channels = np.asarray(channels)
        self.alive[g][channels] = False
        self.losses[g] = None
        if self.prec[g] is not None:
            prec, where = self.prec[g]
            for r in np.atleast_1d(channels).tolist():
                prec.drop(int(where[r]))
        if self.rebuild[g] is not None:
            for r in np.atleast_1d(channels).tolist():
                self.rebuild[g].drop(int(r))
        if self.sim[g] is not None:
            idx = torch.as_tensor(channels, device=self.sim[g].device)
            self.sim[g].index_fill_(0, idx, 0).index_fill_(1, idx, 0)
        if self.edges[g] is not None and self.config.k_max is None:
            ei, w = self.edges[g]
            keep = torch.as_tensor(self.alive[g], device=ei.device).take(ei).all(0).nonzero().squeeze(1)
            self.edges[g] = (ei.index_select(1, keep), w.index_select(0, keep))  # both ends live
        else:  # a kNN graph: the neighbours of the removed channel pick new ones
            self.edges[g] = None
        if self.config.features != "weight" or not propagate:
            return []
        touched = []
        dropped = np.zeros(self.groups[g].size, dtype=bool)
        dropped[channels] = True
        for s in self.groups[g].consumers:
            if s.module not in self.producer_of:
                continue  # e.g. the classifier: its outputs are nobody's feature
            h, out_slice = self.producer_of[s.module]
            cols = self._dropped_columns(s, dropped, out_slice)
            if cols is None:
                continue
            self.pending[h].append(cols)
            self.l1[h] = self.l1[h] - cols.abs().sum(1).cpu().numpy()
            touched.append(h)
        return sorted(set(touched))

    def _dropped_columns(self, s, dropped: np.ndarray, out_slice) -> torch.Tensor | None:
        """The weights of ``s.module`` that read the ``dropped`` channels (a mask over its input
        group), one row per channel of its own group."""
        pos = s.idxs[dropped[s.channel]]
        if len(pos) == 0:
            return None
        w, groups, order = self._consumer(s.module, out_slice)
        if groups == 1:  # ``w``: the rows already in group order, on the planner's device
            return w.index_select(1, torch.as_tensor(pos, device=w.device)).flatten(1)
        per_in, per_out = w.shape[1], w.shape[0] // groups  # input i feeds only the filters of its own block
        width = int(np.prod(w.shape[2:]))
        cols = torch.zeros(w.shape[0], len(pos) * width, dtype=w.dtype, device=w.device)
        for k, i in enumerate(pos.tolist()):
            b, j = divmod(i, per_in)
            rows = slice(b * per_out, (b + 1) * per_out)
            cols[rows, k * width:(k + 1) * width] = w[rows, j].flatten(1)
        return cols[order].float().to(self.device)

    def _consumer(self, name: str, out_slice) -> tuple[torch.Tensor, int, torch.Tensor]:
        """A consumer's weight (inputs on dim 1), its number of blocks, and its filters in the
        order of its own group's channels, looked up once per plan. A dense consumer's weight
        is kept with its rows already in that order (float32, on the planner's device)."""
        if name not in self.consumers:
            m = self.model.get_submodule(name)
            w = m.weight.detach()
            if isinstance(m, torch.nn.modules.conv._ConvTransposeNd):
                w = w.transpose(0, 1)
            order = torch.as_tensor(out_slice.idxs[np.argsort(out_slice.channel, kind="stable")], device=w.device)
            groups = getattr(m, "groups", 1)
            if groups == 1:
                w = w.index_select(0, order).float().to(self.device)
            self.consumers[name] = (w, groups, order)
        return self.consumers[name]


def _group_steps(state: _Redundancy, g: int, rule: str, limit: int | None = None, step: float = 1) -> list[dict]:
    """Group ``g`` alone through the SRP step, ``limit`` removals or until one channel is left.

    ``step`` channels go between two community updates (a count, or a fraction of the
    live width; ``MRPConfig.step``). One record per removal: the channel, its merge
    (None when it was alone in its community), its community's size, and ``R`` of the
    group before and after its quantum.
    """
    state.refresh([g])
    steps = []
    while (live := int(state.alive[g].sum())) > 1 and (limit is None or len(steps) < limit):
        k = int(step) if step >= 1 else max(1, round(step * live))
        k = min(k, live - 1, (limit - len(steps)) if limit is not None else live)
        r_before = float(state.R[g])
        picked = state.pick(g, k, rule, partners=True)
        state.remove(g, [c for c, _, _ in picked], propagate=False)
        state.refresh([g], flush=False)
        steps += [{"channel": c, "merge": merge, "community_size": size, "R_before": r_before,
                   "R_after": float(state.R[g])} for c, size, merge in picked]
    return steps


def _balanced_steps(state: _Redundancy, budget: Budget, g: int, config, k: int) -> list[dict]:
    """The first ``k`` removals of group ``g`` in its SRP order; for a group feeding a grouped
    convolution, the first ``k / blocks`` of each block in that order (the order runs on
    until every block has its share)."""
    steps = _group_steps(state, g, config.replace, limit=k, step=config.step)
    block = state.groups[g].block
    if block is None or k == 0:
        return steps
    per = k // state.groups[g].blocks
    while True:
        short = per - np.bincount(block[[t["channel"] for t in steps]], minlength=state.groups[g].blocks)
        if short.max() <= 0 or state.alive[g].sum() <= 1:
            break
        steps += _group_steps(state, g, config.replace, limit=int(short.clip(0).sum()), step=config.step)
    keep = set(budget.choose(g, [t["channel"] for t in steps], k).tolist())
    return [t for t in steps if t["channel"] in keep]


def removal_order(model, groups: ChannelGroups, group: str, config,
                  calibration=None) -> tuple[list[int], list[dict | None]]:
    """Every channel of one group, most replaceable first, by repeated MRP removal.

    Also returns, for each removal, the merge ``compensate`` would make (None for a
    channel that was alone in its community).

    The group alone goes through the SRP step until one channel is left: remove the
    most replaceable channel of its largest community, recompute its graph and
    communities. A prefix of the order is what MRP would prune from this layer; the
    reversed order puts the least replaceable channels first (the RI study uses both).
    """
    from .features import compute_features
    from .finetune import resolve_device

    config = config.resolved(calibration is not None)
    device = resolve_device(config.device)
    feats = compute_features(model, groups, features=config.features, bn=config.bn_scale,
                             calibration=calibration, pool=config.pool, device=device)
    g = groups.index(group)
    steps = _group_steps(_Redundancy(model, groups, config, feats, device, calibration), g, config.replace,
                         step=config.step)
    order = [t["channel"] for t in steps]
    return order + sorted(set(range(groups[g].size)) - set(order)), [t["merge"] for t in steps]


def _plan_allocated(model, groups: ChannelGroups, target: Target, config, feats, device, *,
                    model_name: str, calibration=None, notes=None) -> PruningPlan:
    """``allocation="uniform"`` or ``"log-r"``: counts first, then MRP's order inside each group.

    The counts come from :func:`allocate` (the same fraction everywhere, or fractions in
    proportion to ``log R_g`` of the unpruned model); inside each group the channels go
    in its own SRP removal order (:func:`removal_order`), with its merges when
    ``compensate`` is on. Each group is ordered as if alone: its removals do not change
    the filters of the groups that read it.
    """
    if target is None:
        raise TargetError(f"allocation={config.allocation!r} needs a target; only 'srp' runs to exhaustion")
    state = _Redundancy(model, groups, config, feats, device, calibration)
    state.refresh(list(range(len(groups))))
    R0 = state.R.copy()
    weights = None if config.allocation == "uniform" else np.log(R0)
    floor = np.round(groups.sizes / R0).astype(np.int64) if config.floor_communities else None
    counts = allocate(groups, target, weights, min_channels=config.min_channels, floor=floor,
                      round_to=config.round_to)
    budget = Budget(groups, None)
    trajectory, merges, R1 = [], [], R0.copy()
    for g, n in enumerate(counts):  # one state serves every group: removals do not propagate
        for t in _balanced_steps(state, budget, g, config, int(groups.sizes[g] - n)):
            budget.remove(g, t["channel"])
            if config.compensate and t["merge"] is not None:
                merges.append(t["merge"])
            trajectory.append({"step": len(trajectory), "group": groups[g].id, "channel": t["channel"],
                               "community_size": t["community_size"], "R_before": round(t["R_before"], 6),
                               "R_after": round(t["R_after"], 6), "fallback": t["community_size"] == 1,
                               "R_max": round(float(R1.max()), 6),
                               "macs": int(budget.macs), "params": int(budget.params)})
            R1[g] = t["R_after"]
    cfg = config.to_dict() | {"redundancy_before": dict(zip(groups.ids, np.round(R0, 6).tolist())),
                              "redundancy_after": dict(zip(groups.ids, np.round(R1, 6).tolist()))}
    return budget.to_plan(model_name, "mrp", cfg, trajectory, notes, merges=merges)


def plan_mrp(model, groups: ChannelGroups, target: Target | None, config, *, model_name: str = "model",
             progress: bool = False, calibration=None, stopwatch=None) -> PruningPlan:
    """Structural Redundancy Pruning driven by community redundancy (docs/method.md, section 7).

    Every iteration picks the group with the highest score (``R_g``, or ``R_g`` times
    the MACs one of its channels saves, normalised, with ``cost_aware``), removes the
    most replaceable channel(s) of its largest community, updates the costs
    analytically, and recomputes that group's graph and communities. In weight mode
    the groups whose filters read the removed channel change too: their Gram
    downdates are queued, and their graphs and communities are recomputed every
    ``refresh_every`` iterations, or at once when such a group is about to be chosen
    (so the chosen group's ``R`` is always current). When no group
    that may still shrink has a community of two, the smallest-norm channel of the
    group with the largest MACs share goes instead (a *fallback* step, counted in the
    plan's notes).

    With ``target=None`` the loop runs until no group can shrink (every group at its
    ``min_channels``): the trajectory is then MRP's complete removal order.
    """
    from tqdm.auto import tqdm

    from .features import compute_features
    from .finetune import resolve_device

    notes = []
    grouped = [g.id for g in groups if g.blocks > 1]
    if config.allocation == "auto" and grouped and calibration is not None:
        config = config.replace_with(allocation="uniform")
        notes.append(f"allocation 'auto' is 'uniform' here: the loss allocation cannot yet cut the groups that feed "
                     f"grouped convolutions evenly ({grouped[0]!r}{' ...' if len(grouped) > 1 else ''})")
    config = config.resolved(calibration is not None)
    device = resolve_device(config.device)
    budget = Budget(groups, target, min_channels=config.min_channels, round_to=config.round_to, step=config.step)
    with (stopwatch or Stopwatch(device)).lap("features"), stage("features", model):
        feats = compute_features(model, groups, features=config.features, bn=config.bn_scale,
                                 calibration=calibration, pool=config.pool, device=device)
    if config.allocation not in ("srp", "loss"):
        return _plan_allocated(model, groups, target, config, feats, device, model_name=model_name,
                               calibration=calibration, notes=notes)
    if grouped:
        raise ModelError(f"allocation={config.allocation!r} cannot yet cut the groups that feed grouped "
                         "convolutions evenly "
                         f"({grouped[0]!r}{f' and {len(grouped) - 1} more' if len(grouped) > 1 else ''}); "
                         "the default allocation (uniform) or log-r can")
    state = _Redundancy(model, groups, config, feats, device, calibration)
    state.refresh(list(range(len(groups))))
    R0 = state.R.copy()
    if config.floor_communities:  # one survivor per community of the unpruned model
        budget.mins = np.maximum(budget.mins, np.round(budget.sizes / R0).astype(np.int64))
        budget.check_reachable()
    trajectory, merges, stale, fallbacks, it = [], [], set(), 0, 0
    by_loss = config.allocation == "loss"
    if by_loss and config.replace not in LOSS_RULES:
        raise MRPError(f"allocation='loss' ranks groups by the loss of a replace rule among {LOSS_RULES}, "
                       f"not {config.replace!r}")
    next_loss = np.full(len(groups), np.nan)  # allocation='loss': what each group's next removal costs
    goal = None if target is None else (target.flops if target.flops is not None else target.params)
    bar = tqdm(total=1000, desc="MRP", disable=not progress, leave=False)
    while not budget.done():
        quanta = budget.quanta()
        candidates = np.flatnonzero(quanta > 0)
        if len(candidates) == 0:
            if target is None:
                break  # the complete order is known
            raise TargetError("no group can shrink further before the target is met")  # reachability was checked
        savings = groups.cost.savings(budget.counts)
        while True:  # lazy: the group about to be chosen is brought up to date first
            if by_loss:  # every group that can shrink; the one whose next channel costs least per MAC saved
                redundant = candidates
                for h in candidates[np.isnan(next_loss[candidates])].tolist():
                    next_loss[h] = state.loss(h, config.replace)[state.pick(h, 1, config.replace)[0][0]]
            else:
                redundant = candidates[state.R[candidates] > 1.0]  # a group of singletons is no candidate
            fallback = len(redundant) == 0
            if fallback:
                break
            if by_loss:
                score = savings / np.maximum(next_loss, 1e-12)
            else:
                score = state.R.copy()
                if config.cost_aware:
                    score = score * savings / max(savings[redundant].max(), 1e-12)
            cand_score = score[redundant]
            g = int(redundant[np.argmax(cand_score)])  # ties: the earlier group
            if not state.pending[g]:
                break
            state.refresh([g])
            stale.discard(g)
            next_loss[g] = np.nan
        if fallback:  # scored by the cost its channels carry, the largest first
            score = savings * budget.counts
            cand_score = score[candidates]
            g = int(candidates[np.argmax(cand_score)])
        r_before, r_max = float(state.R[g]), float(state.R.max())
        chosen = state.pick(g, int(quanta[g]), config.replace, by_norm=fallback, partners=config.compensate)
        removed = [c for c, _, _ in chosen]
        merges += [m for _, _, m in chosen if m is not None]
        stale.update(state.remove(g, removed))
        budget.remove(g, removed)
        next_loss[g] = np.nan
        it += 1
        if it % config.refresh_every == 0:  # every group whose filters lost inputs since, with g
            state.refresh(sorted(stale | {g}))
            next_loss[sorted(stale)] = np.nan
            stale.clear()
        else:
            state.refresh([g], flush=False)
            stale = {h for h in stale if state.pending[h]}
        fallbacks += int(fallback)
        macs_red, params_red = budget.reductions()
        for channel, size, _ in chosen:
            trajectory.append({"step": len(trajectory), "group": groups[g].id, "channel": channel,
                               "community_size": size, "R_before": round(r_before, 6),
                               "R_after": round(float(state.R[g]), 6), "score": round(float(score[g]), 6),
                               "best_score": round(float(cand_score.max()), 6), "fallback": bool(fallback),
                               "R_max": round(r_max, 6),
                               "macs": int(budget.macs), "params": int(budget.params)})
        if goal is not None:
            done = macs_red if target.flops is not None else params_red
            bar.update(max(0, int(1000 * min(done / goal, 1.0)) - bar.n))
    bar.close()
    if fallbacks:
        notes.append(f"{fallbacks} of {it} iterations fell back to the smallest-norm channel of the group with "
                     "the largest MACs share: no group that could still shrink had a community of two or more")
    cfg = config.to_dict() | {"redundancy_before": dict(zip(groups.ids, np.round(R0, 6).tolist())),
                              "redundancy_after": dict(zip(groups.ids, np.round(state.R, 6).tolist()))}
    return budget.to_plan(model_name, "mrp", cfg, trajectory, notes, merges)
