"""The least-squares refit for a model that any Torch-Pruning pruner pruned.

``refit(original, model, calibration)`` gives every dense layer (a 2-D convolution with
``groups=1``, a linear layer) whose inputs lost channels new weights: the ridge
least-squares fit of the original layer's output, on the kept output channels, from
what the pruned layer really reads on the calibration images, layer after layer in the
order the model runs them (one pass of both models, :func:`mrp_gpu.refit.lockstep_refit`);
then it re-estimates the BatchNorm statistics on the same images.

To know which output channels of the original each pruned layer kept, it replays
Torch-Pruning's pruning history when the pruner is given (any importance, global or
not, one-shot or iterative, ``round_to``, ``ignored_layers``), or otherwise matches
the pruned weights to the original's: a pruned layer's weights are the original's
with rows and columns taken out, exactly. A layer it cannot map is refused, naming
it, before anything is changed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..errors import ModelError
from ..redundancy.calibration import is_dense
from ..refit import REFIT_IMAGES, RIDGE, forward_order, lockstep_refit

__all__ = ["refit", "kept_indices"]

_CODE = 2 ** 20  # history probe: a weight's value encodes (output row) * _CODE + (input column)


def _dense(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_dense(m)}


def _blocks(w: torch.Tensor) -> np.ndarray:
    """A weight as [out, in, taps] on the host."""
    return w.detach().cpu().reshape(w.shape[0], w.shape[1], -1).numpy()


def _subsequence(row: np.ndarray, part: np.ndarray) -> np.ndarray | None:
    """Increasing positions of ``row`` ([in, taps]) whose blocks are ``part``'s, or None."""
    found, at = [], 0
    for block in part:
        hits = np.flatnonzero((row[at:] == block).all(-1))
        if not len(hits):
            return None
        at += int(hits[0])
        found.append(at)
        at += 1
    return np.asarray(found)


def _match(name: str, original: nn.Module, pruned: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(kept output rows, kept input positions) of the original layer that ``pruned`` is a slice of."""
    a, b = _blocks(original.weight), _blocks(pruned.weight)
    if a.shape[2] != b.shape[2] or b.shape[0] > a.shape[0] or b.shape[1] > a.shape[1]:
        raise ModelError(f"{name}: weight {tuple(pruned.weight.shape)} is not a slice of the original's "
                         f"{tuple(original.weight.shape)}")
    if b.shape[:2] == a.shape[:2] and np.array_equal(a, b):
        return np.arange(a.shape[0]), np.arange(a.shape[1])
    for o in np.flatnonzero((a == b[0, 0]).all(-1).any(1)):  # rows that may hold the first kept row
        ins = _subsequence(a[o], b[0])
        if ins is None:
            continue
        rows = {r.tobytes(): i for i, r in reversed(list(enumerate(a[:, ins])))}
        outs = [rows.get(r.tobytes()) for r in b]
        if None not in outs and (np.diff(outs) > 0).all():
            return np.asarray(outs), ins
    raise ModelError(f"{name}: its weights are not the original's with channels taken out (a model pruned from "
                     "another original, or changed since pruning?); pass pruner= to map it from the pruning history")


def _from_weights(original: nn.Module, model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ours = _dense(original)
    out = {}
    for name, layer in _dense(model).items():
        if name not in ours:
            raise ModelError(f"{name}: the original model has no dense layer of that name")
        out[name] = _match(name, ours[name], layer)
    return out


def _from_history(original: nn.Module, model: nn.Module, pruner, example: torch.Tensor) -> dict:
    """Replay ``pruner``'s history on a copy of ``original`` whose weights encode their own indices."""
    import torch_pruning as tp

    probe = copy.deepcopy(original).cpu().double().eval()
    with torch.no_grad():
        for m in _dense(probe).values():
            w = m.weight
            rows = torch.arange(w.shape[0], dtype=w.dtype).view(-1, *[1] * (w.dim() - 1))
            cols = torch.arange(w.shape[1], dtype=w.dtype).view(1, -1, *[1] * (w.dim() - 2))
            w.copy_(rows * _CODE + cols)
    graph = tp.DependencyGraph().build_dependency(probe, example[:1].cpu().double(), verbose=False)
    graph.load_pruning_history(pruner.pruning_history())
    pruned = _dense(model)
    out = {}
    for name, m in _dense(probe).items():
        if name not in pruned:
            raise ModelError(f"{name}: the pruned model has no dense layer of that name")
        if pruned[name].weight.shape != m.weight.shape:
            raise ModelError(f"{name}: the pruning history gives weight {tuple(m.weight.shape)}, the model has "
                             f"{tuple(pruned[name].weight.shape)} (was it pruned further without this pruner?)")
        code = m.weight.detach().reshape(m.weight.shape[0], m.weight.shape[1], -1)[:, :, 0]
        out[name] = ((code[:, 0] // _CODE).long().numpy(), (code[0] % _CODE).long().numpy())
    return out


def kept_indices(original: nn.Module, model: nn.Module, pruner=None,
                 example_inputs: torch.Tensor | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dense layer of ``model``: the original's output rows and input positions it kept.

    An input position is an input channel (a linear layer reading a flattened map: a
    column). From ``pruner``'s history (then ``example_inputs`` is needed, one batch of
    the model's input), or by matching weights.

    Raises
    ------
    ModelError
        Naming the first layer that cannot be mapped.
    """
    if pruner is None:
        return _from_weights(original, model)
    if example_inputs is None:
        raise ValueError("mapping from a pruning history needs example_inputs")
    return _from_history(original, model, pruner, example_inputs)


def refit(original: nn.Module, model: nn.Module, calibration: torch.Tensor, pruner=None, *,
          ridge: float = RIDGE, max_rows: int = 32768, seed: int = 0, progress: bool = False) -> nn.Module:
    """Refit, in place, the layers of a Torch-Pruning result whose inputs lost channels; re-estimate BN.

    Parameters
    ----------
    original : nn.Module
        The model before pruning (a ``copy.deepcopy`` made before the pruner ran); left unchanged.
    model : nn.Module
        The pruned model (``pruner.step()`` done, once or several times).
    calibration : Tensor
        Training images (a few hundred are enough), never the test set.
    pruner : Torch-Pruning pruner, optional
        Maps the channels from its pruning history, replayed on a dependency graph built
        with the defaults (a pruner built with ``forward_fn``, ``output_transform``,
        ``unwrapped_parameters`` or customized pruners is not replayed faithfully: map
        by weights instead); without it, by matching weights.

    Returns
    -------
    nn.Module
        ``model``, refit, in eval mode. When a layer cannot be mapped a
        :class:`ModelError` names it and ``model`` is left as it was.

    Examples
    --------
    >>> original = copy.deepcopy(model)  # doctest: +SKIP
    >>> pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupTaylorImportance(), ...)
    >>> pruner.step()
    >>> refit(original, model, images)
    """
    from ..finetune import recalibrate_bn

    device = next(model.parameters()).device
    if next(original.parameters()).device != device:
        raise ModelError(f"the original model is on {next(original.parameters()).device}, the pruned one on {device}: "
                         "put both on one device")
    images = calibration[:REFIT_IMAGES].to(device)
    maps = kept_indices(original, model, pruner, images)
    dense = _dense(original)
    lost = {n: outs for n, (outs, ins) in maps.items() if len(ins) < dense[n].weight.shape[1]}
    was = original.training
    original.eval()
    model.eval()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        order = forward_order(original, set(lost), images)
        layout = {n: (torch.as_tensor(lost[n], device=device), None) for n in order}
        lockstep_refit(original, model, layout, images, ridge=ridge, max_rows=max_rows, seed=seed,
                       progress=progress)
        return recalibrate_bn(model, calibration)
    except BaseException:
        model.load_state_dict(saved)
        raise
    finally:
        original.train(was)
