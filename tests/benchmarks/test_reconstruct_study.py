"""The output-reconstruction screen: its gradient steps move the student towards the teacher."""

import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pytest
from reconstruct_study import markdown, merge, parse_variants, reconstruct


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
    r = {"date": "2026-12-03", "commands": ["python benchmarks/reconstruct_study.py"], "machine": "test",
         "runs": [{"model": "demo", "target": 0.5, "macs_reduction": 0.502, "unpruned": 93.1, "default": 92.3,
                   "variants": [{"images": 256, "steps": 400, "lr": 3e-4, "seconds": 90.0, "acc": 92.5}]}]}
    assert "| demo | -50.2% | 93.10 | 92.30 | 256 | 400 | 0.0003 | 92.50 | +0.20 | 1 | 90 |" in markdown(r)
    second = {"model": "demo", "target": 0.5, "macs_reduction": 0.502, "unpruned": 93.1, "default": 92.1,
              "variants": [{"images": 256, "steps": 400, "lr": 3e-4, "seconds": 70.0, "acc": 92.5}]}
    r["runs"].append(second)  # a second seed: means, the paired gains' spread, the median time
    assert "| demo | -50.2% | 93.10 | 92.20 | 256 | 400 | 0.0003 | 92.50 | +0.30 ± 0.14 | 2 | 80 |" in markdown(r)


def test_variants_parse_and_a_rerun_replaces_only_its_own_rows():
    assert parse_variants("images=2000,steps=400,lr=1e-3") == ({"images": 2000, "steps": 400, "lr": 1e-3},)
    with pytest.raises(SystemExit, match="must give"):
        parse_variants("images=2000,steps=400")
    row = {"model": "demo", "target": 0.5, "seed": 0, "default": 92.3}
    old = [dict(row, variants=[{"images": 256, "steps": 400, "lr": 3e-4, "acc": 92.4},
                               {"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.0}])]
    new = [dict(row, variants=[{"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.6}]),
           dict(row, target=0.7, variants=[])]
    merged = merge(old, new)
    assert [v["acc"] for v in merged[0]["variants"]] == [92.4, 92.6]
    assert [r["target"] for r in merged] == [0.5, 0.7]
    repruned = [dict(row, default=91.0, variants=[{"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.6}])]
    assert [v["acc"] for v in merge(old, repruned)[0]["variants"]] == [92.6]  # the old ones began elsewhere
