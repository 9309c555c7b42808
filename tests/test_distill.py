"""Distillation after slicing: it moves the pruned model towards the unpruned one and touches nothing else."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mrp_gpu
from mrp_gpu.config import MRPConfig
from mrp_gpu.distill import distill
from mrp_gpu.errors import MRPError
from mrp_gpu.finetune import recalibrate_bn


def _pair():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 4))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[0].weight.add_(0.3 * torch.randn_like(student[0].weight))
    return teacher, student, torch.randn(32, 1, 12, 12)


def _error(student, teacher, images):
    with torch.no_grad():
        return F.mse_loss(student.eval()(images), teacher.eval()(images)).item()


def test_distillation_lowers_the_logit_error_and_leaves_the_teacher_alone():
    teacher, student, images = _pair()
    before = _error(student, teacher, images)
    teacher.train()
    kept = copy.deepcopy(teacher.state_dict())
    distill(student, teacher, images, steps=60, lr=1e-2)
    assert teacher.training and all(torch.equal(v, kept[k]) for k, v in teacher.state_dict().items())
    assert not any(m.training for m in student.modules())
    assert _error(student, teacher, images) < 0.5 * before


def test_bn_statistics_are_re_estimated_on_the_images_first_then_frozen():
    teacher, student, images = _pair()
    student[1].running_mean.fill_(5.0)  # stale statistics, as a slicing leaves them
    expected = recalibrate_bn(copy.deepcopy(student), images)
    distill(student, teacher, images, steps=30, lr=1e-2)
    # the conv before the BN moved, so statistics still tracked during the steps would differ
    assert not torch.equal(student[0].weight, expected[0].weight)
    expected = expected[1]
    assert torch.equal(student[1].running_mean, expected.running_mean)
    assert torch.equal(student[1].running_var, expected.running_var)


def test_distillation_is_seeded_and_zero_steps_change_nothing():
    teacher, student, images = _pair()
    a, b = copy.deepcopy(student), copy.deepcopy(student)
    distill(a, teacher, images, steps=5, seed=3)
    distill(b, teacher, images, steps=5, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, student[0].weight)
    c = copy.deepcopy(student)
    distill(c, teacher, images, steps=0)
    assert torch.equal(c[0].weight, student[0].weight)


def test_bad_input_is_named():
    teacher, student, images = _pair()
    with pytest.raises(MRPError, match="steps >= 0"):
        distill(student, teacher, images, steps=-1)
    with pytest.raises(MRPError, match=r"\(N, C, H, W\)"):
        distill(student, teacher, images[0], steps=1)

    class Pair(nn.Module):
        def forward(self, x):
            return x.mean(), x.std()

    with pytest.raises(MRPError, match="unpruned model returned a tuple"):
        distill(student, Pair(), images, steps=1)
    with pytest.raises(MRPError, match="distill needs calibration images"):
        MRPConfig(distill=10).resolve(has_data=False)
    with pytest.raises(MRPError, match="distill must be a number of steps"):
        MRPConfig(distill=-5)


def test_prune_distills_the_sliced_model_and_records_it(resnet20):
    images = torch.randn(16, 3, 32, 32)
    args = dict(target_flops=0.3, method="l1", calibration=images)
    plain, _ = mrp_gpu.prune(resnet20, (3, 32, 32), config=MRPConfig(refit=False), **args)
    distilled, plan = mrp_gpu.prune(resnet20, (3, 32, 32), config=MRPConfig(refit=False, distill=20), **args)
    assert plan.config["distill"] == 20 and plan.config["distill_size"] == MRPConfig.distill_size
    assert _error(distilled, resnet20, images) < _error(plain, resnet20, images)
    with pytest.raises(MRPError, match="distill needs"):
        mrp_gpu.prune(resnet20, (3, 32, 32), target_flops=0.3, method="l1", config=MRPConfig(distill=5))
