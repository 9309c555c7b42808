import numpy as np
import pytest
import torch
import torchvision

from mrp_gpu.api import plan
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.errors import TargetError
from mrp_gpu.pruner import Budget, Target
from mrp_gpu.pruner.budget import LANDING


def test_target_validation():
    with pytest.raises(TargetError, match="give a target"):
        Target()
    with pytest.raises(TargetError, match=r"in \(0, 1\)"):
        Target(flops=1.5)
    assert Target(flops=0.5, params=0.2).met(0.5, 0.3)
    assert not Target(flops=0.5, params=0.2).met(0.6, 0.1)


def test_min_channels_and_round_to(resnet20_groups):
    b = Budget(resnet20_groups, Target(flops=0.1), min_channels=0.25, round_to=8)
    assert (b.mins % 8 == 0).all() and (b.mins >= 0.25 * b.sizes).all()
    g = resnet20_groups.index("layer3.1.conv1")
    assert b.quantum(g) == 8  # 64 -> 56
    b2 = Budget(resnet20_groups, Target(flops=0.1), step=3)
    assert b2.quantum(g) == 3


def test_a_step_past_the_target_waits_while_a_smaller_one_lands_nearer(resnet20_groups):
    b = Budget(resnet20_groups, Target(flops=0.5))
    saved = np.array([0.0, 0.5 + LANDING - 0.001, 0.5 + LANDING + 0.001]) * b.macs0
    assert b.overshoots(saved).tolist() == [False, False, True]
    assert not Budget(resnet20_groups, Target(params=0.5)).overshoots(saved).any()  # a params target: no rule


@pytest.mark.parametrize("method", ["mrp", "l1"])
def test_a_vit_lands_near_its_target_though_its_stream_goes_a_head_at_a_time(method):
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    groups = build_groups(vit, (3, 32, 32))
    stream = next(g for g in groups if g.kind == "stream")
    for target in (0.3, 0.5):
        p = plan(vit, (3, 32, 32), target_flops=target, method=method, groups=groups)
        assert target <= p.macs_reduction <= target + LANDING
        assert len(p.removed(stream.id)) % 4 == 0
