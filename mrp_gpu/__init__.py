"""mrp_gpu: Maximum Redundancy Pruning of convolutional networks, GPU-accelerated.

Each layer's filters form a similarity graph; Louvain communities say how redundant
the layer is; the pruner removes the most replaceable filter of the most redundant
layer until a MACs or parameter target is met, then slices the tensors for real.

>>> import mrp_gpu
>>> from mrp_gpu.models import create_model
>>> model = create_model("resnet20")
>>> report = mrp_gpu.analyze(model, (3, 32, 32))          # redundancy of every layer
>>> pruned, plan = mrp_gpu.prune(model, (3, 32, 32), target_flops=0.3)
>>> plan.macs_reduction >= 0.3
True
"""

import importlib

from . import plan as _plan_module  # noqa: F401  a submodule named like the function below: loaded first,
from ._version import __version__
from .config import MRPConfig

globals().pop("plan")  # its name is free for mrp_gpu.plan(), the function (imports no longer rebind it)

__all__ = ["__version__", "analyze", "plan", "prune", "apply_plan", "load_pruned", "louvain", "MRPConfig"]

# imported on first use, so that ``mrp-gpu --help`` and light commands do not pay for torch
_LAZY = {"analyze": "api", "plan": "api", "prune": "api", "apply_plan": "api", "load_pruned": "executor",
         "louvain": "community"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
