"""Torch-Pruning's own criteria as ``quality.py`` methods, run as a user of that library runs them.

``MetaPruner`` with the criterion's importance, the classifier left whole, stepped in
slices of ``RATIO / STEPS`` of the channels until the MACs target holds: ranked globally
across groups, or, for ``-local`` methods, the same fraction in every group. The
data-driven criteria are re-measured before every step on the model as pruned so far,
from the calibration images MRP gets and their labels:

``tp-taylor``
    ``GroupTaylorImportance`` on the gradient of the batch's cross-entropy.
``tp-hessian``
    ``GroupHessianImportance`` (optimal brain damage) on the mean of the per-sample
    squared gradients, which is what its ``accumulate_grad`` loop is meant to sum. That
    loop is not used: it needs a backward pass per image (116 s for 256 images of the
    demo here, every step), and in Torch-Pruning 1.6 it keeps only the last image's
    gradient (its accumulator is keyed by parameter but looked up by name). One
    ``torch.func.vmap`` pass gives the same mean for all images.

``tp-magnitude``, ``tp-lamp`` and ``tp-bnscale`` read the weights only.

A ViT is pruned as Torch-Pruning's ViT examples prune it: every ``nn.MultiheadAttention``
named with its heads (``num_heads``), so the stream loses the same width from every
head (``prune_head_dims``), and the model's ``hidden_dim`` updated after each step.
Torch-Pruning's slicer leaves q's scale as it was, so the scores' softmax temperature
changes with the head width (mrp_gpu's slicer rescales q): that is part of its result.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torch.func import functional_call, grad, vmap

from mrp_gpu.dependency.groups import example_input
from mrp_gpu.dependency.transformer import fix_widths

RATIO, STEPS = 0.9, 180  # at most 0.5 % of the channels per step: about a point of MACs

IMPORTANCES = {
    "tp-magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "tp-taylor": tp.importance.GroupTaylorImportance,
    "tp-taylor-local": tp.importance.GroupTaylorImportance,
    "tp-hessian": tp.importance.GroupHessianImportance,
    "tp-lamp": tp.importance.LAMPImportance,
    "tp-bnscale": tp.importance.BNScaleImportance,
}
METHODS = tuple(IMPORTANCES)
NEEDS_DATA = {"tp-taylor", "tp-taylor-local", "tp-hessian"}


def _taylor_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()


def _hessian_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = 64) -> None:
    """Every parameter's ``.grad`` set to the mean over images of its squared per-image gradient."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), y[None])

    per_image = vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=chunk)(params, images, labels)
    for name, p in model.named_parameters():
        p.grad = per_image[name].pow(2).mean(0)


GRADIENTS = {"tp-taylor": _taylor_gradients, "tp-taylor-local": _taylor_gradients, "tp-hessian": _hessian_gradients}


def prune(method: str, model: nn.Module, size, target: float, images=None, labels=None):
    """(a pruned copy of ``model``, its MACs reduction, the pruner: its history maps the channels)."""
    if method in NEEDS_DATA and (images is None or labels is None):
        raise ValueError(f"{method} scores by a loss: it needs labelled calibration images")
    model = copy.deepcopy(model).eval()  # gradients with the BN statistics fixed, as a pretrained model is read
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the copy's own
    x = example_input(size)
    base, _ = tp.utils.count_ops_and_params(model, x)
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    pruner = tp.pruner.MetaPruner(model, x, importance=IMPORTANCES[method](), pruning_ratio=RATIO,
                                  global_pruning=not method.endswith("-local"), iterative_steps=STEPS,
                                  ignored_layers=[classifier], num_heads=heads)
    macs = base
    for _ in range(STEPS):
        if macs <= (1 - target) * base:
            break
        if method in GRADIENTS:
            GRADIENTS[method](model, images, labels)
        pruner.step()
        fix_widths(model)
        macs, _ = tp.utils.count_ops_and_params(model, x)
    model.zero_grad(set_to_none=True)
    return model, 1 - macs / base, pruner
