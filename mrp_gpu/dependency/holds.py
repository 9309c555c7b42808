"""Why a group of channels is left whole: what the masks, the slicer or the tracer cannot follow.

Each reason is named in :attr:`~mrp_gpu.dependency.groups.ChannelGroups.held`, so a user
sees what was not pruned and why: channels normalised together (GroupNorm, a LayerNorm
over several dimensions), cut into chunks by the model's code, mixed by a channel
shuffle, running inside an attention layer (q, k, v and heads), held by a parameter
whose dimension Torch-Pruning would cut is not theirs, or blocks of a grouped
convolution or of heads that would not stay whole.
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn
from torch_pruning.ops import OPTYPE

from .attention import inside
from .heads import is_heads_layer
from .nodes import TWO_DIMS, node_name, side
from .transformer import head_blocks, unsupported_attention, unsupported_norm

__all__ = ["why_held", "blocks_of"]

# Layers whose statistics mix channels: zeroing one is not removing it, so such groups are left whole
# (LayerNorm is masked over its kept channels instead: mrp_gpu.dependency.transformer).
_NORMALISED_TOGETHER = {OPTYPE.GN}
# Channels cut into chunks by torch.split/chunk/unbind: the sizes live in the model's code, so such groups
# are left whole too.
_SPLITS = {OPTYPE.SPLIT, OPTYPE.UNBIND}


def why_held(DG, group, watch, shuffles: dict) -> str | None:
    """Why a Torch-Pruning group is left whole (None: it is not). ``watch``: the trace's
    :class:`~mrp_gpu.dependency.attention.ActivationProducts`; ``shuffles``: the channel
    shuffles' outputs (:func:`~mrp_gpu.dependency.traceable.traceable`)."""
    for item in group.items:
        why = _held_norm(item.dep.target)
        if why is not None:  # a zeroed channel still moves the norm's statistics: masks could not be verified
            norm = item.dep.target
            return f"through {type(norm.module).__name__} {node_name(DG, norm)!r}{why}"
    std = next((item.dep.target for item in group.items if _standardised(item.dep.target.module)), None)
    if std is not None:  # each filter is normalised over its inputs: a removed input changes every filter
        return (f"through the weight-standardised convolution {node_name(DG, std)!r} "
                f"({type(std.module).__name__}), whose filters are normalised over their inputs")
    if any(item.dep.target.type in _SPLITS for item in group.items):  # the chunk sizes are in the model's code
        return "its output is split into chunks by the model's code"
    shuffle = next((shuffles[item.dep.target.grad_fn] for item in group.items
                    if item.dep.target.grad_fn in shuffles), None)
    if shuffle is not None:  # traced as an op that keeps positions: the real mapping is not known
        return f"runs through the channel shuffle of {shuffle!r}"
    through = _attention_in(DG, group, tuple(watch.found), watch.io)
    if through is not None:  # heads and q/k pairs: not prunable one channel at a time
        return f"runs through the attention {through!r}"
    odd, width = next(((item, w) for item in group.items if (w := _width(DG, item)) is not None
                       and max(item.idxs, default=-1) >= w), (None, None))
    if odd is not None:  # the trace put channels where the layer has fewer positions
        node = odd.dep.target
        if node.type == OPTYPE.PARAMETER:  # e.g. a [1, C, H, W] position embedding: channels not last
            return (f"through the parameter {node_name(DG, node)!r} {tuple(node.module.shape)}, whose dimension "
                    f"{node.pruning_dim} Torch-Pruning would cut is not these channels'")
        return (f"through {node_name(DG, node)!r}, whose {side(DG, odd)}put has {width} positions, not "
                "these channels (Torch-Pruning follows a transpose or a slice before it as if it kept them)")
    return None


def _standardised(module) -> bool:
    """A convolution that standardises its weights in its forward (timm's ``StdConv2d``, ``ScaledStdConv2d``)."""
    return isinstance(module, nn.modules.conv._ConvNd) and "StdConv" in type(module).__name__


def _held_norm(node) -> str | None:
    """Why a group through this node is left whole for its norm ("": no more to say; None: it is not)."""
    if node.type in _NORMALISED_TOGETHER:
        return ""
    why = unsupported_norm(node.module) if node.type == OPTYPE.LN else None
    return None if why is None else f": {why}"


def _attention_in(DG, group, attention, io: dict) -> str | None:
    """The attention layer a Torch-Pruning group runs through, if any (by structure, or
    nn.MultiheadAttention). ``io``: every module's inputs' and outputs' grad_fns in the trace.

    A group that only enters a heads layer (:mod:`.heads`: timm's ``Attention``) by the dense
    layer reading its input (``qkv``), and leaves by the one making its output (``proj``), is a
    stream around it: its inside has its own width (``attn_dim``). Other attention layers may
    tie their inside to their input's width in their code (MaxViT's reshapes to it), so any
    group touching them is left whole."""
    for item in group.items:
        node = item.dep.target
        name = node_name(DG, node)
        if node.type == OPTYPE.MHA:
            why = unsupported_attention(node.module)
            if why is not None:
                return f"{name}: {why}"
            continue  # its heads lose channels evenly (blocks_of): the stream is pruned through it
        found = inside(name, attention)
        if found is not None and not (found and is_heads_layer(DG.model.get_submodule(found)) and
                                      _faces_outside(DG, item, io.get(name), io.get(found))):
            return found or "the model's own forward"
    entered = {inside(node_name(DG, item.dep.target), attention) for item in group.items}
    for name in attention:  # read by weights the tracer does not see (a functional F.linear on them)
        if name and name not in entered and any(item.dep.target.grad_fn in io.get(name, ((),))[0]
                                                for item in group.items):
            return name
    return None


def _faces_outside(DG, item, layer, attention) -> bool:
    """Whether ``item`` is the side of a dense layer that reads the attention's input or
    makes its output (``layer``, ``attention``: their inputs' and outputs' grad_fns)."""
    if item.dep.target.type not in TWO_DIMS or layer is None or attention is None:
        return False
    at = 0 if side(DG, item) == "in" else 1
    return bool(layer[at]) and layer[at] <= attention[at]


def _width(DG, item) -> int | None:
    """How many positions the dimension ``item`` cuts has (None: not a weight layer or parameter)."""
    node, m = item.dep.target, item.dep.target.module
    if node.type == OPTYPE.PARAMETER:
        return m.shape[node.pruning_dim]
    if isinstance(m, nn.Linear) and node.type == OPTYPE.LINEAR:
        return m.in_features if side(DG, item) == "in" else m.out_features
    if isinstance(m, nn.modules.conv._ConvNd) and node.type in (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV):
        return m.in_channels if side(DG, item) == "in" else m.out_channels
    return None


def blocks_of(model: nn.Module, slices, size: int) -> tuple[np.ndarray | None, str | None]:
    """Block of each channel when the group runs through grouped (not depthwise) convolutions
    or the heads of ``nn.MultiheadAttention``.

    A grouped convolution only stays one if every block keeps the same number of
    channels, and attention heads only stay heads if each keeps the same width: the group
    must lose channels evenly across blocks. Returns ``(block, None)`` (``block`` None:
    no such layer), or ``(None, why)`` when the partitions of two such layers disagree or
    a block is not whole in the group.
    """
    block = None
    for s in slices:
        if s.optype == OPTYPE.MHA:
            mine, what = head_blocks(model.get_submodule(s.module), s.idxs, s.channel, size), "attention heads"
        else:
            m = model.get_submodule(s.module) if s.optype in (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV) else None
            if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups == m.in_channels != m.out_channels:
                return None, f"the depthwise convolution with a channel multiplier {s.module!r}"
            if not isinstance(m, nn.modules.conv._ConvNd) or m.groups == 1 or (
                    s.is_consumer and m.groups == m.in_channels):
                continue
            if s.is_producer and m.groups == m.in_channels == m.out_channels:
                continue  # depthwise: its channels are its input's, in this group already
            per = (m.in_channels if s.is_consumer else m.out_channels) // m.groups
            mine, what = np.full(size, -1), f"grouped convolution ({m.groups} groups)"
            mine[s.channel] = s.idxs // per
        if (mine < 0).any() or len(set(np.bincount(mine).tolist())) != 1:
            return None, f"only part of the {what} {s.module!r}"
        if block is not None and not np.array_equal(block, mine):
            return None, f"layers with different blocks of channels ({s.module!r}: {what})"
        block = mine
    return block, None
