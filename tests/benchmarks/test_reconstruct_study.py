"""The output-reconstruction screen: its gradient steps move the student towards the teacher."""

import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from reconstruct_study import markdown, reconstruct


def test_reconstruction_lowers_the_logit_error_and_keeps_bn_statistics():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 4)).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[0].weight.add_(0.3 * torch.randn_like(student[0].weight))
    images = torch.randn(32, 1, 12, 12)
    stats = student[1].running_mean.clone()

    def error():
        with torch.no_grad():
            return F.mse_loss(student(images), teacher(images)).item()

    before = error()
    reconstruct(student, teacher, images, steps=60, lr=1e-2, batch=16)
    assert error() < 0.5 * before
    assert torch.equal(student[1].running_mean, stats)  # BN frozen: recal re-estimates it after


def test_markdown_gives_each_variant_its_gain():
    r = {"date": "2026-12-03", "command": "python benchmarks/reconstruct_study.py", "machine": "test",
         "runs": [{"model": "demo", "target": 0.5, "macs_reduction": 0.502, "unpruned": 93.1, "default": 92.3,
                   "variants": [{"images": 256, "steps": 400, "lr": 3e-4, "seconds": 90.0, "acc": 92.5}]}]}
    assert "| demo | -50.2% | 93.10 | 92.30 | 256 | 400 | 0.0003 | 92.50 | +0.20 | 90 |" in markdown(r)
