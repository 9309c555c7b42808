"""How a Torch-Pruning dependency-graph node is named and which side of a layer an item cuts."""

from __future__ import annotations

from torch_pruning.ops import OPTYPE

__all__ = ["TWO_DIMS", "node_name", "side"]

# Node types whose channel dimension is one: what enters is what leaves.
TWO_DIMS = {OPTYPE.CONV, OPTYPE.LINEAR}


def node_name(DG, node) -> str:
    if node.type == OPTYPE.PARAMETER:
        return DG._param_to_name[node.module]
    return DG._module2name.get(node.module) or f"<{type(node.module).__name__}>"


def side(DG, item) -> str:
    node = item.dep.target
    return "in" if node.type in TWO_DIMS and DG.is_in_channel_pruning_fn(item.dep.handler) else "out"
