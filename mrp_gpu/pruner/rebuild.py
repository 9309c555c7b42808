"""The ``rebuild`` loss: what a group's consumers lose when its channels go, each consumer refit.

The loss is asked of what the consumers really read: every dense consumer's input
patches on the calibration images, at full resolution, after the activation, one block
of ``k x k`` columns per channel. It is what a least-squares refit of each consumer on
the survivors leaves of its output (as :func:`mrp_gpu.refit.refit` does, up to centring:
the BN re-estimation after it absorbs constant offsets), relative to that output's
variance, summed over the consumers (docs/method.md, section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..linalg import ridged_inverse

__all__ = ["Rebuild"]


@dataclass(eq=False)
class _Consumer:
    """One dense consumer in :class:`Rebuild`: ``P = p - u u^T``; ``u`` (the first ``rank``
    columns of ``buf``) grows by a block per removal and is folded into ``p`` when ``buf``
    is full. The diagonal blocks of ``P`` that the losses read, one per channel, are kept
    current apart (a removal updates them in ``O(r b^3)`` instead of gathering
    ``r b`` rows of ``u``)."""

    p: torch.Tensor  # [m, m]
    buf: torch.Tensor  # [m, capacity]
    ws: torch.Tensor  # [m, out]: the weights, transposed, each output over its std; refit after every removal
    channels: np.ndarray  # [r], on the host: the planner's bookkeeping
    cols: torch.Tensor  # [r, b], on the device of ``p`` like every tensor here
    dead: torch.Tensor  # [m] bool: columns of removed channels (their rows of P are 0)
    diag: torch.Tensor  # [r, b, b]: P[cols[i]][:, cols[i]] of every channel i
    rank: int = 0

    @property
    def u(self) -> torch.Tensor:
        return self.buf[:, :self.rank]

    def push(self, new: torch.Tensor) -> None:
        """``P -= new new^T`` (new: [m, b])."""
        part = new[self.cols]  # [r, b, b_new]
        self.diag -= part @ part.transpose(1, 2)
        if self.rank + new.shape[1] > self.buf.shape[1]:
            self.p.addmm_(self.u, self.u.T, alpha=-1.0)  # fold (``p`` is this object's own)
            self.p[self.dead] = 0.0  # exactly what rounding leaves near 0
            self.p[:, self.dead] = 0.0
            self.rank = 0
        self.buf[:, self.rank:self.rank + new.shape[1]] = new
        self.rank += new.shape[1]


class Rebuild:
    """What a group's dense consumers lose when its channels go, each consumer refit on the rest.

    A consumer ``y = W x`` refit by least squares on inputs of covariance ``G`` loses,
    when the input columns ``B`` go, ``tr(W_B [P_BB]^-1 W_B^T)`` of its output energy
    (``P = G^-1``; Optimal Brain Surgeon with the layer's exact Hessian), and the refit
    moves the other weights by ``-W_B [P_BB]^-1 P_B,:`` while ``P`` becomes its Schur
    complement. A convolution's inputs are its ``k x k`` patches, so a channel is a
    block of ``k*k`` columns and the refit may rebuild it from its neighbours' shifted
    responses too. Each output's loss is relative to its variance (the BN after the
    consumer normalises it away); the losses of the consumers add up.

    The Schur complement is kept in factored form, ``P = P_0 - U U^T`` with ``b`` new
    columns of ``U`` per removal (``P_B,: [P_BB]^-1 P_:,B = (P_:,B C^-T)(P_:,B C^-T)^T``,
    ``C C^T = P_BB``): a removal costs ``O(m rank b)`` instead of rewriting the
    ``m x m`` matrix (4,608 x 4,608 for a 3x3 convolution of 512 inputs), and ``U`` is
    folded into ``P_0`` once it would be more than ``fold`` times ``m`` wide.

    Parameters
    ----------
    consumers : list of (cov, weight, channels, cols)
        Per dense consumer: its input covariance ``[m, m]``, its weights ``[out, m]``,
        the group channels it reads ``[r]`` and each one's input columns ``[r, b]``.
    size : int
        Channels in the group. A channel no dense consumer reads has loss ``inf``: the
        score cannot see it, and the tie-breaker (its norm) decides.
    """

    def __init__(self, consumers, size: int, ridge: float = 1e-3, fold: float = 0.25):
        self.parts: list[_Consumer] = []
        for cov, weight, channels, cols in consumers:
            cov, p = ridged_inverse(cov.double(), ridge)
            w = weight.double()
            var = ((w @ cov) * w).sum(1)  # each output's variance on the calibration inputs
            inv_std = torch.where(var > 0, var.clamp_min(1e-300).rsqrt(), torch.zeros_like(var))
            cols = torch.as_tensor(cols, device=p.device)
            capacity = max(cols.shape[1], int(fold * len(p)))
            self.parts.append(_Consumer(p, p.new_empty(len(p), capacity), (w * inv_std[:, None]).T.contiguous(),
                                        np.asarray(channels), cols,
                                        torch.zeros(len(p), dtype=torch.bool, device=p.device),
                                        p[cols[:, :, None], cols[:, None, :]]))
        self.read = np.zeros(size, dtype=bool)
        for part in self.parts:
            self.read[part.channels] = True
        self.alive = np.ones(size, dtype=bool)

    def loss(self) -> np.ndarray:
        """Each live channel's loss if it went next (``inf`` when no dense consumer reads it;
        0 for removed channels). [size]"""
        out = np.where(self.read, 0.0, np.inf)
        for c in self.parts:
            live = self.alive[c.channels]
            if not live.any():
                continue
            at = torch.as_tensor(np.flatnonzero(live), device=c.cols.device)
            inv = torch.linalg.inv(c.diag[at])  # [r, b, b]
            wb = c.ws[c.cols[at]]  # [r, b, out]
            energy = wb @ wb.transpose(1, 2)  # W_B^T diag(1/var) W_B
            out[c.channels[live]] += (inv * energy).sum((1, 2)).cpu().numpy()
        out[~self.alive] = 0.0
        return out

    def drop(self, channel: int) -> None:
        """Remove ``channel``: every consumer is refit on the rest (weights and precision updated)."""
        self.alive[channel] = False
        for c in self.parts:
            hit = np.flatnonzero(c.channels == channel)
            if not len(hit):
                continue
            b = c.cols[int(hit[0])]
            pb = c.p[:, b] - c.u @ c.u[b].T  # [m, b]
            pb[c.dead] = 0.0  # exactly what rounding leaves near 0
            chol = torch.linalg.cholesky(pb[b])
            new = torch.linalg.solve_triangular(chol, pb.T, upper=False).T  # P_:,B C^-T
            c.ws -= new @ torch.linalg.solve_triangular(chol, c.ws[b], upper=False)  # the refit
            c.dead[b] = True
            c.push(new)
