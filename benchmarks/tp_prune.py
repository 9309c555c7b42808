"""The peer of ``mrp-gpu prune MODEL --target-flops T``: what a user writes with Torch-Pruning.

A torchvision model, Torch-Pruning's ``MetaPruner`` with ``GroupMagnitudeImportance``
(global ranking, the classifier left whole), stepped until the MACs target holds, then
the pruned weights saved. ``throughput.py`` times this script and the CLI end to end,
each as its own process, start-up included.

    python benchmarks/tp_prune.py resnet50 0.5 OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch_pruning as tp
import torchvision
from safetensors.torch import save_file


def main(name: str, target: float, out: Path) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    x = torch.randn(1, 3, 224, 224)
    base, _ = tp.utils.count_ops_and_params(model, x)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.9,
                                  global_pruning=True, iterative_steps=100, ignored_layers=[classifier])
    macs = base
    while macs > (1 - target) * base:
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, x)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    print(f"MACs -{1 - macs / base:.1%}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]))
