"""Per-channel importance scores of the classic criteria (lowest is pruned first).

``l1`` (Li et al. 2017): L1 norm of the channel's filters summed over the group's
producers. ``fpgm`` (He et al. 2019): summed Euclidean distance to the group's other
filters; a filter near the geometric median is the one the others can replace.
``random``: uniform noise from a seeded generator. ``bn_l1``: L1 norm times the
effective BN scale, the norm MRP's ``norm-in-community`` rule uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .dependency.groups import ChannelGroup, ChannelGroups
from .redundancy.features import bn_scale, weight_matrix

__all__ = ["CRITERIA", "channel_scores", "group_scores"]

CRITERIA = ("l1", "fpgm", "random", "bn_l1")


def channel_scores(model: nn.Module, group: ChannelGroup, criterion: str,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Score every channel of one group; lower means prune first."""
    if criterion == "random":
        return (rng or np.random.default_rng(0)).random(group.size)
    w = weight_matrix(model, group)
    if criterion == "l1":
        s = w.abs().sum(1)
    elif criterion == "bn_l1":
        scale = bn_scale(model, group)
        s = w.abs().sum(1) * (scale if scale is not None else 1.0)
    elif criterion == "fpgm":
        s = torch.cdist(w[None].double(), w[None].double())[0].sum(1)
    else:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA}")
    return s.double().cpu().numpy()


def group_scores(model: nn.Module, groups: ChannelGroups, criterion: str, seed: int = 0) -> list[np.ndarray]:
    """Scores of every group, each divided by its group's mean so groups compare."""
    rng = np.random.default_rng(seed)
    out = []
    for g in groups:
        s = channel_scores(model, g, criterion, rng)
        mean = s.mean()
        out.append(s / mean if mean > 0 else s)
    return out
