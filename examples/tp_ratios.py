"""MRP's layer-wise ratios with any Torch-Pruning importance (here: magnitude).

    python examples/tp_ratios.py
"""

import torch
import torch_pruning as tp

from mrp_gpu.integrations.torch_pruning import mrp_pruning_ratio_dict
from mrp_gpu.models import create_model

model = create_model("demo")
x = torch.randn(1, 1, 28, 28)
base_macs, _ = tp.utils.count_ops_and_params(model, x)

ratios = mrp_pruning_ratio_dict(model, x, target_flops=0.5)  # {first layer of a group: ratio}
for layer, ratio in ratios.items():
    print(f"{type(layer).__name__:8s} out={getattr(layer, 'out_channels', '?'):3} prune {ratio:.0%}")
pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(),
                              pruning_ratio_dict=ratios, ignored_layers=[model.fc])
pruner.step()
macs, _ = tp.utils.count_ops_and_params(model, x)
print(f"MACs -{1 - macs / base_macs:.1%} with MRP's ratios and magnitude importance")
