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
from .attention import ActivationProducts, inside
from .cost import CallRecord, CostModel, build_cost_model, record_calls
from .transformer import head_blocks, unsupported_attention, unsupported_norm

__all__ = ["LayerSlice", "ChannelGroup", "ChannelGroups", "build_groups", "example_input"]

# Node types whose channel dimension is one: what enters is what leaves.
_TWO_DIMS = {OPTYPE.CONV, OPTYPE.LINEAR}
_REFUSED = {OPTYPE.EMBED: "nn.Embedding", OPTYPE.LSTM: "nn.LSTM", OPTYPE.CUSTOMIZED: "customized layer"}
# Layers whose statistics mix channels: zeroing one is not removing it, so such groups are left whole
# (LayerNorm is masked over its kept channels instead: mrp_gpu.dependency.transformer).
_NORMALISED_TOGETHER = {OPTYPE.GN}
# Channels cut into chunks by torch.split/chunk/unbind: the sizes live in the model's code, so such groups
# are left whole too.
_SPLITS = {OPTYPE.SPLIT, OPTYPE.UNBIND}


def _windowed_attention() -> tuple[type, ...]:
    """Attention layers refused before tracing: following them costs the tracer more memory than a machine has."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    return ShiftedWindowAttention, RelativePositionalMultiHeadAttention


def _refuse_windowed_attention(model: nn.Module) -> None:
    kinds = _windowed_attention()
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            raise ModelError(f"cannot trace the windowed attention {name!r} ({type(module).__name__}) within "
                             "memory; mrp_gpu prunes convolutional networks and the MLPs of plain transformers")


def _held_norm(node) -> str | None:
    """Why a group through this node is left whole for its norm ("": no more to say; None: it is not)."""
    if node.type in _NORMALISED_TOGETHER:
        return ""
    why = unsupported_norm(node.module) if node.type == OPTYPE.LN else None
    return None if why is None else f": {why}"


def _blocks(model: nn.Module, slices, size: int) -> tuple[np.ndarray | None, str | None]:
    """Block of each channel when the group runs through grouped (not depthwise) convolutions
    or the heads of ``nn.MultiheadAttention``.

    A grouped convolution only stays one if every block keeps the same number of
    channels, and attention heads only stay heads if each keeps the same width: the group
    must lose channels evenly across blocks. Returns ``(block, None)`` (``block`` None:
    no such layer), or ``(None, why)`` when the partitions of two such layers disagree or
    a block is not whole in the group.
    """
    block = None
    for s in slices:
        if s.optype == OPTYPE.MHA:
            mine, what = head_blocks(model.get_submodule(s.module), s.idxs, s.channel, size), "attention heads"
        else:
            m = model.get_submodule(s.module) if s.optype in (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV) else None
            if not isinstance(m, nn.modules.conv._ConvNd) or m.groups == 1 or (
                    s.is_consumer and m.groups == m.in_channels):
                continue
            if s.is_producer and m.groups == m.in_channels == m.out_channels:
                continue  # depthwise: its channels are its input's, in this group already
            per = (m.in_channels if s.is_consumer else m.out_channels) // m.groups
            mine, what = np.full(size, -1), f"grouped convolution ({m.groups} groups)"
            mine[s.channel] = s.idxs // per
        if (mine < 0).any() or len(set(np.bincount(mine).tolist())) != 1:
            return None, f"only part of the {what} {s.module!r}"
        if block is not None and not np.array_equal(block, mine):
            return None, f"layers with different blocks of channels ({s.module!r}: {what})"
        block = mine
    return block, None


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

    @property
    def blocks(self) -> int:
        """Equal blocks the group's channels fall into (a grouped convolution's groups; 1: none).
        The group loses channels in multiples of ``blocks``, the same number from each."""
        return 1 if self.block is None else int(self.block.max()) + 1

    @property
    def kind(self) -> str:
        """What the channels are: ``stream`` (a residual stream normalised by LayerNorm, a ViT's
        or ConvNeXt's), ``conv`` (convolution channels) or ``linear`` (hidden units of linear
        layers, e.g. a transformer's MLP)."""
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
        out = {k: sum(g.kind == k for g in self.groups) for k in ("conv", "linear", "stream")}
        return {k: v for k, v in out.items() if v} | (
            {"attention": n} if (n := sum(len(g.attention) for g in self.groups)) else {})


def example_input(input_size, batch: int = 1, device="cpu") -> torch.Tensor:
    """A fixed random batch of the model's input shape (seeded: traces are reproducible)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_size), generator=g).to(device)


def _node_name(DG, node) -> str:
    if node.type == OPTYPE.PARAMETER:
        return DG._param_to_name[node.module]
    return DG._module2name.get(node.module) or f"<{type(node.module).__name__}>"


def _attention_in(DG, group, attention) -> str | None:
    """The attention layer a Torch-Pruning group runs through, if any (by structure, or nn.MultiheadAttention)."""
    for item in group.items:
        name = _node_name(DG, item.dep.target)
        if item.dep.target.type == OPTYPE.MHA:
            why = unsupported_attention(item.dep.target.module)
            if why is not None:
                return f"{name}: {why}"
            continue  # its heads lose channels evenly (_blocks): the stream is pruned through it
        found = inside(name, attention)
        if found is not None:
            return found or "the model's own forward"
    return None


def _dim(DG, item) -> str:
    node = item.dep.target
    return "in" if node.type in _TWO_DIMS and DG.is_in_channel_pruning_fn(item.dep.handler) else "out"


def _reaches_output(DG, item, output_fns) -> bool:
    node = item.dep.target
    return node.type == OPTYPE.OUTPUT or (node.grad_fn in output_fns and _dim(DG, item) == "out")


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


def build_groups(model: nn.Module, input_size, *, device="cpu", timeout: float | None = TRACE_TIMEOUT) -> ChannelGroups:
    """Trace ``model`` once and return its prunable channel groups and cost model.

    Groups whose channels reach the model's output (the classifier's logits) are
    left out. The model is traced in eval mode and left unchanged. ``timeout``
    bounds the dependency trace (seconds; None: no limit; only in the main thread).

    Raises
    ------
    ModelError
        When a group runs through a layer type mrp_gpu cannot prune, naming it; when
        the trace runs out of time; when grouping fails, naming the stage.
    """
    _refuse_windowed_attention(model)
    was_training = model.training
    x = example_input(input_size, device=device)
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
        with torch.enable_grad(), _time_limit(timeout):  # tracing follows autograd, even under an outer no_grad
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
        return _collect(model, DG, tp_groups, outputs, records, input_size, tuple(watch.found))


def _collect(model: nn.Module, DG, tp_groups, outputs, records, input_size, attention) -> ChannelGroups:
    """Torch-Pruning's groups as :class:`ChannelGroups`, with the cost model; groups that run
    through ``attention`` (module names) are left whole."""
    output_fns = {o.grad_fn for o in outputs if o.grad_fn is not None}
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups, held = [], []
    for g in tp_groups:
        if any(_reaches_output(DG, item, output_fns) for item in g.items):
            continue  # the classifier's logits, or anything else the caller reads
        norm, why = next(((item.dep.target, _held_norm(item.dep.target)) for item in g.items
                          if _held_norm(item.dep.target) is not None), (None, None))
        if norm is not None:  # a zeroed channel still moves the norm's statistics: masks could not be verified
            held.append(f"{_node_name(DG, g[0].dep.target)} (through {type(norm.module).__name__} "
                        f"{_node_name(DG, norm)!r}{why})")
            continue
        if any(item.dep.target.type in _SPLITS for item in g.items):  # the chunk sizes are in the model's code
            held.append(f"{_node_name(DG, g[0].dep.target)} (its output is split into chunks by the model's code)")
            continue
        through = _attention_in(DG, g, attention)
        if through is not None:  # heads and q/k pairs: not prunable one channel at a time
            held.append(f"{_node_name(DG, g[0].dep.target)} (runs through the attention {through!r})")
            continue
        slices = []
        for item in g.items:
            node = item.dep.target
            if node.type in _REFUSED:
                raise ModelError(
                    f"cannot prune channels that run through {_REFUSED[node.type]} "
                    f"{_node_name(DG, node)!r} ({type(node.module).__name__})")
            if isinstance(node.module, tp.ops._ElementWiseOp) or node.type in (
                    OPTYPE.CONCAT, OPTYPE.SPLIT, OPTYPE.RESHAPE, OPTYPE.UNBIND, OPTYPE.EXPAND, OPTYPE.SLICE):
                continue  # no weights: the cost model follows these through the trace
            slices.append(LayerSlice(_node_name(DG, node), node.type, _dim(DG, item),
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
        block, why = _blocks(model, slices, size)
        if why is not None:
            held.append(f"{first.module} ({why})")
            continue
        groups.append((order.get(first.module, len(order)), ChannelGroup(first.module, size, tuple(slices), block),
                       [item for item in g.items]))
    groups.sort(key=lambda t: t[0])
    cost = build_cost_model(DG, records, [items for _, _, items in groups], model)
    return ChannelGroups(tuple(g for _, g, _ in groups), tuple(input_size), cost, tuple(held))
