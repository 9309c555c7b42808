"""``nn.MultiheadAttention``'s projections as the dense consumers of a stream.

A stream channel of a transformer is read by two dense layers inside each attention
that no hook sees (``F.multi_head_attention_forward`` uses their weights directly):
the q/k/v projection ``in_proj_weight`` reads the channel itself, and the output
projection ``out_proj`` reads the same position of the attention's output (q, k and v
lose that position with the channel). The ``rebuild`` loss and the refit count both,
named ``"<attention>:in_proj"`` and ``"<attention>:out_proj"``: :func:`dense_layer`
gives their weights, :func:`tap` calls back with their inputs, the second one
recomputed from the attention's input. Both are read on self-attention calls without
masks only, as vision transformers make them; on other calls they are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PROJECTIONS", "Projection", "projection_name", "dense_layer", "tap"]

PROJECTIONS = ("in_proj", "out_proj")


def projection_name(attention: str, which: str) -> str:
    return f"{attention}:{which}"


@dataclass(eq=False)
class Projection:
    """One projection of an attention layer, as a dense layer: its weights ``[out, in]``."""

    weight: torch.Tensor
    name: str


def dense_layer(model: nn.Module, name: str):
    """The module ``name``, or the attention projection it names."""
    attention, _, which = name.partition(":")
    if not which:
        return model.get_submodule(name)
    mha = model.get_submodule(attention)
    return Projection(mha.in_proj_weight if which == "in_proj" else mha.out_proj.weight, name)


def _inputs(mha: nn.MultiheadAttention, args, kwargs) -> torch.Tensor | None:
    """The query of a self-attention call without masks or added keys (None for any other call)."""
    query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")[len(args):]])[:3]
    masks = [kwargs.get(k) for k in ("attn_mask", "key_padding_mask")] + [
        a for a in args[3:] if isinstance(a, torch.Tensor)]
    if key is not query or value is not query or any(m is not None for m in masks) or mha.bias_k is not None \
            or mha.add_zero_attn or kwargs.get("is_causal"):
        return None
    return query


def _context(mha: nn.MultiheadAttention, query: torch.Tensor) -> torch.Tensor:
    """What ``mha``'s output projection reads for a self-attention ``query``: its heads' outputs, concatenated."""
    x = query if mha.batch_first else query.transpose(0, 1)  # [B, L, E]
    b, n, e = x.shape
    heads = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, n, 3, mha.num_heads, e // mha.num_heads)
    q, k, v = heads.permute(2, 0, 3, 1, 4)  # each [B, heads, L, head_dim]
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, e)


def tap(model: nn.Module, name: str, fn):
    """Call ``fn(layer, x)`` with the dense input ``x`` of ``name`` (see :func:`dense_layer`)
    each time it runs. Returns the hook's handle.

    An attention's projections are tapped on self-attention calls without masks only (their
    inputs are the query there); other calls are not seen, so the loss and the refit leave
    those projections as they are."""
    attention, _, which = name.partition(":")
    if not which:
        return model.get_submodule(name).register_forward_pre_hook(lambda m, args: fn(m, args[0].detach()))
    layer = dense_layer(model, name)

    def hook(mha, args, kwargs):
        query = _inputs(mha, args, kwargs)
        if query is not None:
            fn(layer, (query if which == "in_proj" else _context(mha, query)).detach())

    return model.get_submodule(attention).register_forward_pre_hook(hook, with_kwargs=True)
