"""Channel groups: which output channels must be removed together.

Torch-Pruning's ``DependencyGraph`` traces the model; every group it returns becomes
a :class:`ChannelGroup`: a stable id (the name of its first producing layer in
model order), its channel count, and every layer dimension it touches, as
:class:`LayerSlice` records. The same traced forward pass records what the analytic
cost model (:mod:`mrp_gpu.dependency.cost`) needs, so one trace gives both.

Channels are numbered in the group's own index space: channel ``c`` of a group is
position ``idxs[k]`` of a layer dimension wherever ``channel[k] == c``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.ops import OPTYPE

from ..errors import ModelError, stage
from . import TRACE_TIMEOUT
from .attention import ActivationProducts
from .cost import CallRecord, CostModel, build_cost_model, record_calls
from .heads import head_channels, head_layout
from .holds import blocks_of, why_held
from .nodes import node_name, side
from .projections import PROJECTIONS, projection_name
from .traceable import traceable

__all__ = ["LayerSlice", "ChannelGroup", "ChannelGroups", "build_groups", "example_input", "model_device"]

_REFUSED = {OPTYPE.EMBED: "nn.Embedding", OPTYPE.LSTM: "nn.LSTM", OPTYPE.CUSTOMIZED: "customized layer"}


@dataclass(frozen=True, eq=False)
class LayerSlice:
    """One dimension of one layer that a group's channels run through.

    Attributes
    ----------
    module : str
        Qualified name of the module, or of the parameter for an unwrapped one.
    optype : OPTYPE
        Torch-Pruning's node type (CONV, BN, LINEAR, DEPTHWISE_CONV, PARAMETER, ...).
    dim : str
        ``"out"`` (the layer produces these channels) or ``"in"`` (it reads them).
    idxs : np.ndarray
        Positions in that dimension; ``channel[k]`` is the group channel of ``idxs[k]``.
    channel : np.ndarray
    pruning_dim : int
        Tensor dimension Torch-Pruning slices, for unwrapped parameters and norms.
    """

    module: str
    optype: OPTYPE
    dim: str
    idxs: np.ndarray
    channel: np.ndarray
    pruning_dim: int = -1

    @property
    def is_producer(self) -> bool:
        """A convolution or linear layer whose filters make these channels."""
        return self.dim == "out" and self.optype in (OPTYPE.CONV, OPTYPE.LINEAR, OPTYPE.DEPTHWISE_CONV)

    @property
    def is_consumer(self) -> bool:
        """A convolution or linear layer that reads these channels."""
        return self.dim == "in"


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Output channels that are removed together (a layer, or layers joined by adds)."""

    id: str
    size: int
    slices: tuple[LayerSlice, ...]
    block: np.ndarray | None = field(default=None, repr=False)  # grouped convolutions: each channel's block
    heads: str | None = None  # the attention layer whose heads these channels are (:mod:`.heads`)

    @property
    def blocks(self) -> int:
        """Equal blocks the group's channels fall into (a grouped convolution's groups; 1: none).
        The group loses channels in multiples of ``blocks``, the same number from each."""
        return 1 if self.block is None else int(self.block.max()) + 1

    @property
    def kind(self) -> str:
        """What the channels are: ``stream`` (a residual stream normalised by LayerNorm, a ViT's
        or ConvNeXt's), ``heads`` (an attention layer's heads), ``conv`` (convolution channels)
        or ``linear`` (hidden units of linear layers, e.g. a transformer's MLP)."""
        if self.heads is not None:
            return "heads"
        types = {s.optype for s in self.slices}
        if types & {OPTYPE.LN, OPTYPE.MHA}:
            return "stream"
        return "conv" if types & {OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV} else "linear"

    @property
    def attention(self) -> tuple[str, ...]:
        """The ``nn.MultiheadAttention`` layers whose width (each head's) follows these channels."""
        return tuple(s.module for s in self.slices if s.optype == OPTYPE.MHA)

    @property
    def producers(self) -> tuple[LayerSlice, ...]:
        return tuple(s for s in self.slices if s.is_producer)

    @property
    def consumers(self) -> tuple[LayerSlice, ...]:
        return tuple(s for s in self.slices if s.is_consumer)

    @property
    def dense_inputs(self) -> tuple[LayerSlice, ...]:
        """The consumers, and the two projections inside each ``nn.MultiheadAttention`` the
        channels run through (:mod:`.projections`): what the ``rebuild`` loss and the refit read."""
        return self.consumers + tuple(
            LayerSlice(projection_name(s.module, p), OPTYPE.LINEAR, "in", s.idxs, s.channel)
            for s in self.slices if s.optype == OPTYPE.MHA for p in PROJECTIONS)

    @property
    def norms(self) -> tuple[LayerSlice, ...]:
        """Affine normalisation layers (BN, GN, LN, IN) on these channels."""
        return tuple(s for s in self.slices if s.optype in (OPTYPE.BN, OPTYPE.GN, OPTYPE.LN, OPTYPE.IN))


@dataclass(frozen=True, eq=False)
class ChannelGroups:
    """Every prunable group of a model, in model order, plus its cost model."""

    groups: tuple[ChannelGroup, ...]
    input_size: tuple[int, ...]
    cost: CostModel = field(repr=False)
    held: tuple[str, ...] = ()  # channel sets left whole, each with why (norm, split, attention, side by side)
    _index: dict = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {g.id: i for i, g in enumerate(self.groups)})

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __getitem__(self, key: str | int) -> ChannelGroup:
        return self.groups[self._index[key]] if isinstance(key, str) else self.groups[int(key)]

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def index(self, group_id: str) -> int:
        return self._index[group_id]

    @property
    def ids(self) -> list[str]:
        return [g.id for g in self.groups]

    @property
    def sizes(self) -> np.ndarray:
        return np.array([g.size for g in self.groups], dtype=np.int64)

    def kinds(self) -> dict[str, int]:
        """How many groups of each :attr:`ChannelGroup.kind`, and ``attention``: the attention
        layers narrowed with a stream (their heads keep their number, each loses width)."""
        out = {k: sum(g.kind == k for g in self.groups) for k in ("conv", "linear", "stream", "heads")}
        return {k: v for k, v in out.items() if v} | (
            {"attention": n} if (n := sum(len(g.attention) for g in self.groups)) else {})


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def example_input(input_size, batch: int = 1, device="cpu") -> torch.Tensor:
    """A fixed random batch of the model's input shape (seeded: traces are reproducible)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_size), generator=g).to(device)


def _reaches_output(DG, item, output_fns) -> bool:
    node = item.dep.target
    return node.type == OPTYPE.OUTPUT or (node.grad_fn in output_fns and side(DG, item) == "out")


class _TraceTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise :class:`_TraceTimeout` in the main thread after ``seconds`` (no limit elsewhere, or with None)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(_signum, _frame):
        raise _TraceTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build_groups(model: nn.Module, input_size, *, device=None,
                 timeout: float | None = TRACE_TIMEOUT) -> ChannelGroups:
    """Trace ``model`` once and return its prunable channel groups and cost model.

    Groups whose channels reach the model's output (the classifier's logits) are
    left out. The model is traced in eval mode and left unchanged, on ``device`` (None:
    where its parameters are). ``timeout``
    bounds the dependency trace (seconds; None: no limit; only in the main thread).

    Raises
    ------
    ModelError
        When a group runs through a layer type mrp_gpu cannot prune, naming it; when
        the trace runs out of time; when grouping fails, naming the stage.
    """
    was_training = model.training
    x = example_input(input_size, device=model_device(model) if device is None else device)
    records: list[CallRecord] = []
    outputs: list[torch.Tensor] = []
    watch = ActivationProducts(model)

    def forward_fn(m, inputs):
        with watch:
            watch.mark(inputs)
            out = record_calls(m, inputs, records)
        outputs.extend(tp.utils.flatten_as_list(out))
        return out

    try:
        # tracing follows autograd, even under an outer no_grad
        with torch.enable_grad(), _time_limit(timeout), traceable(model) as shuffles:
            DG = tp.DependencyGraph().build_dependency(model, x, forward_fn=forward_fn, verbose=False)
            tp_groups = list(DG.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)))
    except _TraceTimeout:
        raise ModelError(f"Torch-Pruning's dependency tracer did not finish {type(model).__name__} within "
                         f"{timeout:g} s (--trace-timeout raises the limit)") from None
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError, IndexError, KeyError, AssertionError) as e:
        # the dependency tracer gives up on some graphs (e.g. channel shuffles): refuse, clearly
        raise ModelError(f"Torch-Pruning's dependency tracer cannot follow {type(model).__name__} at input "
                         f"{tuple(input_size)}: {type(e).__name__}: {e}"[:400]) from None
    finally:
        model.train(was_training)

    with stage("grouping", model):
        return _collect(model, DG, tp_groups, outputs, records, input_size, watch, shuffles)


def _collect(model: nn.Module, DG, tp_groups, outputs, records, input_size, watch, shuffles) -> ChannelGroups:
    """Torch-Pruning's groups as :class:`ChannelGroups`, with the cost model; groups that run
    through an attention layer (``watch``: :class:`ActivationProducts`) or a channel shuffle
    (``{grad_fn: block}``) are left whole."""
    output_fns = {o.grad_fn for o in outputs if o.grad_fn is not None}
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups, held = [], []
    for g in tp_groups:
        if any(_reaches_output(DG, item, output_fns) for item in g.items):
            continue  # the classifier's logits, or anything else the caller reads
        heads = head_layout(model, DG, g, watch.found)
        if heads is not None:  # an attention layer's inside, cut in whole heads
            name, items = heads
            layer = model.get_submodule(name)
            (rows, of_row), (cols, of_col) = head_channels(layer)
            slices = (LayerSlice(f"{name}.qkv", OPTYPE.LINEAR, "out", rows, of_row, items[0].dep.target.pruning_dim),
                      LayerSlice(f"{name}.proj", OPTYPE.LINEAR, "in", cols, of_col, items[1].dep.target.pruning_dim))
            groups.append((order.get(f"{name}.qkv", len(order)),
                           ChannelGroup(f"{name}.qkv", layer.num_heads, slices, heads=name), items))
            continue
        why = why_held(DG, g, watch, shuffles)
        if why is not None:
            held.append(f"{node_name(DG, g[0].dep.target)} ({why})")
            continue
        slices = []
        for item in g.items:
            node = item.dep.target
            if node.type in _REFUSED:
                raise ModelError(
                    f"cannot prune channels that run through {_REFUSED[node.type]} "
                    f"{node_name(DG, node)!r} ({type(node.module).__name__})")
            if isinstance(node.module, tp.ops._ElementWiseOp) or node.type in (
                    OPTYPE.CONCAT, OPTYPE.SPLIT, OPTYPE.RESHAPE, OPTYPE.UNBIND, OPTYPE.EXPAND, OPTYPE.SLICE):
                continue  # no weights: the cost model follows these through the trace
            slices.append(LayerSlice(node_name(DG, node), node.type, side(DG, item),
                                     np.asarray(item.idxs, dtype=np.int64),
                                     np.asarray(item.root_idxs, dtype=np.int64), node.pruning_dim))
        size = len(g[0].idxs)
        producers = [s for s in slices if s.is_producer]
        if not producers:
            continue
        first = min(producers, key=lambda s: order.get(s.module, len(order)))
        partial = next((s for s in producers if len(np.unique(s.channel)) < size), None)
        if partial is not None:  # e.g. cat([x, cheap(x)]): the sides cannot be sliced consistently yet
            held.append(f"{first.module} (its channels are made by several layers side by side, "
                        f"e.g. {partial.module!r})")
            continue
        block, why = blocks_of(model, slices, size)
        if why is not None:
            held.append(f"{first.module} ({why})")
            continue
        groups.append((order.get(first.module, len(order)), ChannelGroup(first.module, size, tuple(slices), block),
                       [item for item in g.items]))
    groups.sort(key=lambda t: t[0])
    cost = build_cost_model(DG, records, [items for _, _, items in groups], model, [g.size for _, g, _ in groups])
    return ChannelGroups(tuple(g for _, g, _ in groups), tuple(input_size), cost, tuple(held))
