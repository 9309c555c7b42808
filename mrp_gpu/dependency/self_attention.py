"""``nn.MultiheadAttention`` used as self-attention, rewritten in heads so whole heads can go.

``nn.MultiheadAttention`` ties the width of q, k and v to its input's
(``embed_dim = num_heads x head_dim`` for both): it can lose a head only with as many
stream channels, and a stream channel only with a position of every head. Where a
forward pass calls it as self-attention (query, key and value one tensor, batch
first, no masks, no attention weights asked for), :class:`SelfAttention` computes the
same with its own two projections, ``qkv`` (rows ``[q | k | v]``, the in-projection's
rows in its order) and ``proj`` (the out-projection): the layout :mod:`.heads` cuts in
whole heads, and whose stream (``qkv``'s inputs, ``proj``'s outputs) is pruned apart
from its heads, each head keeping its width and its softmax scale.

:func:`split_self_attention` makes that swap in place, :func:`with_heads` makes it on a
copy, and :func:`traced` does that and traces the result. The entry points that take a
user's model (:mod:`mrp_gpu.api`, ``refit``, the executor's copies, the command line)
call them, so a plan, its masked model and its sliced model name the same layers. Any
other ``nn.MultiheadAttention`` stays as it is and is pruned through its stream only
(:mod:`.transformer`).
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torch_pruning.utils import op_counter

from ..errors import ModelError
from . import TRACE_TIMEOUT
from .groups import ChannelGroups, build_groups, example_input, model_device
from .transformer import replace_module

__all__ = ["SelfAttention", "split_self_attention", "with_heads", "traced"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``qkv`` and ``proj`` layers, called like the
    ``nn.MultiheadAttention`` it replaces (``attn(x, x, x, need_weights=False)``) and
    returning ``(output, None)``. Inputs are batch first."""

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ModelError(f"SelfAttention: embed_dim {embed_dim} is not a multiple of {num_heads} heads")
        self.num_heads, self.head_dim, self.attn_dim = num_heads, embed_dim // num_heads, embed_dim
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    @torch.no_grad()
    def from_mha(cls, mha: nn.MultiheadAttention) -> SelfAttention:
        """The same computation as ``mha`` (its weights copied, on its device and dtype)."""
        new = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, dropout=mha.dropout)
        new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        pairs = [(new.qkv.weight, mha.in_proj_weight), (new.proj.weight, mha.out_proj.weight)]
        if mha.in_proj_bias is not None:
            pairs += [(new.qkv.bias, mha.in_proj_bias), (new.proj.bias, mha.out_proj.bias)]
        for mine, theirs in pairs:
            mine.copy_(theirs)
            mine.requires_grad_(theirs.requires_grad)
        return new.train(mha.training)

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not _plain_call(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            raise ModelError("SelfAttention computes self-attention only (query, key and value one tensor, no "
                             "masks, need_weights=False): this call asks for more")
        b, n, _ = query.shape
        q, k, v = self.qkv(query).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.attn_dim)), None


def _plain_call(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal) -> bool:
    return ((key is None or key is query) and (value is None or value is query) and key_padding_mask is None
            and attn_mask is None and not need_weights and not is_causal)


# Torch-Pruning's counter counts it as it counts timm's Attention (the same two projections)
op_counter.MODULES_MAPPING[SelfAttention] = op_counter.timm_multihead_attention_counter_hook

_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)
_SAME = 1e-4  # the rewritten model's outputs within this fraction of their scale: it computes the same


def _convertible(mha: nn.MultiheadAttention) -> bool:
    return (mha.batch_first and mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn
            and mha.embed_dim % mha.num_heads == 0)


def _self_attention_layers(model: nn.Module, input_size) -> tuple[list[str], list[torch.Tensor]]:
    """The ``nn.MultiheadAttention`` layers one forward pass at ``input_size`` calls only as
    plain self-attention (what :class:`SelfAttention` computes), and that pass's outputs."""
    layers = {m: n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention) and _convertible(m)}
    if not layers:
        return [], []
    verdict: dict[str, bool] = {}

    def probe(m, args, kwargs):
        call = _MHA_SIGNATURE.bind(m, *args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        plain = _plain_call(a["query"], a["key"], a["value"], a["key_padding_mask"], a["need_weights"],
                            a["attn_mask"], a["is_causal"])
        verdict[layers[m]] = verdict.get(layers[m], True) and plain and a["query"].dim() == 3

    handles = [m.register_forward_pre_hook(probe, with_kwargs=True) for m in layers]
    try:
        outputs = _outputs(model, input_size)
    finally:
        for h in handles:
            h.remove()
    return [name for name, plain in verdict.items() if plain], outputs


def split_self_attention(model: nn.Module, input_size) -> list[str]:
    """Replace, in place, every ``nn.MultiheadAttention`` of ``model`` called as plain
    self-attention by the :class:`SelfAttention` computing the same; returns their names
(one per layer: its first in ``named_modules()``; a layer shared under several parents
is replaced under each).

    The model is run again after the swap: where its own code reads more of the attention
    than its call (``nn.TransformerEncoderLayer`` reads its attributes for a fast path) or
    the outputs change, every swap is undone and nothing is returned."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return []
    names, before = _self_attention_layers(model, input_size)
    if not names:
        return []
    # a module shared under several parents is one layer: every name it has gets the same rewrite
    everywhere = list(model.named_modules(remove_duplicate=False))
    swaps = []
    for name in names:
        mha = model.get_submodule(name)
        swaps.append((mha, SelfAttention.from_mha(mha), [n for n, m in everywhere if m is mha]))
    for _, new, aliases in swaps:
        for alias in aliases:
            replace_module(model, alias, new)
    try:
        after = _outputs(model, input_size)
        same = len(after) == len(before) and all(
            a.shape == b.shape and float((a - b).abs().max()) <= _SAME * max(float(b.abs().max()), 1e-6)
            for a, b in zip(after, before))
    except Exception:  # whatever the model's own code trips on, the swap is undone
        same = False
    if not same:
        for mha, _, aliases in swaps:
            for alias in aliases:
                replace_module(model, alias, mha)
        return []
    return names


def _outputs(model: nn.Module, input_size) -> list[torch.Tensor]:
    """The model's output tensors on the fixed example input, in eval mode."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(example_input(input_size, device=model_device(model)))
    finally:
        model.train(was_training)
    return [t.float() for t in tp.utils.flatten_as_list(out)]


def with_heads(model: nn.Module, input_size) -> nn.Module:
    """``model``, or a copy of it with its self-attention rewritten (:func:`split_self_attention`):
    the user's model is never changed."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return model
    probe = copy.deepcopy(model)
    return probe if split_self_attention(probe, input_size) else model


def traced(model: nn.Module, input_size, *, device=None,
           timeout: float | None = TRACE_TIMEOUT) -> tuple[nn.Module, ChannelGroups]:
    """``(model as mrp_gpu prunes it, its groups)``: :func:`with_heads`, then
    :func:`~mrp_gpu.dependency.groups.build_groups` on it."""
    model = with_heads(model, input_size)
    return model, build_groups(model, input_size, device=device, timeout=timeout)
