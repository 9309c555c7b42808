"""What pruning a transformer's residual stream takes: LayerNorms, ``nn.MultiheadAttention``.

A stream channel runs through every LayerNorm of the stream and through every
``nn.MultiheadAttention`` reading it. Both need more than zeroing or slicing weights:

- **LayerNorm** normalises over all its channels, so a zeroed channel still moves
  the mean and variance of the others: zeroing is not removing. The masked model
  therefore runs each such norm through :class:`KeptChannelsNorm`, which normalises
  over the kept channels only and leaves zeros elsewhere. That is exactly what the
  sliced norm computes, at the unsliced width, so the masked-vs-sliced check keeps its
  float-rounding tolerance, and the refit regresses on the consumers' real,
  re-normalised inputs.
- **nn.MultiheadAttention** ties its q, k, v width to the stream (``embed_dim``):
  Torch-Pruning removes a stream channel together with the same position of q, k and
  v. Heads are contiguous blocks of ``head_dim`` positions, so each head must lose the
  same number (:func:`head_blocks`), and the softmax scale ``1/sqrt(head_dim)``
  changes with ``head_dim``: slicing multiplies q's projection by
  ``sqrt(new/old)`` (:func:`slice_attention`) so the scores stay what they were.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch_pruning.ops import OPTYPE
from torch_pruning.pruner.function import PrunerBox

from ..errors import ModelError

__all__ = ["KeptChannelsNorm", "mask_norm", "unmask_norms", "mask_attention", "slice_attention", "head_blocks",
           "fix_widths", "replace_module", "unsupported_norm", "unsupported_attention"]


def unsupported_norm(norm: nn.Module) -> str | None:
    """Why the channels of this LayerNorm cannot be pruned (None: they can)."""
    shape = getattr(norm, "normalized_shape", ())
    if len(shape) != 1:
        return f"it normalises over {len(shape)} dimensions {tuple(shape)}"
    return None


def unsupported_attention(mha: nn.MultiheadAttention) -> str | None:
    """Why the channels of this attention layer cannot be pruned (None: they can)."""
    if not mha._qkv_same_embed_dim:
        return "its keys or values have their own width (kdim, vdim)"
    if mha.embed_dim % mha.num_heads:
        return f"embed_dim {mha.embed_dim} is not a multiple of its {mha.num_heads} heads"
    return None


def head_blocks(mha: nn.MultiheadAttention, idxs: np.ndarray, channel: np.ndarray, size: int) -> np.ndarray:
    """The head of each group channel that runs through ``mha`` (-1: it does not)."""
    block = np.full(size, -1)
    block[channel] = idxs // (mha.embed_dim // mha.num_heads)
    return block


def _kept_layer_norm(kept: torch.Tensor, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``F.layer_norm`` over the last dimension's ``kept`` positions; zero at the others."""
    k = kept.to(x.device)
    y = F.layer_norm(x.index_select(-1, k), (len(k),), None if weight is None else weight[k],
                     None if bias is None else bias[k], eps)
    return x.new_zeros(x.shape, dtype=y.dtype).index_copy(-1, k, y)  # y: float32 under autocast


class _KeptLayerNorm(TorchFunctionMode):
    """Within it, ``F.layer_norm`` normalises over the ``keep`` positions only."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.kept = keep.nonzero().squeeze(1)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.layer_norm:
            self.calls += 1
            return _kept_layer_norm(self.kept, *args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class KeptChannelsNorm(nn.Module):
    """``norm`` computed over the channels ``keep`` only, zero on the others: at full width,
    what the sliced norm computes. Only masked models hold it (:func:`unmask_norms`)."""

    def __init__(self, norm: nn.Module, keep: torch.Tensor):
        super().__init__()
        self.norm = norm
        self.register_buffer("keep", keep.to(torch.bool), persistent=False)

    def forward(self, *args, **kwargs):
        with _KeptLayerNorm(self.keep) as mode:
            out = self.norm(*args, **kwargs)
        if mode.calls == 0:  # its own statistics (a fused kernel): it cannot be masked, so refuse
            raise ModelError(f"{type(self.norm).__name__} does not compute through F.layer_norm: "
                             "mrp_gpu cannot mask its channels")
        return out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``model`` is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def mask_norm(model: nn.Module, name: str, removed: np.ndarray) -> None:
    """Make the LayerNorm ``name`` of a masked model normalise over its kept channels."""
    norm = model.get_submodule(name)
    keep = torch.ones(norm.normalized_shape[0], dtype=torch.bool)
    keep[torch.as_tensor(removed, dtype=torch.long)] = False
    device = norm.weight.device if norm.weight is not None else "cpu"
    replace_module(model, name, KeptChannelsNorm(norm, keep.to(device)))


def unmask_norms(model: nn.Module) -> None:
    """Put back the plain norms :func:`mask_norm` wrapped (in place)."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, KeptChannelsNorm)]
    for name in wrapped:
        replace_module(model, name, model.get_submodule(name).norm)


@torch.no_grad()
def mask_attention(mha: nn.MultiheadAttention, removed: np.ndarray) -> None:
    """Zero stream channels ``removed`` of ``mha`` and the same positions of its q, k and v."""
    e = mha.embed_dim
    idx = torch.as_tensor(removed, dtype=torch.long, device=mha.in_proj_weight.device)
    rows = torch.cat([idx, idx + e, idx + 2 * e])
    mha.in_proj_weight[rows] = 0
    mha.in_proj_weight[:, idx] = 0
    if mha.in_proj_bias is not None:
        mha.in_proj_bias[rows] = 0
    for p in (mha.bias_k, mha.bias_v):
        if p is not None:
            p[..., idx] = 0
    out = mha.out_proj
    out.weight[idx] = 0
    out.weight[:, idx] = 0
    if out.bias is not None:
        out.bias[idx] = 0


@torch.no_grad()
def slice_attention(mha: nn.MultiheadAttention, removed: np.ndarray) -> None:
    """Remove stream channels ``removed`` (Torch-Pruning's slicer), keeping the attention scores."""
    old = mha.embed_dim // mha.num_heads
    PrunerBox[OPTYPE.MHA].prune_out_channels(mha, removed.tolist())
    new = mha.embed_dim // mha.num_heads
    factor = math.sqrt(new / old)  # q k^T / sqrt(new) with q scaled so: q k^T / sqrt(old), as before
    mha.in_proj_weight[:mha.embed_dim].mul_(factor)
    if mha.in_proj_bias is not None:
        mha.in_proj_bias[:mha.embed_dim].mul_(factor)


def fix_widths(model: nn.Module) -> None:
    """Update the width attributes a model's own ``forward`` reads after its stream was sliced."""
    from torchvision.models.vision_transformer import VisionTransformer

    for m in model.modules():
        if isinstance(m, VisionTransformer):  # _process_input reshapes to (n, hidden_dim, patches)
            m.hidden_dim = m.conv_proj.out_channels
