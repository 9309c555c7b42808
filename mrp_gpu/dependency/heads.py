"""Attention heads as prunable units, for attention layers with their own projections (timm's ``Attention``).

Such a layer makes q, k and v of every head with one linear layer (``qkv``: rows
``[q | k | v]``, each ``num_heads x head_dim``) and reads every head's output with
another (``proj``). A head is one unit: its ``3 x head_dim`` rows of ``qkv`` and its
``head_dim`` columns of ``proj``. Removing it leaves every other head as it was
(``head_dim`` and the softmax scale do not change), so the masked model, whose removed
heads have q, k and v zero and therefore output zero, computes what the sliced one
does; slicing updates ``num_heads`` and ``attn_dim`` (:func:`fix_heads`). The
``rebuild`` loss scores a head as the block of ``head_dim`` inputs of ``proj`` it
feeds, and the refit refits ``proj`` on the heads left.

The layer is recognised by its layout, not its class: ``qkv`` and ``proj`` linear
layers, ``num_heads``, ``head_dim`` and ``attn_dim`` that agree with them, and nothing
else at the attention's width (no gate, no norm over the heads' outputs).
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn
from torch_pruning.ops import OPTYPE

from .nodes import node_name, side

__all__ = ["is_heads_layer", "head_layout", "head_channels", "fix_heads"]


def is_heads_layer(m: nn.Module) -> bool:
    """Whether ``m`` is laid out in heads (the module docstring says how)."""
    qkv, proj = getattr(m, "qkv", None), getattr(m, "proj", None)
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return False
    heads, dim, width = (getattr(m, a, None) for a in ("num_heads", "head_dim", "attn_dim"))
    if not all(isinstance(v, int) for v in (heads, dim, width)) or width != heads * dim:
        return False
    return (qkv.out_features == 3 * width and proj.in_features == width and getattr(m, "gate", None) is None
            and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity))


def head_layout(model: nn.Module, DG, group, attention) -> tuple[str, list] | None:
    """``(attention layer, [its qkv item, its proj item])`` when the Torch-Pruning ``group``
    is the inside of an attention layer of ``attention`` (names) laid out in heads; None otherwise."""
    qkv = next((item for item in group.items if item.dep.target.type == OPTYPE.LINEAR and side(DG, item) == "out"
                and node_name(DG, item.dep.target).endswith(".qkv")), None)
    if qkv is None:
        return None
    name = node_name(DG, qkv.dep.target).removesuffix(".qkv")
    if name not in attention or not is_heads_layer(layer := model.get_submodule(name)):
        return None
    proj = [item for item in group.items if item.dep.target.module is layer.proj and side(DG, item) == "in"]
    dense = [item for item in group.items if item.dep.target.type in (OPTYPE.LINEAR, OPTYPE.CONV)]
    if len(proj) != 1 or len(dense) != 2 or len(qkv.idxs) != layer.qkv.out_features:
        return None  # the group reaches other layers at the attention's width: not only heads
    return name, [qkv, proj[0]]


def head_channels(layer: nn.Module) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((qkv rows, their head), (proj columns, their head))``."""
    rows, cols = np.arange(layer.qkv.out_features), np.arange(layer.attn_dim)
    return (rows, rows % layer.attn_dim // layer.head_dim), (cols, cols // layer.head_dim)


def fix_heads(model: nn.Module, layers) -> None:
    """After slicing: ``num_heads`` and ``attn_dim`` of the heads layers named in ``layers``
    (the groups' :attr:`~mrp_gpu.dependency.groups.ChannelGroup.heads`), from what ``qkv`` kept."""
    for name in layers:
        m = model.get_submodule(name)
        m.num_heads = m.qkv.out_features // (3 * m.head_dim)
        m.attn_dim = m.num_heads * m.head_dim
