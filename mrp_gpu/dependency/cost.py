"""Analytic MACs and parameter counts as a function of the channels each group keeps.

One traced forward pass records every layer call that Torch-Pruning's counter
(``tp.utils.count_ops_and_params``) counts, with its tensor shapes. Each call costs
``a * n_in * n_out + b * n_out`` where ``n_in`` and ``n_out`` are the channel counts
of its input and output tensors and ``a``, ``b`` depend only on kernel and spatial
sizes. A channel count is a *slot*: its traced size minus, for every group running
through it, the channels that group removed (times the positions each channel
occupies there, e.g. 49 after flattening a 7x7 map). So the cost of any plan is a
few vectorised products, with no forward pass, and it equals what the counter
reports on the sliced model (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.ops import OPTYPE
from torch_pruning.utils import op_counter

from ..hooks import hooked
from .nodes import side

__all__ = ["CallRecord", "CostModel", "record_calls", "build_cost_model"]


@dataclass
class CallRecord:
    """One call of a module the counter counts, as seen in the traced forward."""

    module: nn.Module
    kind: str  # the counter's hook name: conv, linear, bn, ln, relu, pool, upsample, ...
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_grad_fn: object
    in_grad_fn: object
    channels_last: bool
    flops: int  # what the counter itself counts for this call, per image
    copies: float = 1.0  # the call's batch over the images' batch (e.g. 4 where patches are folded into it)


def _kind(module: nn.Module) -> str | None:
    hook = op_counter.MODULES_MAPPING.get(type(module))
    return None if hook is None else hook.__name__.replace("_flops_counter_hook", "")


def _counted(module: nn.Module) -> list[nn.Module]:
    """The modules the counter adds up: those it has a hook for, but none inside another
    such module (its total stops at the outer one, e.g. timm's ``Attention``, whose hook
    counts the projections of its ``Linear`` children)."""
    if _kind(module) is not None:
        return [module]
    return [m for child in module.children() for m in _counted(child)]


def record_calls(model: nn.Module, inputs, records: list[CallRecord]):
    """Run ``model(inputs)`` and append a :class:`CallRecord` for every counted call.

    Counts are per image, as the counter's are: a call whose batch dimension holds more
    than the images (MobileViT folds its patches into it) has ``copies > 1``."""
    last_dim_fns = set()
    first = next((t for t in tp.utils.flatten_as_list(inputs) if isinstance(t, torch.Tensor)), None)
    batch = first.shape[0] if first is not None and first.dim() > 1 else 1

    def hook(module, args, output):
        kind = _kind(module)
        x = args[0] if args else None
        out = output[0] if isinstance(output, tuple) else output
        in_fn = getattr(x, "grad_fn", None)
        channels_last = kind in ("linear", "ln") or (kind == "relu" and in_fn in last_dim_fns)
        if channels_last and getattr(out, "grad_fn", None) is not None:
            last_dim_fns.add(out.grad_fn)
        module.__flops__ = 0
        op_counter.MODULES_MAPPING[type(module)](module, args, output)
        batched = isinstance(x, torch.Tensor) and x.dim() > 1
        flops = int(module.__flops__) // (batch if batched else 1)
        del module.__flops__
        records.append(CallRecord(
            module, kind,
            tuple(x.shape) if isinstance(x, torch.Tensor) else (),
            tuple(out.shape) if isinstance(out, torch.Tensor) else (),
            getattr(out, "grad_fn", None), in_fn, channels_last, flops, x.shape[0] / batch if batched else 1.0))

    with hooked(m.register_forward_hook(hook) for m in _counted(model)):
        return model(inputs)


class CostModel:
    """MACs and parameters of a model as functions of kept channels per group.

    ``macs(kept)`` and ``params(kept)`` take an int array with one entry per group
    (in :class:`~mrp_gpu.dependency.groups.ChannelGroups` order); ``savings(kept)`` gives, per
    group, what removing one more channel of it would save.
    """

    def __init__(self, sizes, slot_base, slot_mult, macs_terms, params_terms, macs_const, params_const):
        self.sizes = np.asarray(sizes, dtype=np.float64)
        self.slot_base = np.asarray(slot_base, dtype=np.float64)
        self.slot_mult = np.asarray(slot_mult, dtype=np.float64).reshape(len(self.slot_base), len(self.sizes))
        self._terms = {"macs": macs_terms, "params": params_terms}
        self._const = {"macs": float(macs_const), "params": float(params_const)}
        self._savings: dict[str, tuple] = {}  # per quantity: the static parts of ``savings``

    def slot_counts(self, kept) -> np.ndarray:
        removed = self.sizes - np.asarray(kept, dtype=np.float64)
        return self.slot_base - self.slot_mult @ removed

    def _eval(self, what: str, n: np.ndarray) -> float:
        i, o, a, b = self._terms[what]
        return self._const[what] + float(np.sum(a * n[i] * n[o] + b * n[o]))

    def macs(self, kept=None) -> int:
        """MACs per image, as ``tp.utils.count_ops_and_params`` counts them."""
        return int(round(self._eval("macs", self.slot_counts(self.sizes if kept is None else kept))))

    def params(self, kept=None) -> int:
        return int(round(self._eval("params", self.slot_counts(self.sizes if kept is None else kept))))

    def savings(self, kept, what: str = "macs") -> np.ndarray:
        """Per group: the MACs (or params) that removing one more channel saves.

        Each term ``a n_i n_o + b n_o`` loses ``a n_i mo + a n_o mi - a mi mo + b mo`` when
        the group's count drops by one (``mi``, ``mo``: how many of the term's input and
        output slots the group holds): two matrix-vector products and a constant."""
        if what not in self._savings:
            i, o, a, b = self._terms[what]
            mi, mo = self.slot_mult[i], self.slot_mult[o]  # [T, G]
            self._savings[what] = (mi.T.copy(), mo.T.copy(), (b[:, None] * mo - a[:, None] * mi * mo).sum(0))
        n = self.slot_counts(kept)
        i, o, a, _ = self._terms[what]
        mi_t, mo_t, const = self._savings[what]
        return mo_t @ (a * n[i]) + mi_t @ (a * n[o]) + const


def _terms(rows):
    if not rows:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    i, o, a, b = zip(*rows)
    return (np.array(i, np.int64), np.array(o, np.int64), np.array(a, np.float64), np.array(b, np.float64))


class _Slots:
    """Rows of the cost model: a (node, dim) pair, or a constant size, each with the share of
    its positions every group holds."""

    def __init__(self, DG, group_items: list, sizes: list[int]):
        self.row: dict = {}
        self.base: list[float] = []
        self.mult: list[dict[int, float]] = []
        self.membership: dict = {}  # (node, dim) -> {group: share of its positions}
        for gi, items in enumerate(group_items):
            for item in items:
                self.membership.setdefault((item.dep.target, side(DG, item)), {})[gi] = len(item.idxs) / sizes[gi]

    def _slot(self, key, size: float) -> int:
        if key not in self.row:
            self.row[key] = len(self.base)
            self.base.append(float(size))
            self.mult.append({})
        return self.row[key]

    def __call__(self, node, dim: str, size) -> int:
        """The row of ``node``'s ``dim`` side (a constant row when no group prunes it)."""
        if node is None or (node, dim) not in self.membership:
            return self._slot(("const", size), size)
        row = self._slot((node, dim), size)
        self.mult[row] = self.membership[(node, dim)]
        return row

    def matrix(self, groups: int) -> np.ndarray:
        out = np.zeros((len(self.base), groups))
        for row, shares in enumerate(self.mult):
            for gi, v in shares.items():
                out[row, gi] = v
        return out


def _channels(shape, last: bool) -> int:
    if len(shape) < 2:
        return shape[-1] if shape else 1
    return shape[-1] if last else shape[1]


def _macs_rows(DG, records: list[CallRecord], slots: _Slots) -> tuple[list, float]:
    """One MACs term per traced call, and the MACs of the calls no group prunes through."""
    node_of_fn = {node.grad_fn: node for node in DG.module2node.values() if node.grad_fn is not None}
    rows, const = [], 0.0
    for r in records:
        m = r.module
        node = DG.module2node.get(m)
        out_numel, in_numel = (r.copies * float(np.prod(shape[1:])) for shape in (r.out_shape, r.in_shape))
        c_out = _channels(r.out_shape, r.channels_last)
        c_in = _channels(r.in_shape, r.channels_last)
        if r.kind == "conv" and node is not None:
            spatial = out_numel / c_out
            k = float(np.prod(m.kernel_size))
            bias = spatial if m.bias is not None else 0.0
            o = slots(node, "out", c_out)
            if node.type == OPTYPE.DEPTHWISE_CONV:
                rows.append((o, o, 0.0, k * spatial + bias))
            else:
                rows.append((slots(node, "in", c_in), o, k * spatial / m.groups, bias))
        elif r.kind == "linear" and node is not None:
            o = slots(node, "out", c_out)
            i = slots(node, "in", c_in)
            rows.append((i, o, in_numel / c_in, 1.0 if m.bias is not None else 0.0))
        elif r.kind in ("bn", "ln"):
            affine = getattr(m, "affine", getattr(m, "elementwise_affine", False))
            o = slots(node if node is not None else node_of_fn.get(r.out_grad_fn), "out", c_in)
            rows.append((o, o, 0.0, in_numel / c_in * (2 if affine else 1)))
        elif r.kind in ("relu", "upsample", "pool"):
            numel, c = (in_numel, c_in) if r.kind == "pool" else (out_numel, c_out)
            o = slots(node_of_fn.get(r.out_grad_fn), "out", c)
            rows.append((o, o, 0.0, numel / c))
        elif r.kind == "multihead_attention_counter_hook" and (node, "out") in slots.membership:
            # the counter: q scaling, q/k/v/out projections and their biases, per-head q k^T and attn v
            # (2 L^2 per channel), softmax (num_heads L^2): in embed dims n, a n^2 + b n + constant
            tokens = float(r.in_shape[1] if m.batch_first else r.in_shape[0])
            n = float(m.embed_dim)
            a = 4 * tokens
            b = 2 * tokens + 2 * tokens ** 2 + (3 * tokens if m.in_proj_bias is not None else 0.0)
            o = slots(node, "out", n)
            rows.append((o, o, a, b))
            const += r.flops - (a * n * n + b * n)
        elif r.kind == "timm_multihead_attention_counter_hook":
            rows_, extra = _timm_attention_rows(DG, r, slots)
            rows.extend(rows_)
            const += extra
        else:  # attention, recurrent: counted as traced, never pruned through
            const += r.flops
    return rows, const


def _timm_attention_rows(DG, r: CallRecord, slots: _Slots) -> tuple[list, float]:
    """timm's ``Attention`` as the counter counts it, in the stream width ``c`` (``qkv``'s
    inputs) and the attention width ``n`` (``proj``'s inputs, heads x head_dim): q scaling,
    q/k/v projections ``3 L c n`` and their biases, per-head ``q k^T`` and ``attn v``
    (``2 L^2 n``), softmax (``L^2`` per head, ``n / head_dim`` heads), the output projection
    as the counter takes it (``L n (n + 1)``)."""
    m = r.module
    tokens, width = float(r.in_shape[1]), float(m.qkv.out_features // 3)
    c = slots(DG.module2node.get(m.qkv), "in", float(m.qkv.in_features))
    n = slots(DG.module2node.get(m.proj), "in", width)
    head_dim = width / m.num_heads
    b = tokens * (2 + (3 if m.qkv.bias is not None else 0)) + 2 * tokens ** 2 + tokens ** 2 / head_dim
    per = r.copies  # sequences per image (MobileViT folds its patches into the batch)
    rows = [(c, n, 3 * tokens * per, 0.0), (n, n, tokens * per, b * per)]
    full = per * (3 * tokens * m.qkv.in_features * width + tokens * width * width + b * width)
    return rows, r.flops - full


def _params_rows(DG, model: nn.Module, slots: _Slots) -> tuple[list, float]:
    """One parameter term per prunable module (each once, however often it is called), and the rest."""
    rows = []
    const = float(sum(p.numel() for p in model.parameters()))
    for node in DG.module2node.values():
        m = node.module
        if node.type in (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV):
            k = float(np.prod(m.kernel_size))
            bias = 1.0 if m.bias is not None else 0.0
            o = slots(node, "out", m.out_channels)
            if node.type == OPTYPE.DEPTHWISE_CONV:
                rows.append((o, o, 0.0, k + bias))
            else:
                rows.append((slots(node, "in", m.in_channels), o, k / m.groups, bias))
        elif node.type == OPTYPE.LINEAR:
            rows.append((slots(node, "in", m.in_features), slots(node, "out", m.out_features),
                         1.0, 1.0 if m.bias is not None else 0.0))
        elif node.type in (OPTYPE.BN, OPTYPE.GN, OPTYPE.IN, OPTYPE.LN, OPTYPE.PRELU):
            own = [p for p in m.parameters(recurse=False)]
            if not (own and (node, "out") in slots.membership):
                continue
            c = float(own[0].shape[node.pruning_dim if node.type == OPTYPE.LN else 0])
            o = slots(node, "out", c)
            rows.append((o, o, 0.0, sum(p.numel() for p in own) / c))
        elif node.type == OPTYPE.MHA and (node, "out") in slots.membership:
            own = sum(p is not None for p in (m.in_proj_bias, m.bias_k, m.bias_v, m.out_proj.bias))
            biases = (2.0 if m.in_proj_bias is not None else 0.0) + own  # in_proj_bias has 3 per channel
            rows.append((slots(node, "out", m.embed_dim),) * 2 + (4.0, biases))
            const -= sum(p.numel() for p in m.parameters())
            continue
        elif node.type == OPTYPE.PARAMETER and (node, "out") in slots.membership:
            p = node.module
            c = float(p.shape[node.pruning_dim])
            o = slots(node, "out", c)
            rows.append((o, o, 0.0, p.numel() / c))
            const -= p.numel()
            continue
        else:
            continue
        const -= sum(p.numel() for p in m.parameters(recurse=False))
    return rows, const


def build_cost_model(DG, records: list[CallRecord], group_items: list, model: nn.Module, sizes: list[int]) -> CostModel:
    """Assemble the cost model from a trace, the groups' Torch-Pruning items and their channel counts
    (a group of heads holds ``3 x head_dim`` rows of ``qkv`` per channel)."""
    slots = _Slots(DG, group_items, sizes)
    macs_rows, macs_const = _macs_rows(DG, records, slots)
    params_rows, params_const = _params_rows(DG, model, slots)
    return CostModel(sizes, slots.base, slots.matrix(len(sizes)), _terms(macs_rows), _terms(params_rows),
                     macs_const, params_const)
