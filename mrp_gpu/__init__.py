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

from ._version import __version__
from .api import analyze, apply_plan, plan, prune
from .community import louvain
from .config import MRPConfig
from .executor import load_pruned

__all__ = ["__version__", "analyze", "plan", "prune", "apply_plan", "load_pruned", "louvain", "MRPConfig"]
