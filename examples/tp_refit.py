"""MRP's least-squares refit for a model Torch-Pruning pruned with its own criterion.

Torch-Pruning's Taylor importance prunes the demo to -50 % MACs; then the same pruned
model is read twice: with its BN statistics re-estimated only, and refit by
``mrp_gpu.integrations.torch_pruning.refit`` (the layers that lost inputs refit by least
squares on 256 training images, then the BN statistics). With Fashion-MNIST installed
(``apt-get install dataset-fashion-mnist``) it prints the test accuracy of both.

    python examples/tp_refit.py
"""

import copy

import torch
import torch.nn.functional as F
import torch_pruning as tp

from mrp_gpu.data import calibration_batch, fashion_mnist_available, get_dataset, make_loader
from mrp_gpu.finetune import evaluate, recalibrate_bn
from mrp_gpu.integrations.torch_pruning import refit
from mrp_gpu.models import create_model

model = create_model("demo")  # the shipped ResNet-20 trained on Fashion-MNIST
original = copy.deepcopy(model)  # the refit reads the unpruned model
data = fashion_mnist_available()
images = calibration_batch("fashion-mnist", (1, 28, 28), n=256) if data else torch.randn(256, 1, 28, 28)
x = images[:1]
base, _ = tp.utils.count_ops_and_params(model, x)

pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupTaylorImportance(), pruning_ratio=0.9,
                              iterative_steps=30, global_pruning=True, ignored_layers=[model.fc])
macs = base
while macs > 0.5 * base:
    model.zero_grad()
    out = model(images)
    F.cross_entropy(out, out.argmax(1)).backward()  # unlabelled images: the model's own predictions
    pruner.step()
    macs, _ = tp.utils.count_ops_and_params(model, x)
print(f"Torch-Pruning (Taylor): MACs -{1 - macs / base:.1%}")

plain = recalibrate_bn(copy.deepcopy(model), images)
refit(original, model, images, pruner)  # in place: refit by least squares, then the BN statistics
if data:
    test = make_loader(get_dataset("fashion-mnist", train=False, input_size=(1, 28, 28), augment=False),
                       batch_size=500, train=False, workers=0)
    print(f"accuracy: unpruned {evaluate(original, test)['acc']:.2%}, pruned {evaluate(plain, test)['acc']:.2%} "
          f"(BN re-estimated), pruned and refit {evaluate(model, test)['acc']:.2%} (no retraining)")
