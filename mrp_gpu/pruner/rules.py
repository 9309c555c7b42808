"""Replace rules: which live channel of a group goes next (``MRPConfig.replace``).

A rule is an object in the ``RULES`` registry, in the manner of Torch-Pruning's
``Importance`` classes. It names its candidates (the members of the group's largest
community, or every live channel) and ranks them by a key, smallest first, ties to the
smaller BN-scaled L1 norm; it declares what it reads, so the planner computes nothing
else: communities (``in_community``), the cosine similarities (``similarity``), the
group's feature Gram matrix (``gram``), a loss the planner supplies (``loss``:
``"error"``, estimated from the features, or ``"rebuild"``, measured on calibration
images by :class:`~mrp_gpu.pruner.rebuild.Rebuild`).

Rules of the product (docs/method.md, section 5):

``rebuild``
    the channel whose removal its consumers feel least once refit by least squares on
    every survivor, on their real inputs (the default with calibration images);
``rebuild-in-community``
    the same among the members of the largest community;
``error-in-community``
    the member of the largest community whose loss the same refit leaves smallest,
    estimated from the group's features: the share of it the others cannot rebuild,
    times its BN ``gamma`` squared, times the energy of the weights that read it (the
    default without images);
``reconstruction``
    the member its community rebuilds best by least squares, relative to its own
    energy (the paper's reading, ``--paper``);
``norm-in-community``
    the member with the smallest BN-scaled L1 norm.

Studies register more rules with :func:`register` (``benchmarks/study_rules.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Rule", "RuleInputs", "RULES", "register", "largest_community"]


def largest_community(labels: np.ndarray) -> np.ndarray:
    """Positions of the members of the largest community (ties: the lowest label; labels >= 0)."""
    return np.flatnonzero(labels == np.argmax(np.bincount(labels)))


@dataclass(frozen=True)
class RuleInputs:
    """What a rule may read about one group (None where the rule declared no need)."""

    norms: np.ndarray  # [N] BN-scaled L1 norms, the tie-breaker of every rule
    sim: torch.Tensor | None = None  # [N, N] cosine similarities
    gram: torch.Tensor | None = None  # [N, N] feature Gram matrix
    loss: np.ndarray | None = None  # [N] what the consumers lose if each channel went next


class Rule:
    """One replace rule. Subclasses set ``name`` and the needs, and define :meth:`key`."""

    name: str = ""
    in_community: bool = True  # candidates: the largest community's members (else every live channel)
    similarity: bool = False
    gram: bool = False
    loss: str | None = None  # "error" or "rebuild"

    @property
    def needs_calibration(self) -> bool:
        return self.loss == "rebuild"

    def candidates(self, pos: np.ndarray, labels: np.ndarray | None) -> np.ndarray | None:
        """The live channels (``pos``, their community ``labels``) this rule may take next;
        None when every one is alone in its community (the planner then takes the
        smallest norm)."""
        if not self.in_community:
            return pos
        if np.bincount(labels).max() == 1:
            return None
        return pos[largest_community(labels)]

    def key(self, members: np.ndarray, inputs: RuleInputs) -> np.ndarray:
        """One value per member; the smallest goes first."""
        raise NotImplementedError

    def rank(self, members: np.ndarray, inputs: RuleInputs) -> np.ndarray:
        """``members`` in the order they go: by :meth:`key`, ties to the smaller norm."""
        return members[np.lexsort((inputs.norms[members], self.key(members, inputs)))]

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to ``RULES`` under its name (an existing name is an error)."""
    if not rule.name or rule.name == "auto":
        raise ValueError(f"a rule needs a name other than 'auto', got {rule.name!r}")
    if rule.name in RULES:
        raise ValueError(f"a replace rule named {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


class NormInCommunity(Rule):
    name = "norm-in-community"

    def key(self, members, inputs):
        return inputs.norms[members]


class Reconstruction(Rule):
    name = "reconstruction"
    gram = True

    def key(self, members, inputs):
        idx = torch.as_tensor(members, device=inputs.gram.device)
        g = inputs.gram[idx][:, idx].double()
        g = g + 1e-6 * g.diagonal().mean() * torch.eye(len(members), dtype=g.dtype, device=g.device)
        err = 1.0 / torch.linalg.inv(g).diagonal()  # residual of regressing each on the others
        return (err / g.diagonal()).cpu().numpy()  # relative error: scale-free


class ByLoss(Rule):
    """Smallest loss first (the loss is supplied by the planner: ``RuleInputs.loss``)."""

    def key(self, members, inputs):
        if inputs.loss is None:
            raise ValueError(f"rule {self.name!r} needs each channel's loss")
        return inputs.loss[members]


class ErrorInCommunity(ByLoss):
    name = "error-in-community"
    loss = "error"


class Rebuild(ByLoss):
    name = "rebuild"
    in_community = False
    loss = "rebuild"


class RebuildInCommunity(ByLoss):
    name = "rebuild-in-community"
    loss = "rebuild"


for _rule in (Rebuild(), RebuildInCommunity(), ErrorInCommunity(), Reconstruction(), NormInCommunity()):
    register(_rule)
