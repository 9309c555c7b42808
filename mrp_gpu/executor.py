"""Carry out a plan: masks first, then physical slicing; save and load without pickle.

``apply_masks`` zeroes every pruned channel wherever it lives (producer filters and
biases, normalisation scales and shifts, consumer input weights, attention's q, k, v),
and runs each LayerNorm over its kept channels only (a norm that does not compute through
``F.layer_norm`` is refused), so the masked model computes exactly what the sliced one
will (:mod:`mrp_gpu.dependency.transformer`). A plan's ``merges`` (the ``compensate``
option) are folded into the consumers first, in both. ``slice_model`` removes the
channels with Torch-Pruning's pruning functions, one call per layer dimension with
the union of every group's positions in it (so concatenations never see shifted
offsets). Both work on a copy: the caller's model is never left half changed.

A pruned model is stored as ``model.safetensors`` plus ``arch.json`` (base model name,
its arguments, kept channels) and rebuilt by :func:`load_pruned`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch_pruning.ops import OPTYPE
from torch_pruning.pruner.function import PrunerBox

from .dependency.groups import ChannelGroups, LayerSlice, build_groups
from .dependency.heads import fix_heads
from .dependency.self_attention import split_self_attention
from .dependency.transformer import fix_widths, mask_attention, mask_norm, slice_attention, unmask_norms
from .errors import PlanError, WeightsError, stage
from .io import atomic_write_bytes, atomic_write_text
from .plan import PruningPlan

__all__ = ["check_plan", "apply_masks", "slice_model", "save_pruned", "load_pruned", "ARCH_VERSION"]

ARCH_VERSION = 2  # 2: self-attention saved in heads (qkv, proj), as the slicer rewrites it


def check_plan(plan: PruningPlan, groups: ChannelGroups) -> None:
    """Refuse a plan made for another model: every group must exist with its width, and
    the model must have no group the plan does not know (e.g. heads an older plan kept whole)."""
    for gid, n in plan.sizes.items():
        if gid not in groups:
            raise PlanError(f"plan group {gid!r} does not exist in this model (plan made for {plan.model!r}?)")
        if groups[gid].size != n:
            raise PlanError(f"plan group {gid!r} has {n} channels, the model's has {groups[gid].size} "
                            f"(plan made for {plan.model!r}?)")
    unknown = [gid for gid in groups.ids if gid not in plan.sizes]
    if unknown:
        raise PlanError(f"this model has channel groups the plan does not know, e.g. {unknown[0]!r} (plan made for "
                        f"another model than {plan.model!r}, or by an older mrp_gpu: make it again)")


def removed_positions(plan: PruningPlan, groups: ChannelGroups) -> dict:
    """(module, dim) -> (a slice of it, sorted positions to remove), merged over groups."""
    check_plan(plan, groups)
    out: dict[tuple[str, str], tuple[LayerSlice, list]] = {}
    for gid in plan.kept:
        removed = plan.removed(gid)
        if len(removed) == 0:
            continue
        for s in groups[gid].slices:
            pos = s.idxs[np.isin(s.channel, removed)]
            key = (s.module, s.dim)
            out.setdefault(key, (s, []))[1].append(pos)
    return {k: (s, np.unique(np.concatenate(p))) for k, (s, p) in out.items()}


@torch.no_grad()
def _fold_merges(model: nn.Module, plan: PruningPlan, groups: ChannelGroups) -> None:
    """Compensation: add each removed channel's consumer weights to its partner's (in order)."""
    for m in plan.merges:
        for s in groups[m["group"]].consumers:
            layer = model.get_submodule(s.module)
            src = torch.as_tensor(s.idxs[s.channel == m["channel"]])
            dst = torch.as_tensor(s.idxs[s.channel == m["into"]])
            if len(src) == 0 or len(src) != len(dst):  # a consumer of part of the group: it reads only one
                continue
            if getattr(layer, "groups", 1) > 1:  # the two channels feed different filters: nothing to fold
                continue
            dim = 0 if getattr(layer, "transposed", False) else 1
            w = layer.weight
            w.index_add_(dim, dst.to(w.device), w.index_select(dim, src.to(w.device)) * float(m["scale"]))


def _resolve(model: nn.Module, s: LayerSlice):
    if s.optype == OPTYPE.PARAMETER:
        return model.get_parameter(s.module)
    return model.get_submodule(s.module)


@torch.no_grad()
def _zero(obj, s: LayerSlice, pos: np.ndarray) -> None:
    idx = torch.as_tensor(pos, dtype=torch.long)
    if s.optype == OPTYPE.PARAMETER:
        obj.index_fill_(s.pruning_dim % obj.dim(), idx.to(obj.device), 0)
        return
    m = obj
    if s.optype == OPTYPE.MHA:
        mask_attention(m, pos)
        return
    first = next(m.parameters(), None)
    if first is None:  # e.g. a LayerNorm without affine parameters: nothing to zero
        return
    idx = idx.to(first.device)
    if s.optype == OPTYPE.CONV and s.dim == "in":
        transposed = getattr(m, "transposed", False)
        if m.groups == 1:
            m.weight.index_fill_(0 if transposed else 1, idx, 0)
        else:  # grouped: input channel i feeds only the filters of its own group
            per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
            for i in pos.tolist():
                g, j = divmod(i, per_in)
                m.weight[g * per_out:(g + 1) * per_out, j] = 0
        return
    if s.optype == OPTYPE.LINEAR and s.dim == "in":
        m.weight.index_fill_(1, idx, 0)
        return
    for name, p in m.named_parameters(recurse=False):
        if s.optype == OPTYPE.CONV and getattr(m, "transposed", False) and name == "weight":
            p.index_fill_(1, idx, 0)
        else:
            p.index_fill_(s.pruning_dim % p.dim() if s.optype == OPTYPE.LN else 0, idx, 0)


def apply_masks(model: nn.Module, plan: PruningPlan, groups: ChannelGroups | None = None) -> nn.Module:
    """A copy of ``model`` with the plan's pruned channels zeroed (same shapes).

    Without ``groups``, the copy's self-attention is first rewritten in heads, as the plan's
    model was (:func:`~mrp_gpu.dependency.self_attention.split_self_attention`); ``groups``
    given are those of ``model`` as it is.
    """
    masked = copy.deepcopy(model)
    unmask_norms(masked)  # a masked model is masked afresh
    if groups is None:
        split_self_attention(masked, plan.input_size)
        groups = build_groups(masked, plan.input_size)
    positions = removed_positions(plan, groups)
    with stage("masking", masked):
        _fold_merges(masked, plan, groups)
        for s, pos in positions.values():
            _zero(_resolve(masked, s), s, pos)
            if s.optype == OPTYPE.LN:
                mask_norm(masked, s.module, pos)
    return masked


def slice_model(model: nn.Module, plan: PruningPlan, groups: ChannelGroups | None = None) -> nn.Module:
    """A copy of ``model`` with the plan's pruned channels physically removed.

    Without ``groups``, the copy's self-attention is first rewritten in heads, as the plan's
    model was (:func:`~mrp_gpu.dependency.self_attention.split_self_attention`); ``groups``
    given are those of ``model`` as it is.
    """
    sliced = copy.deepcopy(model)
    unmask_norms(sliced)
    if groups is None:
        split_self_attention(sliced, plan.input_size)
        groups = build_groups(sliced, plan.input_size)
    positions = removed_positions(plan, groups)
    with stage("slicing", sliced):
        _fold_merges(sliced, plan, groups)
        for s, pos in positions.values():
            target = _resolve(sliced, s)
            if s.dim == "in" and _is_grouped(target):
                _slice_grouped_inputs(target, pos)
                continue
            if s.optype == OPTYPE.MHA:
                slice_attention(target, pos)
                continue
            pruner = PrunerBox[s.optype]
            fn = pruner.prune_in_channels if s.dim == "in" else pruner.prune_out_channels
            pruner.pruning_dim = s.pruning_dim
            result = fn(target, pos.tolist())
            if s.optype == OPTYPE.PARAMETER:  # a new Parameter replaces the old one
                parent, _, attr = s.module.rpartition(".")
                setattr(sliced.get_submodule(parent) if parent else sliced, attr, result)
        fix_widths(sliced)
        fix_heads(sliced, [g.heads for g in groups if g.heads is not None])
    return sliced


def _is_grouped(m) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and 1 < m.groups < m.in_channels


@torch.no_grad()
def _slice_grouped_inputs(conv: nn.Module, pos: np.ndarray) -> None:
    """Remove input channels ``pos`` of a grouped convolution, the same number from each group.

    Each group's filters read only its own inputs, so each keeps its own positions
    (Torch-Pruning's slicer would keep the first group's positions for all).
    """
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    gone = np.zeros(conv.in_channels, dtype=bool)
    gone[pos] = True
    keep = ~gone.reshape(conv.groups, per_in)
    if len(set(keep.sum(1).tolist())) != 1:
        raise PlanError(f"grouped convolution with {conv.groups} groups: the plan removes different numbers of "
                        "input channels from its groups")
    w = conv.weight.detach()
    rows = [w[b * per_out:(b + 1) * per_out][:, torch.as_tensor(np.flatnonzero(keep[b]), device=w.device)]
            for b in range(conv.groups)]
    conv.weight = nn.Parameter(torch.cat(rows), requires_grad=conv.weight.requires_grad)
    conv.in_channels = int(keep.sum())


# ------------------------------------------------------------------------- saving
def save_pruned(directory: str | Path, sliced: nn.Module, plan: PruningPlan, model_kwargs: dict) -> None:
    """Write ``model.safetensors`` and ``arch.json`` into ``directory`` (each atomically)."""
    from safetensors.torch import save

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in sliced.state_dict().items()}
    atomic_write_bytes(directory / "model.safetensors", save(state))
    arch = {"version": ARCH_VERSION, "model": plan.model, "model_kwargs": model_kwargs,
            "input_size": list(plan.input_size), "sizes": plan.sizes,
            "kept": {k: list(v) for k, v in plan.kept.items()}}
    atomic_write_text(directory / "arch.json", json.dumps(arch, indent=1))


def load_pruned(path: str | Path, device="cpu") -> nn.Module:
    """Rebuild a pruned model from ``model.safetensors`` + ``arch.json`` (no pickle).

    Parameters
    ----------
    path : str or Path
        The directory ``mrp-gpu prune`` or ``save_pruned`` wrote.
    """
    from .models import create_model, load_state_dict_file

    path = Path(path)
    arch_file, weights_file = path / "arch.json", path / "model.safetensors"
    for f in (arch_file, weights_file):
        if not f.is_file():
            raise PlanError(f"{str(path)!r} is not a pruned model directory: {f.name} is missing")
    try:
        arch = json.loads(arch_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanError(f"{str(arch_file)!r} is not valid JSON: {e}") from None
    if not isinstance(arch, dict) or arch.get("version") != ARCH_VERSION:
        raise PlanError(f"{str(arch_file)!r}: version: expected {ARCH_VERSION}, "
                        f"got {arch.get('version') if isinstance(arch, dict) else arch!r}"[:300])
    for key, kind in (("model", str), ("model_kwargs", dict), ("input_size", list), ("sizes", dict), ("kept", dict)):
        if not isinstance(arch.get(key), kind):
            raise PlanError(f"{str(arch_file)!r}: {key}: expected {kind.__name__}, got {arch.get(key)!r}"[:300])
    plan = PruningPlan.from_dict({"version": 1, "model": arch["model"], "input_size": arch["input_size"],
                                  "sizes": arch["sizes"], "kept": arch["kept"], "method": "saved"},
                                 source=str(arch_file))
    kwargs = arch["model_kwargs"]
    if set(kwargs) - {"num_classes", "in_chans"} or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in kwargs.values()):
        raise PlanError(f"{str(arch_file)!r}: model_kwargs: only integer num_classes and in_chans are allowed")
    base = create_model(arch["model"], weights=None, **kwargs)
    sliced = slice_model(base, plan)
    state = load_state_dict_file(weights_file)
    own = sliced.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape] + [k for k in state if k not in own]
    if bad:
        raise WeightsError(f"{str(weights_file)!r} does not match {str(arch_file)!r}: "
                           f"{len(bad)} tensors differ, first {bad[0]!r}")
    sliced.load_state_dict(state)
    return sliced.to(device).eval()
