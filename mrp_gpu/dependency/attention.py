"""Attention found by structure: the layers that multiply two activations together.

A convolution or a linear layer multiplies an activation by *weights*; attention
multiplies activations by activations (``q @ k^T``, ``attn @ v``, or one fused
``scaled_dot_product_attention``). Channels that run through such a product cannot be
removed one at a time the way a filter can (heads, ``q``/``k`` pairing), so the groups
that touch an attention layer are left whole, whatever library wrote the layer, while
the rest of the model (a transformer's MLP hidden units) is pruned as usual.

:class:`ActivationProducts` watches one forward pass (the dependency trace's): it
follows which tensors derive from the input through every torch call, and records the
innermost module running when a contraction of two such tensors happens.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ActivationProducts", "inside"]

_TAG = "_mrp_activation"
# contractions: two activations in one of these is attention (or attention-like mixing)
_PRODUCTS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
             torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.baddbmm, torch.Tensor.baddbmm,
             torch.einsum, F.scaled_dot_product_attention}
# whole attention layers in one call (nn.MultiheadAttention's): the products happen inside, unseen
_FUSED = {F.multi_head_attention_forward, torch._native_multi_head_attention}


def _tensors(tree) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts (torch calls take no other containers;
    a plain recursion costs a fraction of ``tree_flatten`` on every call of the trace)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for x in tree for t in _tensors(x)]
    if isinstance(tree, dict):
        return [t for x in tree.values() for t in _tensors(x)]
    return []


class ActivationProducts(TorchFunctionMode):
    """Records ``found``: names of the modules in which two activations were multiplied.

    Use as ``with ActivationProducts(model) as watch: model(x)`` (``x`` becomes the
    first activation); the mode keeps a stack of running modules with global hooks.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self._names = {id(m): n for n, m in model.named_modules()}
        self._stack: list[tuple[str, set]] = []  # running modules: (name, its inputs' grad_fns)
        self._handles = []
        self.found: dict[str, str] = {}  # module name -> the product seen there
        self.io: dict[str, tuple[set, set]] = {}  # every module: its inputs' and outputs' grad_fns

    def mark(self, *inputs) -> None:
        for t in _tensors(inputs):
            setattr(t, _TAG, True)

    def __enter__(self):
        def enter(module, args):
            self._stack.append((self._names.get(id(module), ""), _grad_fns(args)))

        def leave(module, _args, out):
            if self._stack:
                name, ins = self._stack.pop()
                seen = self.io.setdefault(name, (set(), set()))
                seen[0].update(ins)
                seen[1].update(_grad_fns(out))

        self._handles = [nn.modules.module.register_module_forward_pre_hook(enter),
                         nn.modules.module.register_module_forward_hook(leave)]
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles, self._stack = [], []
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        active = [t for t in _tensors((args, kwargs)) if getattr(t, _TAG, False)]
        if active:
            for t in _tensors(out):
                with contextlib.suppress(AttributeError, RuntimeError):  # e.g. tensors of C++ subclasses
                    setattr(t, _TAG, True)
            if (func in _PRODUCTS and len(active) >= 2) or func in _FUSED:
                where = next((n for n, _ in reversed(self._stack) if n), "")
                self.found.setdefault(where, getattr(func, "__name__", str(func)))
        return out


def _grad_fns(tree) -> set:
    return {t.grad_fn for t in _tensors(tree) if t.grad_fn is not None}


def inside(name: str, modules) -> str | None:
    """The module of ``modules`` that ``name`` is, or is nested in (None when none)."""
    for m in modules:
        if m == "" or name == m or name.startswith(m + "."):
            return m
    return None
