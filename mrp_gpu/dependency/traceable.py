"""Equivalent forms of layers Torch-Pruning's tracer cannot follow, used only while tracing.

ShuffleNet v2's block splits its input with ``chunk`` and mixes its output with a
channel shuffle (view, transpose, view). The tracer follows neither: it infers the
shuffle's reshape as one of 0 channels (a division by zero), and once past it, wrong
split sizes for the chunk. While tracing, each block therefore runs a forward that
computes the same values in ops the tracer does follow: slices for the chunk, and the
shuffle as one ``index_select`` over the channels. The tracer takes that select for
an op that keeps channel positions, which the shuffle does not, so every group through
a shuffle is left whole (:func:`traceable` records the shuffles' outputs for
:func:`~mrp_gpu.dependency.groups.build_groups`). What stays prunable is what the
shuffle never touches: each block's bottleneck (its first 1x1 convolution's
outputs through the depthwise convolution), the stem and the last convolution.

Windowed attention (Swin, MaxViT) gathers its relative position bias from a table by
an index, and Swin v2 scales its scores by a learned per-head logit scale; following
those into the scores of every window costs the tracer more memory and time than a
machine has. Both are per head and never pruned, so while tracing they are constants
(detached). The layers' own methods run everywhere else (calibration, refit, the pruned
model).

Swin's patch merging concatenates the four pixels of each 2x2 patch along the channels.
The tracer sizes a concatenation's inputs by walking the graph back from it, and in a
deep Swin (``swin_s``, ``swin_b``) that walk runs out of its depth limit and the trace
fails; the same values as one reshape (space to depth) ask for no such walk. The tracer
maps that reshape's channels wrongly (as it did the concatenation's), so nothing may be
cut through it: Swin's stream is held whole (its attention reads it through weights the
tracer does not see), and only its MLPs are pruned.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn as nn

__all__ = ["traceable"]


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(x, groups)`` as one select over the channels."""
    c = x.shape[1]
    order = torch.arange(c, device=x.device).view(groups, c // groups).T.reshape(-1)
    return torch.index_select(x, 1, order)


def _shufflenet_block(outputs: dict, name: str):
    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.branch2(x[:, half:])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        out = _shuffle(out, 2)
        if out.grad_fn is not None:
            outputs[out.grad_fn] = name
        return out
    return forward


def _constant_bias(method: str):
    """A windowed attention's relative position bias, detached: a constant to the tracer."""
    def form(_outputs: dict, _name: str):
        def bias(self):
            return getattr(type(self), method)(self).detach()
        return bias
    return method, form


def _swin_v2_attention(_outputs: dict, _name: str):
    """Swin v2's attention with its per-head constants (position bias, logit scale) detached."""
    from torchvision.models.swin_transformer import shifted_window_attention

    def forward(self, x):
        return shifted_window_attention(
            x, self.qkv.weight, self.proj.weight, self.get_relative_position_bias().detach(), self.window_size,
            self.num_heads, shift_size=self.shift_size, attention_dropout=self.attention_dropout,
            dropout=self.dropout, qkv_bias=self.qkv.bias, proj_bias=self.proj.bias,
            logit_scale=self.logit_scale.detach(), training=self.training)
    return forward


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """Swin's ``_patch_merging_pad``: [..., H, W, C] to [..., H/2, W/2, 4C], the pixel (i, j) of
    each 2x2 patch at channels (2j + i)C onwards, without a concatenation."""
    *lead, h, w, c = x.shape
    x = torch.nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    h, w = h + h % 2, w + w % 2
    x = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    n = len(lead)
    return x.permute(*range(n), n, n + 2, n + 3, n + 1, n + 4).reshape(*lead, h // 2, w // 2, 4 * c)


def _patch_merging(_outputs: dict, _name: str):
    def forward(self, x):
        return self.reduction(self.norm(_space_to_depth(x)))
    return forward


def _patch_merging_v2(_outputs: dict, _name: str):
    def forward(self, x):
        return self.norm(self.reduction(_space_to_depth(x)))
    return forward


def _forms() -> dict[type, tuple[str, callable]]:
    """Per layer type: the method replaced while tracing, and what makes its replacement."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
    from torchvision.models.shufflenetv2 import InvertedResidual
    from torchvision.models.swin_transformer import (
        PatchMerging,
        PatchMergingV2,
        ShiftedWindowAttention,
        ShiftedWindowAttentionV2,
    )

    return {InvertedResidual: ("forward", _shufflenet_block),
            ShiftedWindowAttention: _constant_bias("get_relative_position_bias"),
            ShiftedWindowAttentionV2: ("forward", _swin_v2_attention),
            PatchMerging: ("forward", _patch_merging), PatchMergingV2: ("forward", _patch_merging_v2),
            RelativePositionalMultiHeadAttention: _constant_bias("get_relative_positional_bias")}


@contextlib.contextmanager
def traceable(model: nn.Module):
    """Within it, the layers of ``model`` the tracer cannot follow run their traceable forms.

    Yields ``{grad_fn: module name}`` of the channel shuffles' outputs seen while it
    is open: the groups whose channels run through one cannot be pruned."""
    forms, outputs, patched = _forms(), {}, []
    try:
        for name, module in model.named_modules():
            if type(module) in forms:
                method, form = forms[type(module)]
                setattr(module, method, types.MethodType(form(outputs, name), module))
                patched.append((module, method))
        yield outputs
    finally:
        for module, method in patched:
            delattr(module, method)  # the class's own method again
