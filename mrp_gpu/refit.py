"""Least-squares refit of the layers that read pruned channels (data-driven compensation).

Pruning a group takes inputs away from its consumers (the convolutions and linear
layers that read it). ``refit`` gives each consumer new weights on the inputs
that survive, chosen so that its output on calibration images changes least: a ridge
regression, in closed form, of the *unpruned* model's output of that layer on the
*pruned* model's surviving inputs (ThiNet, Luo et al. 2017, and channel pruning,
He et al. 2017, reconstruct layers the same way). Consumers are refit in the order
the model runs them, each on the inputs the already refit layers before it give,
so errors do not pile up from layer to layer.

It is the data-driven counterpart of ``MRPConfig.compensate`` (which folds a removed
channel into one partner with a fixed scale): the survivors of a community carry
the removed members' signal as well as a linear map can. It works for any plan, so
the quality study can give the baselines the same step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from .dependency.groups import ChannelGroups, build_groups
from .executor import apply_masks
from .linalg import gram
from .plan import PruningPlan
from .redundancy.features import input_rows, is_dense, row_count

__all__ = ["refit", "RIDGE"]

RIDGE = 1e-3  # times the mean input energy: keeps the solve well posed when inputs are collinear


class _Stop(Exception):
    """Raised by a hook once the input it waits for has been seen."""


def _input_of(model: nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    """What the module ``name`` receives when ``model`` runs on ``images`` (the rest is skipped)."""
    seen = []

    def hook(_module, args):
        seen.append(args[0].detach())
        raise _Stop

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{name} did not run on the calibration batch")
    return seen[0]


def _forward_order(model: nn.Module, names: set[str], images: torch.Tensor) -> list[str]:
    order = []
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda _m, _a, n=n: order.append(n)) for n in names]
    try:
        model(images[:1])
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


def _removed_inputs(plan: PruningPlan, groups: ChannelGroups) -> dict[str, list[np.ndarray]]:
    """Per consumer module: the input positions the plan removes (one array per pruned group)."""
    removed: dict[str, list[np.ndarray]] = {}
    for gid in plan.kept:
        gone = plan.removed(gid)
        for s in groups[gid].consumers:
            pos = s.idxs[np.isin(s.channel, gone)]
            if len(pos):
                removed.setdefault(s.module, []).append(pos)
    return removed


@torch.no_grad()
def _refit_layer(model: nn.Module, masked: nn.Module, name: str, images: torch.Tensor, removed: list[np.ndarray],
                 gen: torch.Generator, *, ridge: float, max_rows: int) -> None:
    """Least squares of layer ``name`` of ``masked`` on its surviving inputs, towards the unpruned output."""
    layer = masked.get_submodule(name)
    device = images.device
    full, kept = _input_of(model, name, images), _input_of(masked, name, images)
    n = row_count(layer, full)
    pick = torch.randperm(n, generator=gen)[:max_rows].to(device) if n > max_rows else None
    x_full, x_kept = input_rows(layer, full, pick), input_rows(layer, kept, pick)
    w0 = model.get_submodule(name).weight
    target = x_full.double() @ w0.flatten(1).double().T  # the unpruned layer's output (bias aside)
    per = int(np.prod(w0.shape[2:]))  # columns per input channel
    gone = np.unique(np.concatenate(removed))
    cols = np.flatnonzero(~np.isin(np.arange(w0.shape[1] * per) // per, gone))
    x = x_kept[:, torch.as_tensor(cols, device=device)].double()
    xx = gram(x.T)  # x^T x from its upper blocks
    xx.diagonal().add_(ridge * float(xx.diagonal().mean().clamp_min(1e-12)))
    w = torch.linalg.solve(xx, x.T @ target).T  # [out, kept columns]
    flat = layer.weight.view(layer.weight.shape[0], -1)
    flat[:, torch.as_tensor(cols, device=device)] = w.to(flat.dtype)


@torch.no_grad()
def refit(model: nn.Module, plan: PruningPlan, images: torch.Tensor, groups: ChannelGroups | None = None, *,
          ridge: float = RIDGE, max_rows: int = 32768, seed: int = 0) -> tuple[nn.Module, PruningPlan]:
    """Refit the consumers of pruned channels by least squares; slice the result with the plan returned.

    Parameters
    ----------
    model : nn.Module
        The unpruned model (left unchanged).
    plan : PruningPlan
        What to prune.
    images : Tensor [B, C, H, W]
        Calibration images (training data, never the test set).
    ridge : float
        Ridge penalty, relative to the mean diagonal of the inputs' Gram matrix.
    max_rows : int
        At most this many positions (images x output pixels, sampled with ``seed``)
        per regression.

    Returns
    -------
    masked : nn.Module
        A copy of ``model`` with the plan's channels masked and the consumers refit.
    plan : PruningPlan
        The plan without its ``merges`` (the refit supersedes them: it sets every
        surviving input weight of a consumer). ``slice_model(masked, plan)`` is the
        pruned model, and ``masked_vs_sliced`` checks it as usual.

    Notes
    -----
    Dense convolutions (2-D, ``groups=1``) and linear layers are refit; other
    consumers keep their weights. The BN statistics are not touched: re-estimate
    them after (``mrp_gpu.finetune.recalibrate_bn``).

    Examples
    --------
    >>> import torch, mrp_gpu
    >>> from mrp_gpu.models import create_model
    >>> from mrp_gpu.refit import refit
    >>> model = create_model("demo")
    >>> p = mrp_gpu.plan(model, (1, 28, 28), target_flops=0.5, method="l1")
    >>> masked, p = refit(model, p, torch.randn(32, 1, 28, 28))
    >>> pruned = mrp_gpu.apply_plan(masked, p)
    """
    groups = groups or build_groups(model, plan.input_size)
    plan = dataclasses.replace(plan, merges=[])
    masked = apply_masks(model, plan, groups).eval()
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device)
    removed = _removed_inputs(plan, groups)
    gen = torch.Generator().manual_seed(seed)
    try:
        for name in _forward_order(model, set(removed), images):
            layer = masked.get_submodule(name)
            if not is_dense(layer):
                continue
            _refit_layer(model, masked, name, images, removed[name], gen, ridge=ridge, max_rows=max_rows)
    finally:
        model.train(was)
    return masked, plan
