"""MRP as Torch-Pruning's importance: TP's MetaPruner removes what MRP would remove first.

With training images (``calibration=``) the scores follow MRP's data defaults: the
``rebuild`` rule and the ``loss`` allocation; without them, the data-free SRP order.

    python examples/tp_importance.py
"""

import torch
import torch_pruning as tp

from mrp_gpu.data import calibration_batch, fashion_mnist_available
from mrp_gpu.integrations.torch_pruning import MRPImportance
from mrp_gpu.models import create_model

model = create_model("demo")  # the shipped ResNet-20 trained on Fashion-MNIST
images = (calibration_batch("fashion-mnist", (1, 28, 28), n=256) if fashion_mnist_available()
          else torch.randn(256, 1, 28, 28))
x = images[:1]
base_macs, base_params = tp.utils.count_ops_and_params(model, x)

importance = MRPImportance(x, calibration=images)  # without calibration=: the data-free order
pruner = tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=0.5, iterative_steps=3,
                              global_pruning=True, ignored_layers=[model.fc])
for step in range(3):
    pruner.step()  # one MRP plan per step, however many groups TP asks about
    macs, params = tp.utils.count_ops_and_params(model, x)
    print(f"step {step + 1}: MACs -{1 - macs / base_macs:.1%}, params -{1 - params / base_params:.1%}")
print(model(x).shape)
