import numpy as np
import pytest

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.criteria import group_scores
from mrp_gpu.errors import MRPError, TargetError
from mrp_gpu.pruner import Target, plan_from_orders, plan_global, plan_uniform


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
    kept = np.array([p.kept_count(g) / p.sizes[g] for g in p.sizes])
    assert kept.max() - kept.min() <= 1 / 16 + 1e-9  # the same fraction, give or take the channel given back
    assert 0.5 <= p.macs_reduction <= 0.505  # the overshoot of whole channels is given back


def test_params_target(resnet20):
    p = plan(resnet20, (3, 32, 32), target_params=0.3, method="l1")
    assert p.params_reduction >= 0.3


def test_unknown_method(resnet20):
    with pytest.raises(MRPError, match="unknown method"):
        plan(resnet20, (3, 32, 32), target_flops=0.3, method="magic", config=MRPConfig())


def test_plan_from_orders_removes_each_orders_prefix(resnet20_groups):
    sizes = resnet20_groups.sizes
    counts = sizes - 2
    orders = [np.arange(n)[::-1] for n in sizes]  # the highest channels go first
    p = plan_from_orders(resnet20_groups, counts, orders, model="r", method="test")
    for g, n in zip(resnet20_groups.ids, sizes):
        assert p.kept[g] == tuple(range(n - 2))
