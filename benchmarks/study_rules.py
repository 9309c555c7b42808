"""Replace rules the studies compare and the product does not ship (no committed result favours them).

Importing this module registers them in ``mrp_gpu.pruner.rules.RULES``, so the studies
(``ri_study.py``, ``quality.py``) can name them in an ``MRPConfig`` as before:

``mean-sim``
    highest mean similarity to the other members of its community, ties to the smaller norm;
``nearest``
    highest similarity to its closest other member;
``norm-in-redundant``
    smallest BN-scaled L1 norm among the channels of *every* community of two or more;
``reconstruction-norm``
    ``reconstruction``'s relative error times the channel's norm: the part of it the
    community cannot rebuild, weighted by how much of it there is;
``error``
    ``error-in-community``'s loss over every live channel, no community involved.
"""

from __future__ import annotations

import numpy as np
import torch

from mrp_gpu.pruner.rules import RULES, ByLoss, Reconstruction, Rule, register

__all__ = ["STUDY_RULES"]


def _similarities(members: np.ndarray, sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.as_tensor(members, device=sim.device)
    sub = sim[idx][:, idx].double()
    return sub, ~torch.eye(len(members), dtype=torch.bool, device=sim.device)


class MeanSim(Rule):
    name = "mean-sim"
    similarity = True

    def key(self, members, inputs):
        sub, off = _similarities(members, inputs.sim)
        return -((sub * off).sum(1) / max(len(members) - 1, 1)).cpu().numpy()


class Nearest(Rule):
    name = "nearest"
    similarity = True

    def key(self, members, inputs):
        sub, off = _similarities(members, inputs.sim)
        return -sub.masked_fill(~off, -torch.inf).max(1).values.cpu().numpy()


class NormInRedundant(Rule):
    name = "norm-in-redundant"

    def candidates(self, pos, labels):
        counts = np.bincount(labels)
        return None if counts.max() == 1 else pos[counts[labels] > 1]

    def key(self, members, inputs):
        return inputs.norms[members]


class ReconstructionNorm(Reconstruction):
    name = "reconstruction-norm"

    def key(self, members, inputs):
        return super().key(members, inputs) * inputs.norms[members]


class Error(ByLoss):
    name = "error"
    in_community = False
    loss = "error"


STUDY_RULES = ("mean-sim", "nearest", "norm-in-redundant", "reconstruction-norm", "error")
for _rule in (MeanSim(), Nearest(), NormInRedundant(), ReconstructionNorm(), Error()):
    if _rule.name not in RULES:  # imported twice (as a script's module and by name): registered once
        register(_rule)
