"""Torch-Pruning's criteria as the quality study runs them: the Hessian's gradients, the schedule."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality_tp

from mrp_gpu.models import create_model


def test_hessian_gradients_are_the_mean_of_per_image_squared_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    images, labels = torch.randn(5, 1, 8, 8), torch.tensor([0, 2, 1, 1, 0])
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, y in zip(images, labels):
        model.zero_grad()
        F.cross_entropy(model(x[None]), y[None]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.pow(2) / len(images)
    quality_tp._hessian_gradients(model, images, labels, chunk=2)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("method", ["tp-magnitude", "tp-taylor-local"])
def test_prune_steps_to_the_target_and_leaves_the_original_whole(method):
    torch.manual_seed(0)
    model = create_model("demo", weights=None).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pruned, reduction, pruner = quality_tp.prune(method, model, (1, 28, 28), 0.3, images, labels)
    assert 0.3 <= reduction < 0.36  # stepped until the target holds, by small slices
    assert pruned(images).shape == (8, 10) and pruner.pruning_history()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in pruned.parameters())


def test_a_loss_criterion_without_labelled_images_is_refused():
    with pytest.raises(ValueError, match="tp-hessian scores by a loss"):
        quality_tp.prune("tp-hessian", create_model("demo", weights=None), (1, 28, 28), 0.5)
