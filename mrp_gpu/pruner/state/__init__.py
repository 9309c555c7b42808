"""The planner's live state of every group, in the pieces a plan may need.

:class:`PlannerState` holds which channels are alive and their norms, and composes
what the resolved rule and allocation read and nothing more: Gram matrices
(:mod:`.grams`), graphs and communities (:mod:`.communities`), consumer losses
(:mod:`.losses`), and, with weight features, the downdates a removal sends to the
groups that read it (:mod:`.propagation`).
"""

from __future__ import annotations

import numpy as np
import torch

from ...redundancy.features import bn_scale, output_scale, weight_matrix
from ..rules import RULES, RuleInputs
from .communities import Communities
from .grams import Grams
from .losses import Losses
from .propagation import Propagation

__all__ = ["PlannerState", "needs_communities", "reads_grams"]


def needs_communities(config) -> bool:
    """Whether a resolved config reads communities (and so similarities): its rule, the SRP
    allocation (``R``), or the merges."""
    rule = RULES[config.replace]
    return rule.in_community or rule.similarity or config.allocation == "srp" or bool(config.compensate)


def reads_grams(config) -> bool:
    """Whether a resolved config reads the groups' Gram matrices: through communities, or a rule on them."""
    rule = RULES[config.replace]
    return needs_communities(config) or rule.gram or rule.loss == "error"


class PlannerState:
    """Live channels, norms and whatever the resolved ``config`` reads, for every group.

    Parameters
    ----------
    model : nn.Module
    groups : ChannelGroups
    config : MRPConfig
        Resolved.
    feats : GroupFeatures
        The unpruned features, on ``device``.
    device : torch.device
    calibration : Calibration, optional
        The calibration pass's measurements (the ``rebuild`` loss reads its covariances).
    """

    def __init__(self, model, groups, config, feats, device, calibration=None):
        self.model, self.groups, self.config, self.device = model, groups, config, device
        self.rule = RULES[config.replace]
        self.alive = [np.ones(g.size, dtype=bool) for g in groups]
        self.l1, self.scale = [], []
        weights = []
        for g in groups:
            w = weight_matrix(model, g).to(device)
            s = bn_scale(model, g)
            self.l1.append(w.abs().sum(1).double().cpu().numpy())
            self.scale.append(np.ones(g.size) if s is None else s.double().cpu().numpy())
            weights.append(w if config.features == "weight" else None)
        rows = (lambda g: weights[g]) if config.features == "weight" else (lambda g: feats.rows[g].to(device))
        self.grams = Grams(rows, len(groups))
        self.communities = (Communities(self.grams, self.alive, feats, config, device)
                            if needs_communities(config) else None)
        self.losses = (Losses(self.rule.loss, model, groups, self.alive, self.grams, device,
                              covariances=None if calibration is None else calibration.covariances)
                       if self.rule.loss else None)
        # weight features: a removal changes the readers' filters (their norms always, their Grams when read)
        self.propagation = Propagation(model, groups, device) if config.features == "weight" else None
        self.queue_downdates = reads_grams(config)
        self.loudness = ([output_scale(model, g).double().cpu().numpy() for g in groups]
                         if config.compensate else None)

    @property
    def R(self) -> np.ndarray:
        """Redundancy of every group as of its last refresh (1 everywhere without communities)."""
        return self.communities.R if self.communities is not None else np.ones(len(self.groups))

    def pending(self, g: int) -> bool:
        """Whether group ``g`` has downdates waiting (its ``R`` and loss are then stale)."""
        return bool(self.grams.pending[g])

    def norms(self, g: int) -> np.ndarray:
        return self.l1[g] * self.scale[g]

    def loss(self, g: int) -> np.ndarray:
        return self.losses(g)

    def refresh(self, which: list[int], flush: bool = True) -> None:
        """Apply queued downdates (``flush``), then recompute the communities of ``which``."""
        for g in which if flush else ():
            if self.grams.flush(g):
                if self.communities is not None:
                    self.communities.invalidate(g)
                if self.losses is not None:
                    self.losses.invalidate(g)
        if self.communities is not None:
            self.communities.refresh(which)

    def pick(self, g: int, k: int, by_norm: bool = False,
             partners: bool = False) -> list[tuple[int, int | None, dict | None]]:
        """The ``k`` channels of group ``g`` to remove next: (channel, community size, merge).

        Each is the rule's first among its candidates (one community state serves the
        whole quantum; a group in blocks gives at most ``ceil(k / blocks)`` from each block);
        when every live channel is alone, or with ``by_norm``, the smallest-norm channel
        goes. With ``partners``, each channel taken from a community also gets a merge: its
        most similar remaining community member, and the ratio of their output scales
        (clipped to [-4, 4]). The community size is
        None when the plan reads no communities.
        """
        rule, comm = self.rule, self.communities
        live = self.alive[g].copy()
        sim = comm.similarity(g) if (rule.similarity or partners) and not by_norm else None
        labels_of = comm.labels[g] if comm is not None else None
        block, blocks = self.groups[g].block, self.groups[g].blocks
        need = np.full(blocks, -(-k // blocks)) if block is not None and k >= blocks else None  # per block
        chosen = []
        for _ in range(k):
            pos = np.flatnonzero(live)
            if need is not None:
                pos = pos[need[block[pos]] > 0]
            if len(pos) == 0:
                break
            members = None if by_norm else rule.candidates(pos, None if labels_of is None else labels_of[pos])
            size, merge = None, None
            if members is None:
                channel, size = int(pos[np.argmin(self.norms(g)[pos])]), 1
            else:
                inputs = RuleInputs(self.norms(g), sim, self.grams[g] if rule.gram else None,
                                    self.loss(g) if rule.loss else None)
                channel = int(rule.rank(members, inputs)[0])
                if labels_of is not None:
                    mates = members[labels_of[members] == labels_of[channel]]
                    size = len(mates)
                    others = mates[mates != channel]
                    if partners and len(others):
                        merge = self._merge(g, channel, others, sim)
            chosen.append((channel, size, merge))
            live[channel] = False
            if need is not None:
                need[block[channel]] -= 1
        return chosen

    def _merge(self, g: int, channel: int, others: np.ndarray, sim: torch.Tensor) -> dict:
        into = int(others[int(torch.argmax(sim[channel, torch.as_tensor(others)]))])
        loud = self.loudness[g]
        ratio = loud[channel] / loud[into] if loud[into] else 0.0
        return {"group": self.groups[g].id, "channel": channel, "into": into, "scale": float(np.clip(ratio, -4.0, 4.0))}

    def remove(self, g: int, channels: list[int], propagate: bool = True) -> list[int]:
        """Drop ``channels`` of group ``g``; return the groups whose filters changed.

        With ``propagate=False`` the groups that read ``g`` keep their filters as they
        were (each group is then pruned as if alone, as the allocated plans do).
        """
        channels = np.asarray(channels)
        self.alive[g][channels] = False
        if self.losses is not None:
            self.losses.drop(g, channels)
        if self.communities is not None:
            self.communities.drop(g, channels)
        if self.propagation is None or not propagate:
            return []
        touched = []
        for h, cols in self.propagation.lost_columns(g, channels):
            if self.queue_downdates:
                self.grams.queue(h, cols)
            self.l1[h] = self.l1[h] - cols.abs().sum(1).cpu().numpy()
            touched.append(h)
        return sorted(set(touched))
