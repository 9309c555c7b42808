"""Linear algebra the stages share: symmetric Gram products, precision matrices, ridged inverses.

A leaf module (torch only): features, similarity graphs and the planner's loss models all
build on it, and it imports none of them.
"""

from __future__ import annotations

import torch

from .errors import MRPError

__all__ = ["GRAM_BLOCK", "gram", "precision", "Precision", "ridged_inverse"]

GRAM_BLOCK = 256


def gram(x: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """``x @ x.T``, exactly symmetric, from the blocks on and above the diagonal only.

    Rows are taken ``block`` at a time; each product of a row block with the rows from
    its own on is written once as is and once transposed, so a wide group costs about
    half the products (ResNet-50's 2,048 channels: 36 block products of 64).
    """
    n = x.shape[0]
    if n <= block:
        return x @ x.T
    out = x.new_empty(n, n)
    for i in range(0, n, block):
        part = x[i:i + block] @ x[i:].T
        out[i:i + block, i:] = part
        out[i + block:, i:i + block] = part[:, block:].T
    return out



def precision(gram: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Inverse of the ridge-regularised correlation matrix of ``gram`` (float64). [n, n]

    ``1 / P_ii`` is the share of channel ``i`` the others cannot rebuild by least squares.
    """
    g = gram.double()
    d = g.diagonal().clamp_min(1e-30).rsqrt()
    c = g * d[:, None] * d[None, :]
    c.diagonal().add_(ridge)  # symmetric positive definite: Cholesky, half the work of a general inverse
    return torch.cholesky_inverse(torch.linalg.cholesky(c))


class Precision:
    """The diagonal of the precision matrix of a set of channels, as channels are dropped.

    Dropping channel ``r`` turns ``P`` into its Schur complement ``P - P[:, r] P[r, :] / P[r, r]``,
    the precision of the others. Kept in factored form, ``P = P0 - V V^T`` with one
    column of ``V`` per dropped channel, a drop costs O(n k) (``k`` dropped so far)
    instead of the O(n^2) of updating ``P`` or the O(n^3) of inverting anew.
    """

    def __init__(self, gram: torch.Tensor, ridge: float = 1e-3):
        self.p0 = precision(gram, ridge)
        self.diag = self.p0.diagonal().clone()
        self.vt = torch.zeros(16, len(self.p0), dtype=self.p0.dtype, device=self.p0.device)  # V^T, grows by doubling
        self.k = 0
        self.gone = torch.zeros(len(self.p0), dtype=torch.bool, device=self.p0.device)

    def drop(self, r: int) -> None:
        vt = self.vt[:self.k]
        col = self.p0[r] - vt[:, r] @ vt  # row r of the current P (symmetric: its column)
        col = col / col[r].clamp_min(1e-300).sqrt()
        if self.k == len(self.vt):
            self.vt = torch.cat([self.vt, torch.zeros_like(self.vt)])
        self.vt[self.k] = col
        self.k += 1
        self.gone[r] = True
        self.diag -= col * col
        self.diag[self.gone] = 0.0  # rounding leaves the dropped ones at about 0

    def share(self) -> torch.Tensor:
        """``1 / P_ii`` of the channels still in (0 for the dropped ones). [n]"""
        return torch.where(self.diag > 0, 1.0 / self.diag.clamp_min(1e-300), torch.zeros_like(self.diag))


def ridged_inverse(cov: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cov + r I`` and its inverse, ``r = ridge`` times the mean variance, raised tenfold
    while the Cholesky factorisation fails (a covariance accumulated in float32 over inputs of
    very unequal scale can be indefinite by more than the first ridge)."""
    scale = float(cov.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    for k in range(7):
        ridged = cov + (ridge * 10 ** k * scale) * eye
        factor, info = torch.linalg.cholesky_ex(ridged)
        if int(info) == 0:
            return ridged, torch.cholesky_inverse(factor)
    raise MRPError(f"an input covariance stays indefinite with a ridge of {ridge * 1e6:g} times its mean "
                   "variance (non-finite activations?)")
