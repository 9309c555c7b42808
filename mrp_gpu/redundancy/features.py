"""Per-channel features, on the model's device.

``weight`` (data-free): channel ``c`` of a group is the concatenation of the flattened
filter of every producing convolution or linear layer (optionally with its BN
scale). ``activation``: the channel's response to a calibration batch, taken after
each normalisation layer of the group (or after the producers when there is none),
average-pooled to ``p x p``, flattened over the batch and centred, so the cosine of two
features is their Pearson correlation. Both are L2-normalised rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dependency.groups import ChannelGroup, ChannelGroups, LayerSlice
from ..errors import ModelError, MRPError
from ..hooks import hooked

__all__ = ["GroupFeatures", "weight_matrix", "bn_scale", "output_scale", "consumer_energy", "weight_features",
           "ActivationTaps", "activation_features", "run_hooked", "normalize_rows", "check_finite",
           "compute_features"]


@dataclass(frozen=True, eq=False)
class GroupFeatures:
    """One L2-normalised feature row per channel, for each group (ragged batch)."""

    ids: tuple[str, ...]
    rows: tuple[torch.Tensor, ...]  # rows[g]: [N_g, d_g]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dims(self) -> list[int]:
        return [r.shape[1] for r in self.rows]


def _rows(weight: torch.Tensor, s: LayerSlice, size: int) -> torch.Tensor:
    """The slice's filters as rows ordered by group channel: [size, k]."""
    w = weight.detach()
    return _by_channel(w.flatten(1) if w.dim() > 1 else w[:, None], s, size)


def _by_channel(x: torch.Tensor, s: LayerSlice, size: int) -> torch.Tensor:
    """Rows ``s.idxs`` of ``x`` gathered per group channel: [size, positions * x.shape[1]]
    (several positions per channel are laid side by side). A run of consecutive rows,
    the common case, is a view: nothing is copied."""
    idx = s.idxs[np.argsort(s.channel, kind="stable")]
    if len(idx) and (np.diff(idx) == 1).all():
        return x[int(idx[0]):int(idx[0]) + len(idx)].reshape(size, -1)
    return x[torch.as_tensor(idx, device=x.device)].reshape(size, -1)


def weight_matrix(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Concatenated producer filters, one row per channel (not normalised): [N, d], float32."""
    parts = []
    for s in group.producers:
        m = model.get_submodule(s.module)
        w = m.weight.detach()
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            w = w.transpose(0, 1)
        parts.append(_rows(w, s, group.size))
    return torch.cat(parts, 1).float()


def bn_scale(model: nn.Module, group: ChannelGroup) -> torch.Tensor | None:
    """Effective BN scale ``|gamma| / sqrt(var + eps)`` per channel, averaged over the group's BNs."""
    scales = []
    for s in group.norms:
        m = model.get_submodule(s.module)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.running_var is not None:
            scale = m.weight.detach().abs() / torch.sqrt(m.running_var + m.eps)
            scales.append(_rows(scale, s, group.size)[:, 0].float())
    return torch.stack(scales).mean(0) if scales else None


def output_scale(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """How loud each channel is to its consumers: its BN scale ``gamma`` (mean over the
    group's BNs: after normalisation, two channels with parallel filters differ only by
    it), or its filters' L2 norm when the group has no BN."""
    gammas = [_rows(model.get_submodule(s.module).weight, s, group.size)[:, 0].float() for s in group.norms
              if getattr(model.get_submodule(s.module), "weight", None) is not None]
    return torch.stack(gammas).mean(0) if gammas else weight_matrix(model, group).norm(dim=1)


def consumer_energy(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """How strongly the group's consumers read each channel: the squared L2 norm of every
    weight that takes it as input, summed over the consumers (grouped convolutions: only
    the filters of the channel's own block read it). [N]"""
    energy = torch.zeros(group.size, dtype=torch.float64)
    for s in group.consumers:
        m = model.get_submodule(s.module)
        w = getattr(m, "weight", None)
        if w is None or w.dim() < 2:
            continue
        w = w.detach().double().cpu()
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            w = w.transpose(0, 1)
        blocks = getattr(m, "groups", 1)
        per_in, per_out = w.shape[1], w.shape[0] // blocks
        col = w.reshape(blocks, per_out, per_in, -1).pow(2).sum((1, 3)).reshape(-1)  # input i -> its energy
        idxs = torch.as_tensor(s.idxs)
        energy.index_add_(0, torch.as_tensor(s.channel), col[idxs])
    return energy


def run_hooked(model: nn.Module, hooks: Iterable, batch: torch.Tensor, chunk: int, progress: bool = False,
               desc: str = "calibration") -> None:
    """Run ``model`` in eval mode over ``batch`` in chunks, for what ``hooks`` (handles, drawn as
    they are registered: :func:`~mrp_gpu.hooks.hooked`) collect; then remove them and restore
    the model's mode."""
    from tqdm.auto import tqdm

    was = model.training
    model.eval()
    try:
        with hooked(hooks):
            device = next(model.parameters()).device
            for x in tqdm(batch.split(chunk), desc=desc, unit="chunk", disable=not progress, leave=False):
                model(x.to(device))
    finally:
        model.train(was)


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; an all-zero row stays zero (cosine 0 with everything)."""
    return F.normalize(x, dim=1, eps=1e-12)


def _normalize_rows_(x: torch.Tensor) -> torch.Tensor:
    """:func:`normalize_rows` in place, for a matrix the caller owns."""
    return x.div_(x.norm(dim=1, keepdim=True).clamp_min_(1e-12))


def weight_features(model: nn.Module, groups: ChannelGroups, *, only: list[str] | None = None) -> GroupFeatures:
    """Data-free features of every group (or of the groups in ``only``)."""
    ids, rows = [], []
    for g in groups:
        if only is not None and g.id not in only:
            continue
        f = weight_matrix(model, g)
        ids.append(g.id)
        rows.append(_normalize_rows_(f))
    return GroupFeatures(tuple(ids), tuple(rows))


class ActivationTaps:
    """The hooks that collect activation features during a pass (:func:`activation_features`).

    ``hooks(model)`` registers them; after the pass, ``result()`` gives the features.
    """

    def __init__(self, groups: ChannelGroups, pool: int = 4):
        self.groups, self.pool = groups, pool
        self.taps: dict[str, list[tuple[int, int, LayerSlice]]] = {}  # module -> (group, slot, slice)
        for gi, g in enumerate(groups):
            for j, s in enumerate(g.norms or g.producers):
                self.taps.setdefault(s.module, []).append((gi, j, s))
        self.collected = [[[] for _ in (g.norms or g.producers)] for g in groups]

    def hooks(self, model: nn.Module) -> Iterator:
        return (model.get_submodule(name).register_forward_hook(self._hook_for(name)) for name in self.taps)

    def _hook_for(self, name: str):
        def hook(module, args, out):
            if out.dim() == 3 and isinstance(module, (nn.Linear, nn.LayerNorm)):  # tokens: [B, T, C]
                out = out.transpose(1, 2)
            if out.dim() == 4:
                y = F.adaptive_avg_pool2d(out, self.pool)
            elif out.dim() == 3:
                y = F.adaptive_avg_pool1d(out, self.pool)
            else:
                y = out
            for gi, j, s in self.taps[name]:
                part = _by_channel(y.detach().transpose(0, 1).flatten(1), s, self.groups[gi].size)
                self.collected[gi][j].append(part.float())
        return hook

    def result(self) -> GroupFeatures:
        rows = []
        for parts in self.collected:
            centred = [torch.cat(p, 1) for p in parts]
            rows.append(normalize_rows(torch.cat([c - c.mean(1, keepdim=True) for c in centred], 1)))
        return GroupFeatures(tuple(self.groups.ids), tuple(rows))


@torch.no_grad()
def activation_features(model: nn.Module, groups: ChannelGroups, batch: torch.Tensor, *, pool: int = 4,
                        chunk: int = 64) -> GroupFeatures:
    """Data-driven features: pooled, centred responses to ``batch`` (run in chunks)."""
    taps = ActivationTaps(groups, pool)
    run_hooked(model, taps.hooks(model), batch, chunk)
    return taps.result()


def compute_features(model: nn.Module, groups: ChannelGroups, *, features: str = "weight",
                     calibration: torch.Tensor | None = None, pool: int = 4,
                     device: torch.device | str | None = None) -> GroupFeatures:
    """The configured features of every group, on ``device`` (default: the model's).

    Raises
    ------
    ModelError
        When a group's weights (or responses) hold NaN or Inf, naming the group.
    """
    if features == "weight":
        out = weight_features(model, groups)
    elif features == "activation":
        if calibration is None:
            raise MRPError("activation features need a calibration batch (--data)")
        out = activation_features(model, groups, calibration, pool=pool)
    else:
        raise MRPError(f"unknown features {features!r}")
    out = check_finite(out, "weights" if features == "weight" else "activations")
    if device is not None:
        out = GroupFeatures(out.ids, tuple(r.to(device) for r in out.rows))
    return out


def check_finite(feats: GroupFeatures, what: str) -> GroupFeatures:
    """``feats`` as they are, or a :class:`ModelError` naming the first group with NaN or Inf ``what``."""
    for gid, f in zip(feats.ids, feats.rows):
        if not bool(torch.isfinite(f.sum())):  # rows are unit-norm: the sum overflows only on NaN or Inf
            raise ModelError(f"group {gid!r} has NaN or Inf {what}: cannot measure its redundancy")
    return feats
