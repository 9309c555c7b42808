"""MRP as Torch-Pruning's importance: TP's MetaPruner removes what MRP finds most replaceable.

    python examples/tp_importance.py
"""

import torch
import torch_pruning as tp

from mrp_gpu.integrations.torch_pruning import MRPImportance
from mrp_gpu.models import create_model

model = create_model("demo")  # the shipped ResNet-20 trained on Fashion-MNIST
x = torch.randn(1, 1, 28, 28)
base_macs, base_params = tp.utils.count_ops_and_params(model, x)

importance = MRPImportance(x)  # mode="srp": exactly MRP's removal order; "partition": faster
pruner = tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=0.5, iterative_steps=5,
                              global_pruning=True, ignored_layers=[model.fc])
for step in range(5):
    pruner.step()  # one MRP analysis per step, however many groups TP asks about
    macs, params = tp.utils.count_ops_and_params(model, x)
    print(f"step {step + 1}: MACs -{1 - macs / base_macs:.1%}, params -{1 - params / base_params:.1%}")
print(model(x).shape)
