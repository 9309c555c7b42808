"""Redundancy of every group and replaceability of its channels (docs/method.md, section 5).

``R_g = N_g / C_g``, the mean community size, isolated channels counting as
communities of one: ``R_g = 1`` means every channel plays a role of its own. Inside
a community the *most replaceable* channel is chosen by one of the rules below; a
channel alone in its community is never a candidate.

Rules (``MRPConfig.replace``), each ranking the members of one community:

``norm-in-community``
    smallest BN-scaled L1 norm (the community says where, the norm says which);
``norm-in-redundant``
    smallest BN-scaled L1 norm among the channels of *every* community of two or
    more, not only the largest (redundancy says which channels may go, the norm
    which of them goes first);
``mean-sim``
    highest mean similarity to the other members, ties to the smaller norm;
``nearest``
    highest similarity to its closest other member;
``reconstruction``
    smallest least-squares error when rebuilt from the other members' features
    (relative to the channel's own energy);
``reconstruction-norm``
    that relative error times the channel's BN-scaled L1 norm: the part of the channel
    the community cannot rebuild, weighted by how much of it there is.
``error``, ``error-in-community``
    the output error its consumers are left with once they are refit on the
    survivors: the share of the channel that *every* other live channel of the group
    cannot rebuild by least squares, times its loudness squared (BN ``gamma``), times
    the energy of the consumer weights that read it (the saliency of Optimal Brain
    Surgeon for a linear consumer, ``w_i^2 / [G^-1]_ii``). Candidates: every live
    channel (no community involved), or the members of the largest community.
``rebuild``, ``rebuild-in-community``
    the same question asked of what the consumers really read (:class:`Rebuild`): every
    dense consumer's input patches on calibration images, full resolution, after the
    activation, one block of ``k x k`` columns per channel; the loss is what a
    least-squares refit of each consumer on the survivors leaves of its output (as
    :func:`mrp_gpu.refit.refit` does, up to centring: the BN re-estimation after it absorbs
    constant offsets), relative to that output's variance, summed over the consumers.
    Candidates as for ``error``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import MRPError
from .io import atomic_write_text

__all__ = ["LayerRedundancy", "RedundancyReport", "layer_records", "largest_community", "most_replaceable",
           "NEEDS_SIMILARITY", "ERROR_RULES", "REBUILD_RULES", "LOSS_RULES", "precision", "Precision", "Rebuild"]


@dataclass(frozen=True)
class LayerRedundancy:
    """Redundancy of one channel group."""

    group: str
    channels: int
    communities: int
    redundancy: float
    modularity: float
    edges: int
    tau: float
    largest: int
    labels: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True)
class RedundancyReport:
    """What ``mrp_gpu.analyze`` returns: one record per group, the config, stage timings."""

    layers: tuple[LayerRedundancy, ...]
    config: dict
    timings: dict

    def __getitem__(self, group: str) -> LayerRedundancy:
        for r in self.layers:
            if r.group == group:
                return r
        raise KeyError(group)

    @property
    def redundancy(self) -> dict[str, float]:
        return {r.group: r.redundancy for r in self.layers}

    def to_dict(self) -> dict:
        return {"config": self.config, "timings": self.timings,
                "layers": [{k: v for k, v in asdict(r).items() if k != "labels"} | {"labels": list(r.labels)}
                           for r in self.layers]}

    def save_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


def layer_records(ids, ptr, labels, edges_per_graph, modularity, taus) -> tuple[LayerRedundancy, ...]:
    """Per-group records from batch-wide community labels."""
    ptr, labels = ptr.tolist(), labels.cpu().numpy()
    out = []
    for g, gid in enumerate(ids):
        lab = labels[ptr[g]:ptr[g + 1]]
        _, local, sizes = np.unique(lab, return_inverse=True, return_counts=True)
        n, c = len(lab), len(sizes)
        out.append(LayerRedundancy(gid, n, c, n / c if c else 1.0, float(modularity[g]), int(edges_per_graph[g]),
                                   float(taus[g]), int(sizes.max()) if c else 0, tuple(local.tolist())))
    return tuple(out)


def largest_community(labels: np.ndarray) -> np.ndarray:
    """Positions of the members of the largest community (ties: the lowest label; labels >= 0)."""
    return np.flatnonzero(labels == np.argmax(np.bincount(labels)))


ERROR_RULES = ("error", "error-in-community")
REBUILD_RULES = ("rebuild", "rebuild-in-community")
LOSS_RULES = ERROR_RULES + REBUILD_RULES  # rules that rank channels by a loss the planner supplies
NEEDS_SIMILARITY = {"mean-sim", "nearest", "reconstruction", "reconstruction-norm", *ERROR_RULES}


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


def _ridged_inverse(cov: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
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
    channels: torch.Tensor  # [r]
    cols: torch.Tensor  # [r, b]
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
            cov, p = _ridged_inverse(cov.double(), ridge)
            w = weight.double()
            var = ((w @ cov) * w).sum(1)  # each output's variance on the calibration inputs
            inv_std = torch.where(var > 0, var.clamp_min(1e-300).rsqrt(), torch.zeros_like(var))
            cols = torch.as_tensor(cols)
            capacity = max(cols.shape[1], int(fold * len(p)))
            self.parts.append(_Consumer(p, p.new_empty(len(p), capacity), (w * inv_std[:, None]).T.contiguous(),
                                        torch.as_tensor(channels), cols, torch.zeros(len(p), dtype=torch.bool),
                                        p[cols[:, :, None], cols[:, None, :]]))
        self.read = np.zeros(size, dtype=bool)
        for part in self.parts:
            self.read[part.channels.numpy()] = True
        self.alive = np.ones(size, dtype=bool)

    def loss(self) -> np.ndarray:
        """Each live channel's loss if it went next (``inf`` when no dense consumer reads it;
        0 for removed channels). [size]"""
        out = np.where(self.read, 0.0, np.inf)
        for c in self.parts:
            live = torch.as_tensor(self.alive[c.channels.numpy()])
            ch, cl = c.channels[live], c.cols[live]
            if not len(ch):
                continue
            inv = torch.linalg.inv(c.diag[live])  # [r, b, b]
            wb = c.ws[cl]  # [r, b, out]
            energy = wb @ wb.transpose(1, 2)  # W_B^T diag(1/var) W_B
            out[ch.numpy()] += (inv * energy).sum((1, 2)).cpu().numpy()
        out[~self.alive] = 0.0
        return out

    def drop(self, channel: int) -> None:
        """Remove ``channel``: every consumer is refit on the rest (weights and precision updated)."""
        self.alive[channel] = False
        for c in self.parts:
            hit = torch.nonzero(c.channels == channel).flatten()
            if not len(hit):
                continue
            b = c.cols[hit[0]]
            pb = c.p[:, b] - c.u @ c.u[b].T  # [m, b]
            pb[c.dead] = 0.0  # exactly what rounding leaves near 0
            chol = torch.linalg.cholesky(pb[b])
            new = torch.linalg.solve_triangular(chol, pb.T, upper=False).T  # P_:,B C^-T
            c.ws -= new @ torch.linalg.solve_triangular(chol, c.ws[b], upper=False)  # the refit
            c.dead[b] = True
            c.push(new)


def most_replaceable(rule: str, members: np.ndarray, norms: np.ndarray, sim: torch.Tensor | None = None,
                     gram: torch.Tensor | None = None, k: int = 1, *, loss: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` most replaceable of ``members`` (positions), most replaceable first.

    Parameters
    ----------
    rule : str
        One of the rules of the module docstring.
    members : ndarray
        Positions of one community's channels (at least two).
    norms : ndarray [N]
        BN-scaled L1 norms (the tie-breaker of every rule).
    sim : Tensor [N, N], optional
        Cosine similarities of the group's channels; needed by the rules in
        ``NEEDS_SIMILARITY``.
    gram : Tensor [N, N], optional
        Feature Gram matrix for ``reconstruction`` (``sim`` is used when omitted).
    loss : ndarray [N], optional
        ``error`` and ``rebuild`` rules (needed): what the consumers lose, once refit, if
        each channel went next (``error``: the unexplained share of :class:`Precision`
        times loudness squared times consumer weight energy; ``rebuild``: :class:`Rebuild`).
    """
    if rule in ("norm-in-community", "norm-in-redundant"):
        order = np.argsort(norms[members], kind="stable")
        return members[order[:k]]
    if rule in LOSS_RULES:
        if loss is None:
            raise ValueError(f"rule {rule!r} needs each channel's loss")
        order = np.lexsort((norms[members], loss[members]))  # smallest loss, then smaller norm
        return members[order[:k]]
    if sim is None:
        raise ValueError(f"rule {rule!r} needs the similarity matrix")
    idx = torch.as_tensor(members, device=sim.device)
    sub = sim[idx][:, idx].double()
    s = len(members)
    off = ~torch.eye(s, dtype=torch.bool, device=sim.device)
    if rule == "mean-sim":
        score = ((sub * off).sum(1) / max(s - 1, 1)).cpu().numpy()
    elif rule == "nearest":
        score = sub.masked_fill(~off, -torch.inf).max(1).values.cpu().numpy()
    elif rule in ("reconstruction", "reconstruction-norm"):
        g = (gram[idx][:, idx].double() if gram is not None else sub)
        g = g + 1e-6 * g.diagonal().mean() * torch.eye(s, dtype=g.dtype, device=g.device)
        err = 1.0 / torch.linalg.inv(g).diagonal()  # residual of regressing each on the others
        score = -(err / g.diagonal()).cpu().numpy()  # relative error: scale-free
        if rule == "reconstruction-norm":  # what is lost: the unexplained share of a channel, times its size
            score = score * norms[members]
    else:
        raise ValueError(f"unknown replace rule {rule!r}")
    order = np.lexsort((norms[members], -np.asarray(score)))  # best score, then smaller norm
    return members[order[:k]]
