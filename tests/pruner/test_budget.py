import pytest

from mrp_gpu.errors import TargetError
from mrp_gpu.pruner import Budget, Target


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
