"""The calibration pass: one run of the unpruned model over the calibration images that
measures what the data-driven plan reads, on the model's device.

Two things are measured in the same pass, each only when the resolved config reads it:
every dense consumer's input covariance (the ``rebuild`` loss, :class:`CovarianceTaps`)
and the groups' activation features (:class:`~mrp_gpu.redundancy.features.ActivationTaps`).
A covariance is over the consumer's input *rows* (a convolution's padded ``k x k``
patches, one column per input channel and tap), at most ``max_rows`` of them drawn
evenly from the chunks with a CPU generator (so a GPU run draws the same rows as a CPU
one). Each chunk's product is taken in the input's precision (float32) and summed in
float64; the solves downstream need float64 (a 4,608-input covariance is ill conditioned).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dependency.groups import ChannelGroups
from ..dependency.projections import Projection, dense_layer, tap
from ..errors import DataError
from ..linalg import gram
from .features import ActivationTaps, GroupFeatures, check_finite, run_hooked

__all__ = ["Calibration", "CovarianceTaps", "measure", "is_dense", "input_rows", "row_count"]


def is_dense(layer: nn.Module | Projection) -> bool:
    """A layer whose every output reads every input: a linear layer, an attention's projection
    or a 2-D convolution with ``groups=1``."""
    return isinstance(layer, (nn.Linear, Projection)) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def input_rows(layer: nn.Module, x: torch.Tensor, pick: torch.Tensor | None = None) -> torch.Tensor:
    """A dense layer's input as regression rows: [positions, in_features] (a convolution's
    rows are its input patches, one column per input channel and kernel tap, padded as
    the layer pads).

    ``pick`` (indices into those rows, see :func:`row_count`) returns only them; a
    convolution's patches are then gathered tap by tap at the picked positions instead
    of unfolding every position first."""
    if not isinstance(layer, nn.Conv2d):
        rows = x.reshape(-1, x.shape[-1])
        return rows if pick is None else rows[pick]
    pads = _pads(layer)
    xp = F.pad(x, pads, mode="constant" if layer.padding_mode == "zeros" else layer.padding_mode)
    if pick is None:
        return F.unfold(xp, layer.kernel_size, layer.dilation, 0, layer.stride).transpose(1, 2) \
            .reshape(-1, layer.weight[0].numel())
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ho, wo = _conv_out(layer, x.shape[-2:], pads)
    b, at = pick // (ho * wo), pick % (ho * wo)
    oy, ox = at // wo * sh, at % wo * sw
    taps = [xp[b, :, oy + i * dh, ox + j * dw] for i in range(kh) for j in range(kw)]  # each [n, C]
    return torch.stack(taps, 2).reshape(len(pick), -1)  # columns: channel-major, then taps (unfold's order)


def _pads(layer: nn.Conv2d) -> tuple[int, int, int, int]:
    """The layer's padding as ``F.pad`` takes it: (left, right, top, bottom). ``"same"`` puts
    the odd pixel on the right and bottom, as PyTorch does."""
    if layer.padding == "valid":
        return 0, 0, 0, 0
    if layer.padding == "same":
        (h0, h1), (w0, w1) = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                              for k, d in zip(layer.kernel_size, layer.dilation)]
        return w0, w1, h0, h1
    ph, pw = layer.padding
    return pw, pw, ph, ph


def _conv_out(layer: nn.Conv2d, hw, pads) -> tuple[int, int]:
    """Output height and width of a convolution on an ``hw`` input padded by ``pads``."""
    sizes = (hw[0] + pads[2] + pads[3], hw[1] + pads[0] + pads[1])
    return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in
                 zip(sizes, layer.kernel_size, layer.stride, layer.dilation))


def row_count(layer: nn.Module, x: torch.Tensor) -> int:
    """How many rows :func:`input_rows` has for ``x``."""
    if not isinstance(layer, nn.Conv2d):
        return x.numel() // x.shape[-1]
    ho, wo = _conv_out(layer, x.shape[-2:], _pads(layer))
    return x.shape[0] * ho * wo


class CovarianceTaps:
    """The hooks that accumulate the input covariance of each dense layer in ``names``.

    ``hooks(model)`` registers them (:func:`~mrp_gpu.dependency.projections.tap`); after the pass, ``result()`` gives
    ``{name: [in_features, in_features]}`` (float64, centred).
    """

    def __init__(self, names: list[str], batch: int, *, chunk: int, max_rows: int, seed: int):
        self.names = list(names)
        self.per_chunk = math.ceil(max_rows / max(1, math.ceil(batch / chunk)))
        self.gen = torch.Generator().manual_seed(seed)
        self.sums: dict[str, list] = {}

    def hooks(self, model: nn.Module) -> Iterator:
        return (tap(model, n, self._hook_for(n)) for n in self.names)

    def _hook_for(self, name: str):
        def hook(module, x):
            n = row_count(module, x)
            pick = torch.randperm(n, generator=self.gen)[:self.per_chunk].to(x.device) if n > self.per_chunk else None
            x = input_rows(module, x, pick)
            acc = self.sums.setdefault(name, [0.0, 0.0, 0])
            acc[0] = acc[0] + gram(x.T).double()  # x^T x from its upper blocks
            acc[1] = acc[1] + x.sum(0, dtype=torch.float64)
            acc[2] += len(x)
        return hook

    def result(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (xx, xs, n) in self.sums.items():
            mean = xs / n
            out[name] = (xx / n).addr_(mean, mean, alpha=-1.0)  # E[x x^T] - mean mean^T
        return out


@dataclass(eq=False)
class Calibration:
    """What the calibration pass measured on the unpruned model, and the images it ran on
    (the refit runs on them again).

    ``features``: activation features (None when not measured); ``covariances``: the input
    covariance of each measured dense consumer; ``unseen``: consumers asked for that gave
    none (an attention projection called with masks is not tapped), not asked for again.
    """

    images: torch.Tensor
    features: GroupFeatures | None = None
    covariances: dict[str, torch.Tensor] = field(default_factory=dict)
    unseen: frozenset[str] = frozenset()

    @property
    def nbytes(self) -> int:
        """Bytes held by the measurements (not the images)."""
        held = sum(c.numel() * c.element_size() for c in self.covariances.values())
        if self.features is not None:
            held += sum(r.numel() * r.element_size() for r in self.features.rows)
        return held

    def validate(self, model: nn.Module, groups: ChannelGroups) -> None:
        """Raise :class:`DataError` unless what it holds was measured on ``model``'s ``groups``
        (a Calibration is reused across plans of one model, not across models)."""
        f = self.features
        if f is not None and (tuple(f.ids) != tuple(groups.ids) or [len(r) for r in f.rows] != list(groups.sizes)):
            raise DataError(f"the Calibration's activation features are of other channel groups ({len(f.ids)}, "
                            f"the first {f.ids[0] if f.ids else None!r}) than this model's ({len(groups)}, the first "
                            f"{groups.ids[0] if len(groups) else None!r}): measure it on this model")
        for name, cov in self.covariances.items():
            try:
                width = dense_layer(model, name).weight[0].numel()
            except AttributeError:
                raise DataError(f"the Calibration holds the input covariance of {name!r}, a layer this model "
                                "does not have: measure it on this model") from None
            if cov.shape[0] != width:
                raise DataError(f"the Calibration's input covariance of {name!r} is {cov.shape[0]} wide, the "
                                f"layer reads {width} inputs: measure it on this model")


@torch.no_grad()
def measure(model: nn.Module, groups: ChannelGroups, images: torch.Tensor, *, features: bool = False,
            consumers: list[str] = (), pool: int = 4, chunk: int = 64, max_rows: int = 32768, seed: int = 0,
            progress: bool = False) -> Calibration:
    """One pass of ``model`` over ``images`` measuring the activation features (``features``)
    and the input covariances of the dense layers in ``consumers``.

    Raises
    ------
    ModelError
        When a group's activations hold NaN or Inf, naming the group.
    """
    acts = ActivationTaps(groups, pool) if features else None
    covs = CovarianceTaps(consumers, len(images), chunk=chunk, max_rows=max_rows, seed=seed) if consumers else None
    if covs or acts:
        run_hooked(model, itertools.chain(covs.hooks(model) if covs else (), acts.hooks(model) if acts else ()),
                   images, chunk, progress=progress)
    return Calibration(images, check_finite(acts.result(), "activations") if acts else None,
                       covs.result() if covs else {})
