"""What each channel's removal costs its consumers, once they are refit: the loss the
``error`` and ``rebuild`` rules rank by, and the ``loss`` allocation compares across groups.

``error``: the share of a channel that every other live channel of its group cannot
rebuild by least squares (the diagonal of a precision matrix, kept current as channels
go: :class:`~mrp_gpu.linalg.Precision`), times its loudness squared (BN ``gamma``),
times the energy of the consumer weights that read it: Optimal Brain Surgeon's saliency
for a linear consumer, ``w_i^2 / [G^-1]_ii``, estimated from the features.
``rebuild``: the same question asked of the consumers' real inputs on calibration
images (:class:`~mrp_gpu.pruner.rebuild.Rebuild`).
"""

from __future__ import annotations

import numpy as np
import torch

from ...dependency.projections import dense_layer
from ...linalg import Precision
from ...redundancy.calibration import is_dense
from ...redundancy.features import consumer_energy, output_scale
from ..rebuild import Rebuild
from .grams import Grams

__all__ = ["Losses", "REBUILD_INPUTS", "rebuild_consumers"]

# ``rebuild``: consumers with more inputs are not counted (a [n, n] float64 covariance each;
# 8192 inputs take 512 MB), e.g. a classifier reading a flattened 7x7 map of 512 channels
REBUILD_INPUTS = 8192


def rebuild_consumers(model, groups) -> list[str]:
    """The consumers the ``rebuild`` loss counts, whose input covariances the calibration pass
    measures: every dense consumer of a group (attention projections included) with at most
    ``REBUILD_INPUTS`` inputs."""
    def counted(name):
        m = dense_layer(model, name)
        return is_dense(m) and m.weight[0].numel() <= REBUILD_INPUTS

    return sorted({s.module for group in groups for s in group.dense_inputs if counted(s.module)})


class Losses:
    """Per group, each live channel's loss if it went next; renewed after every change of the group.

    Within one quantum of several channels the loss is that of the quantum's start.
    """

    def __init__(self, kind: str, model, groups, alive: list[np.ndarray], grams: Grams, device, *,
                 covariances: dict | None = None):
        if kind not in ("error", "rebuild"):
            raise ValueError(f"unknown loss {kind!r}")
        self.kind, self.model, self.groups, self.alive = kind, model, groups, alive
        self.grams, self.device = grams, device
        self.cache: list[np.ndarray | None] = [None] * len(groups)
        self.prec: list[tuple | None] = [None] * len(groups)  # error: (Precision, channel -> its row)
        self.rebuild: list[Rebuild | None] = [None] * len(groups)
        self.salience = ([output_scale(model, g).double().cpu().numpy() ** 2 * consumer_energy(model, g).numpy()
                          for g in groups] if kind == "error" else None)
        if kind == "rebuild" and covariances is None:
            raise ValueError("the rebuild loss needs the calibration pass's input covariances")
        self.covs = covariances  # rebuild: every counted consumer's input covariance

    def __call__(self, g: int) -> np.ndarray:
        if self.cache[g] is None:
            if self.kind == "error":
                self.cache[g] = self.unexplained(g) * self.salience[g]
            else:
                if self.rebuild[g] is None:
                    self.rebuild[g] = self._rebuild(g)
                self.cache[g] = self.rebuild[g].loss()
        return self.cache[g]

    def invalidate(self, g: int) -> None:
        """Group ``g``'s Gram matrix changed (weight features): the ``error`` state is rebuilt."""
        self.prec[g] = self.cache[g] = None

    def drop(self, g: int, channels: np.ndarray) -> None:
        self.cache[g] = None
        if self.prec[g] is not None:
            prec, where = self.prec[g]
            for r in np.atleast_1d(channels).tolist():
                prec.drop(int(where[r]))
        if self.rebuild[g] is not None:
            for r in np.atleast_1d(channels).tolist():
                self.rebuild[g].drop(int(r))

    def unexplained(self, g: int) -> np.ndarray:
        """The share of each live channel of ``g`` its other live channels cannot rebuild (0 for removed ones).

        The precision matrix of the live channels is inverted once; each removal then
        updates its diagonal in O(n k).
        """
        if self.prec[g] is None:
            live = np.flatnonzero(self.alive[g])
            gram = self.grams[g]
            at = torch.as_tensor(live, device=gram.device)
            where = np.full(self.groups[g].size, -1)
            where[live] = np.arange(len(live))
            self.prec[g] = (Precision(gram[at][:, at]), where)
        prec, where = self.prec[g]
        share = np.zeros(self.groups[g].size)
        inside = where >= 0
        share[inside] = prec.share().cpu().numpy()[where[inside]]
        return share

    def _rebuild(self, g: int) -> Rebuild:
        """The :class:`Rebuild` state of group ``g``: its counted consumers on the calibration images."""
        group, consumers = self.groups[g], []
        for s in group.dense_inputs:
            if s.module not in self.covs:
                continue
            channels, times = np.unique(s.channel, return_counts=True)
            if (times != times[0]).any():
                continue  # channels read at unequal numbers of positions: not counted
            w = dense_layer(self.model, s.module).weight.detach()
            per = int(np.prod(w.shape[2:]))  # columns per input position: the kernel's taps
            # every position a channel occupies (e.g. 49 after flattening a 7x7 map), times the taps
            pos = s.idxs[np.argsort(s.channel, kind="stable")]
            cols = (pos[:, None] * per + np.arange(per)).reshape(len(channels), -1)
            consumers.append((self.covs[s.module].to(self.device), w.flatten(1).to(self.device), channels, cols))
        rebuild = Rebuild(consumers, group.size)
        for c in np.flatnonzero(~self.alive[g]).tolist():
            rebuild.drop(c)
        return rebuild
