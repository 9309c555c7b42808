"""Least-squares refit of the layers that read pruned channels (data-driven compensation).

Pruning a group takes inputs away from its consumers (the convolutions and linear
layers that read it). ``refit`` gives each consumer new weights on the inputs
that survive, chosen so that its output on calibration images changes least: a ridge
regression, in closed form, of the *unpruned* model's output of that layer on the
*pruned* model's surviving inputs (ThiNet, Luo et al. 2017, and channel pruning,
He et al. 2017, reconstruct layers the same way). Consumers are refit in the order
the model runs them, each on the inputs the already refit layers before it give,
so errors do not pile up from layer to layer. That takes one pass of each model over
the images, side by side (:func:`lockstep_refit`): the unpruned model's forward, in a
thread, hands each layer's targets to the pruned model's forward, which fits the layer
when it reaches it.

It is the data-driven counterpart of ``MRPConfig.compensate`` (which folds a removed
channel into one partner with a fixed scale): the survivors of a community carry
the removed members' signal as well as a linear map can. It works for any plan, so
the quality study can give the baselines the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading

import numpy as np
import torch
import torch.nn as nn
from torch_pruning.ops import OPTYPE

from .dependency.groups import ChannelGroups
from .dependency.projections import dense_layer, tap
from .dependency.self_attention import traced
from .errors import ModelError
from .executor import apply_masks, removed_positions
from .hooks import hooked
from .linalg import gram
from .plan import PruningPlan
from .redundancy.calibration import input_rows, is_dense, row_count

__all__ = ["refit", "RIDGE", "REFIT_IMAGES", "lockstep_refit", "forward_order"]

RIDGE = 1e-3  # times the mean input energy: keeps the solve well posed when inputs are collinear
# the refit's pass holds both models' activations for all its images at once, so its memory grows
# with them (benchmarks/results/throughput_cpu.md): it reads at most this many calibration images
REFIT_IMAGES = 256


class _Stop(Exception):
    """Raised by a hook once the last input it waits for has been seen."""


class _Failed(Exception):
    """The other side of the lockstep stopped with an error."""


class _Lockstep:
    """A bounded queue between the two forward passes of :func:`refit`: the unpruned model's
    pass (a thread) puts each layer's targets, the masked model's pass takes them, so at most
    ``depth`` layers' targets wait at once (plus the one being made and the one being used).
    ``close`` wakes whichever side waits when the other one stops."""

    def __init__(self, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(depth)
        self.closed = threading.Event()

    def put(self, item) -> None:
        while not self.closed.is_set():
            try:
                return self.queue.put(item, timeout=0.05)
            except queue.Full:
                continue
        raise _Failed

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.closed.is_set() and self.queue.empty():
                    raise _Failed from None

    def close(self) -> None:
        self.closed.set()


def _hooked_run(module: nn.Module, names: list[str], images: torch.Tensor, on_input) -> None:
    """Run ``module`` on ``images`` (no grad), calling ``on_input(name, layer, x)`` at the first
    call of each layer in ``names``; stop once the last of them has been seen."""
    left = set(names)

    def hook_for(name):
        def hook(layer, x):
            if name in left:
                left.discard(name)
                on_input(name, layer, x)
                if not left:
                    raise _Stop
        return hook

    try:
        with hooked(tap(module, n, hook_for(n)) for n in names), torch.no_grad():
            module(images)
    except _Stop:
        pass
    if left:
        raise ModelError(f"{sorted(left)[0]} did not run on the calibration batch")


def forward_order(model: nn.Module, names: set[str], images: torch.Tensor) -> list[str]:
    """The modules in ``names`` in the order ``model`` first runs them (on one image); an
    attention's q/k/v projection before its output projection."""
    order = []
    with hooked(tap(model, n, lambda _m, _x, n=n: order.append(n)) for n in sorted(names)):
        model(images[:1])
    return list(dict.fromkeys(order))


def _removed_inputs(plan: PruningPlan, groups: ChannelGroups) -> dict[str, list[np.ndarray]]:
    """Per consumer (attention projections included): the input positions the plan removes
    (one array per pruned group)."""
    removed: dict[str, list[np.ndarray]] = {}
    for gid in plan.kept:
        gone = plan.removed(gid)
        for s in groups[gid].dense_inputs:
            pos = s.idxs[np.isin(s.channel, gone)]
            if len(pos):
                removed.setdefault(s.module, []).append(pos)
    return removed


def _removed_outputs(model: nn.Module, plan: PruningPlan, groups: ChannelGroups) -> dict[str, torch.Tensor]:
    """Per dense layer (attention projections included): the output rows the plan removes."""
    out: dict[str, np.ndarray] = {}
    for s, pos in removed_positions(plan, groups).values():
        if s.optype == OPTYPE.MHA:  # a stream channel takes its q, k and v rows and its output row
            e = model.get_submodule(s.module).embed_dim
            out[f"{s.module}:in_proj"], out[f"{s.module}:out_proj"] = np.concatenate([pos, pos + e, pos + 2 * e]), pos
        elif s.is_producer:
            out[s.module] = pos
    device = next(model.parameters()).device
    return {n: torch.as_tensor(p, device=device) for n, p in out.items()}


def _kept_columns(layer: nn.Module, removed: list[np.ndarray]) -> torch.Tensor:
    """The flattened weight columns of ``layer`` that read surviving inputs."""
    per = int(np.prod(layer.weight.shape[2:]))  # columns per input channel
    gone = np.unique(np.concatenate(removed))
    keep = np.flatnonzero(~np.isin(np.arange(layer.weight[0].numel()) // per, gone))
    return torch.as_tensor(keep, device=layer.weight.device)


def _solve(layer: nn.Module, x_kept: torch.Tensor, target: torch.Tensor, cols: torch.Tensor | None,
           ridge: float, removed: torch.Tensor | None = None) -> None:
    """Set ``layer``'s weights on ``cols`` (all: None) to the ridge regression of ``target`` on ``x_kept``;
    the output rows ``removed`` (a masked model's, e.g. q, k and v of a removed stream channel) stay zero.

    The products over rows are taken in float32, the solve in float64: on the demo the
    refit model's accuracy is the same to the last test image as with float64 products
    (3 seeds), at a fraction of the time (32,768 rows x 4,608 columns for a 3x3
    convolution of 512 inputs).
    """
    x = (x_kept if cols is None else x_kept[:, cols]).float()
    xx = gram(x.T).double()  # x^T x from its upper blocks
    xx.diagonal().add_(ridge * float(xx.diagonal().mean().clamp_min(1e-12)))
    w = torch.linalg.solve(xx, (x.T @ target.float()).double()).T  # [out, kept columns]
    flat = layer.weight.view(layer.weight.shape[0], -1)
    if cols is None:
        flat.copy_(w)
    else:
        flat[:, cols] = w.to(flat.dtype)
    if removed is not None:
        flat[removed] = 0


@torch.no_grad()
def refit(model: nn.Module, plan: PruningPlan, images: torch.Tensor, groups: ChannelGroups | None = None, *,
          ridge: float = RIDGE, max_rows: int = 32768, seed: int = 0,
          progress: bool = False) -> tuple[nn.Module, PruningPlan]:
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
        per regression, from the first ``REFIT_IMAGES`` images.

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
    Dense convolutions (2-D, ``groups=1``), linear layers and the projections inside
    ``nn.MultiheadAttention`` are refit; other consumers keep their weights. The BN
    statistics are not touched: re-estimate them after (``mrp_gpu.finetune.recalibrate_bn``).

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
    if groups is None:  # traced as the plan's model was: self-attention in heads
        model, groups = traced(model, plan.input_size)
    plan = dataclasses.replace(plan, merges=[])
    masked = apply_masks(model, plan, groups).eval()
    device = next(model.parameters()).device
    images = images[:REFIT_IMAGES].to(device)
    removed = _removed_inputs(plan, groups)
    was = model.training
    model.eval()
    try:
        names = [n for n in forward_order(model, set(removed), images) if is_dense(dense_layer(masked, n))]
        layout = {n: (None, _kept_columns(dense_layer(masked, n), removed[n])) for n in names}
        lockstep_refit(model, masked, layout, images, ridge=ridge, max_rows=max_rows, seed=seed, progress=progress,
                       zero=_removed_outputs(masked, plan, groups))
    finally:
        model.train(was)
    return masked, plan


def lockstep_refit(model: nn.Module, pruned: nn.Module, layout: dict, images: torch.Tensor, *,
                   ridge: float = RIDGE, max_rows: int = 32768, seed: int = 0, progress: bool = False,
                   zero: dict | None = None) -> None:
    """Refit the layers of ``pruned`` named in ``layout``, in place, in one pass of both models.

    ``layout[name] = (rows, cols)``, in the order the models run the layers: the unpruned
    layer's outputs ``rows`` (all: None) are the targets, and the pruned layer's weight
    columns ``cols`` (all: None) are refit on what it reads. The unpruned model runs in a
    thread and hands each layer's targets to the pruned model's pass, which fits the layer
    when it reaches it, before running it; ``zero[name]``: output rows it keeps at zero. Both
    models must be in eval mode. On CUDA the
    thread works on the caller's current stream.
    """
    from tqdm.auto import tqdm

    if not layout:
        return
    names = list(layout)
    gen = torch.Generator().manual_seed(seed)
    link, failure = _Lockstep(), []
    bar = tqdm(total=len(names), desc="refit", unit="layer", disable=not progress, leave=False)

    def targets(name, layer, x):  # the unpruned pass: rows picked, the unpruned layer's output on them
        n = row_count(layer, x)
        pick = torch.randperm(n, generator=gen)[:max_rows].to(x.device) if n > max_rows else None
        w = layer.weight.flatten(1).float()
        rows = layout[name][0]
        link.put((name, pick, input_rows(layer, x, pick).float() @ (w if rows is None else w[rows]).T))

    def fit(name, layer, x):  # the masked pass: the same rows of what the refit layers before give
        got, pick, target = link.get()
        if got != name:
            raise ModelError(f"the unpruned and the pruned model reached {got} and {name} in different orders")
        _solve(layer, input_rows(layer, x, pick), target, layout[name][1], ridge, (zero or {}).get(name))
        bar.update()

    stream = torch.cuda.current_stream() if images.is_cuda else None

    def unpruned():
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                _hooked_run(model, names, images, targets)
        except _Failed:
            pass
        except BaseException as e:
            failure.append(e)
        finally:
            link.close()

    thread = threading.Thread(target=unpruned, name="mrp-refit-targets", daemon=True)
    thread.start()
    try:
        _hooked_run(pruned, names, images, fit)
    except _Failed:
        pass  # the unpruned pass failed: its error is raised below
    finally:
        link.close()
        thread.join()
        bar.close()
    if failure:
        raise failure[0]
