import pytest

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.criteria import group_scores
from mrp_gpu.errors import TargetError
from mrp_gpu.planner import Budget, Target, plan_global, plan_uniform


def test_target_validation():
    with pytest.raises(TargetError, match="give a target"):
        Target()
    with pytest.raises(TargetError, match=r"in \(0, 1\)"):
        Target(flops=1.5)
    assert Target(flops=0.5, params=0.2).met(0.5, 0.3)
    assert not Target(flops=0.5, params=0.2).met(0.6, 0.1)


@pytest.mark.parametrize("method", ["l1", "fpgm", "random"])
def test_global_planners_stop_just_above_the_target(resnet20, resnet20_groups, method):
    scores = group_scores(resnet20, resnet20_groups, method)
    p = plan_global(resnet20_groups, scores, Target(flops=0.4), model="resnet20", method=method)
    assert p.macs_reduction >= 0.4
    # the last channel was needed: one step earlier the target was not met
    assert 1 - p.trajectory[-2]["macs"] / p.macs_before < 0.4
    assert p.trajectory[-1]["macs"] == p.macs_after


def test_unreachable_target_names_the_reachable_maximum(resnet20, resnet20_groups):
    scores = group_scores(resnet20, resnet20_groups, "l1")
    with pytest.raises(TargetError, match=r"at most MACs -\d+\.\d% and params"):
        plan_global(resnet20_groups, scores, Target(flops=0.9), model="r", method="l1", min_channels=0.5)


def test_uniform_removes_the_same_fraction_everywhere(resnet20, resnet20_groups):
    p = plan_uniform(resnet20_groups, group_scores(resnet20, resnet20_groups, "l1"), Target(flops=0.5),
                     model="r")
    ratios = {round(p.kept_count(g) / p.sizes[g], 1) for g in p.sizes}
    assert len(ratios) == 1 and p.macs_reduction >= 0.5


def test_min_channels_and_round_to(resnet20_groups):
    b = Budget(resnet20_groups, Target(flops=0.1), min_channels=0.25, round_to=8)
    assert (b.mins % 8 == 0).all() and (b.mins >= 0.25 * b.sizes).all()
    g = resnet20_groups.index("layer3.1.conv1")
    assert b.quantum(g) == 8  # 64 -> 56
    b2 = Budget(resnet20_groups, Target(flops=0.1), step=3)
    assert b2.quantum(g) == 3


def test_params_target(resnet20):
    p = plan(resnet20, (3, 32, 32), target_params=0.3, method="l1")
    assert p.params_reduction >= 0.3


def test_unknown_method(resnet20):
    from mrp_gpu.errors import MRPError

    with pytest.raises(MRPError, match="unknown method"):
        plan(resnet20, (3, 32, 32), target_flops=0.3, method="magic", config=MRPConfig())
