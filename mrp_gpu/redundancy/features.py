"""Per-channel features, on the model's device.

``weight`` (data-free): channel ``c`` of a group is the concatenation of the flattened
filter of every producing convolution or linear layer (optionally with its BN
scale). ``activation``: the channel's response to a calibration batch, taken after
each normalisation layer of the group (or after the producers when there is none),
average-pooled to ``p x p``, flattened over the batch and centred, so the cosine of two
features is their Pearson correlation. Both are L2-normalised rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dependency.groups import ChannelGroup, ChannelGroups, LayerSlice
from ..errors import ModelError, MRPError
from ..linalg import gram

__all__ = ["GroupFeatures", "weight_matrix", "bn_scale", "output_scale", "consumer_energy", "weight_features",
           "activation_features", "normalize_rows", "compute_features", "is_dense", "input_rows", "row_count",
           "input_covariances"]


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


def _run_hooked(model: nn.Module, handles: list, batch: torch.Tensor, chunk: int) -> None:
    """Run ``model`` in eval mode over ``batch`` in chunks, for what its hooks collect; then
    remove the hooks and restore the model's mode."""
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for x in batch.split(chunk):
            model(x.to(device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()


def is_dense(layer: nn.Module) -> bool:
    """A layer whose every output reads every input: a linear layer or a 2-D convolution with ``groups=1``."""
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def input_rows(layer: nn.Module, x: torch.Tensor, pick: torch.Tensor | None = None) -> torch.Tensor:
    """A dense layer's input as regression rows: [positions, in_features] (a convolution's
    rows are its input patches, one column per input channel and kernel tap, padded as
    the layer pads).

    ``pick`` (indices into those rows, see :func:`row_count`) returns only them; a
    convolution's patches are then gathered tap by tap at the picked positions instead
    of unfolding every position first."""
    if not isinstance(layer, nn.Conv2d):
        rows = x.reshape(-1, x.shape[-1])
        return rows if pick is None else rows[pick]
    pads = _pads(layer)
    xp = F.pad(x, pads, mode="constant" if layer.padding_mode == "zeros" else layer.padding_mode)
    if pick is None:
        return F.unfold(xp, layer.kernel_size, layer.dilation, 0, layer.stride).transpose(1, 2) \
            .reshape(-1, layer.weight[0].numel())
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ho, wo = _conv_out(layer, x.shape[-2:], pads)
    b, at = pick // (ho * wo), pick % (ho * wo)
    oy, ox = at // wo * sh, at % wo * sw
    taps = [xp[b, :, oy + i * dh, ox + j * dw] for i in range(kh) for j in range(kw)]  # each [n, C]
    return torch.stack(taps, 2).reshape(len(pick), -1)  # columns: channel-major, then taps (unfold's order)


def _pads(layer: nn.Conv2d) -> tuple[int, int, int, int]:
    """The layer's padding as ``F.pad`` takes it: (left, right, top, bottom). ``"same"`` puts
    the odd pixel on the right and bottom, as PyTorch does."""
    if layer.padding == "valid":
        return 0, 0, 0, 0
    if layer.padding == "same":
        (h0, h1), (w0, w1) = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                              for k, d in zip(layer.kernel_size, layer.dilation)]
        return w0, w1, h0, h1
    ph, pw = layer.padding
    return pw, pw, ph, ph


def _conv_out(layer: nn.Conv2d, hw, pads) -> tuple[int, int]:
    """Output height and width of a convolution on an ``hw`` input padded by ``pads``."""
    sizes = (hw[0] + pads[2] + pads[3], hw[1] + pads[0] + pads[1])
    return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in
                 zip(sizes, layer.kernel_size, layer.stride, layer.dilation))


def row_count(layer: nn.Module, x: torch.Tensor) -> int:
    """How many rows :func:`input_rows` has for ``x``."""
    if not isinstance(layer, nn.Conv2d):
        return x.numel() // x.shape[-1]
    ho, wo = _conv_out(layer, x.shape[-2:], _pads(layer))
    return x.shape[0] * ho * wo


@torch.no_grad()
def input_covariances(model: nn.Module, names: list[str], batch: torch.Tensor, *, chunk: int = 64,
                      max_rows: int = 32768, seed: int = 0) -> dict[str, torch.Tensor]:
    """Covariance of what each dense layer in ``names`` reads on ``batch``, float64:
    ``{name: [in_features, in_features]}`` over its input rows (:func:`input_rows`), at
    most ``max_rows`` of them, drawn evenly from the chunks with ``seed``."""
    sums: dict[str, list] = {}
    per_chunk = math.ceil(max_rows / math.ceil(len(batch) / chunk))
    gen = torch.Generator().manual_seed(seed)

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach()
            n = row_count(module, x)
            pick = torch.randperm(n, generator=gen)[:per_chunk].to(x.device) if n > per_chunk else None
            x = input_rows(module, x, pick)
            acc = sums.setdefault(name, [0.0, 0.0, 0])
            acc[0] = acc[0] + gram(x.T).double()  # x^T x from its upper blocks
            acc[1] = acc[1] + x.sum(0, dtype=torch.float64)
            acc[2] += len(x)
        return hook

    _run_hooked(model, [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names], batch, chunk)
    out = {}
    for name, (xx, xs, n) in sums.items():
        mean = xs / n
        out[name] = (xx / n).addr_(mean, mean, alpha=-1.0)  # E[x x^T] - mean mean^T
    return out


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


@torch.no_grad()
def activation_features(model: nn.Module, groups: ChannelGroups, batch: torch.Tensor, *, pool: int = 4,
                        chunk: int = 64) -> GroupFeatures:
    """Data-driven features: pooled, centred responses to ``batch`` (run in chunks)."""
    taps: dict[str, list[tuple[int, LayerSlice]]] = {}
    for gi, g in enumerate(groups):
        layers = g.norms or g.producers
        for s in layers:
            taps.setdefault(s.module, []).append((gi, s))
    collected: list[list[list[torch.Tensor]]] = [[[] for _ in (g.norms or g.producers)] for g in groups]
    slot_of = {}
    for gi, g in enumerate(groups):
        for j, s in enumerate(g.norms or g.producers):
            slot_of[(gi, s.module)] = j

    def hook_for(name):
        def hook(module, args, out):
            if out.dim() == 3 and isinstance(module, (nn.Linear, nn.LayerNorm)):  # tokens: [B, T, C]
                out = out.transpose(1, 2)
            if out.dim() == 4:
                y = F.adaptive_avg_pool2d(out, pool)
            elif out.dim() == 3:
                y = F.adaptive_avg_pool1d(out, pool)
            else:
                y = out
            for gi, s in taps[name]:
                part = _by_channel(y.transpose(0, 1).flatten(1), s, groups[gi].size)
                collected[gi][slot_of[(gi, name)]].append(part.float())
        return hook

    _run_hooked(model, [model.get_submodule(name).register_forward_hook(hook_for(name)) for name in taps], batch,
                chunk)
    ids, rows = [], []
    for g, parts in zip(groups, collected):
        centred = [torch.cat(p, 1) for p in parts]
        f = torch.cat([c - c.mean(1, keepdim=True) for c in centred], 1)
        ids.append(g.id)
        rows.append(normalize_rows(f))
    return GroupFeatures(tuple(ids), tuple(rows))


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
    for gid, f in zip(out.ids, out.rows):
        if not bool(torch.isfinite(f.sum())):  # rows are unit-norm: the sum overflows only on NaN or Inf
            raise ModelError(f"group {gid!r} has NaN or Inf {'weights' if features == 'weight' else 'activations'}: "
                             "cannot measure its redundancy")
    if device is not None:
        out = GroupFeatures(out.ids, tuple(r.to(device) for r in out.rows))
    return out
