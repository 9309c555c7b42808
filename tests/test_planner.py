import numpy as np
import pytest
import torch

from mrp_gpu.api import plan
from mrp_gpu.config import REPLACE_RULES, MRPConfig
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
    kept = np.array([p.kept_count(g) / p.sizes[g] for g in p.sizes])
    assert kept.max() - kept.min() <= 1 / 16 + 1e-9  # the same fraction, give or take the channel given back
    assert 0.5 <= p.macs_reduction <= 0.505  # the overshoot of whole channels is given back


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


# ----------------------------------------------------------------------------- SRP
@pytest.fixture(scope="module")
def demo():
    from mrp_gpu.models import create_model

    return create_model("demo")


@pytest.fixture(scope="module")
def demo_groups(demo):
    from mrp_gpu.groups import build_groups

    return build_groups(demo, (1, 28, 28))


SRP = MRPConfig(allocation="srp", replace="norm-in-community")  # the SRP loop as the tests below know it


@pytest.fixture(scope="module")
def demo_plan(demo):
    return plan(demo, (1, 28, 28), target_flops=0.5, model_name="demo", config=SRP)


def test_mrp_on_the_demo_meets_the_target_with_its_own_ratios(demo_plan):
    assert 0.50 <= demo_plan.macs_reduction <= 0.53
    ratios = {round(demo_plan.kept_count(g) / n, 3) for g, n in demo_plan.sizes.items()}
    assert len(ratios) >= 4  # MRP set different ratios per layer, nobody chose them
    assert demo_plan.method == "mrp" and demo_plan.trajectory


def test_each_step_pruned_the_group_with_the_highest_score(demo_plan):
    for t in demo_plan.trajectory:
        if not t["fallback"]:
            assert t["score"] == t["best_score"], t
            assert t["community_size"] >= 2  # never a channel that is alone in its community
    steps = [t["macs"] for t in demo_plan.trajectory]
    assert steps == sorted(steps, reverse=True) and steps[-1] == demo_plan.macs_after


def test_same_seed_same_plan(demo, demo_plan):
    again = plan(demo, (1, 28, 28), target_flops=0.5, model_name="demo", config=SRP)
    assert again.kept == demo_plan.kept and again.trajectory == demo_plan.trajectory


def test_cost_aware_weighs_redundancy_by_savings(demo):
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=SRP.replace_with(cost_aware=True))
    assert p.macs_reduction >= 0.3
    assert all(t["score"] == t["best_score"] for t in p.trajectory if not t["fallback"])


@pytest.mark.parametrize("rule", REPLACE_RULES)
def test_every_replace_rule_plans(demo, rule):
    from mrp_gpu.groups import example_input

    calib = example_input((1, 28, 28), batch=16) if rule.startswith("rebuild") else None
    p = plan(demo, (1, 28, 28), target_flops=0.2, config=MRPConfig(replace=rule), calibration=calib)
    assert p.macs_reduction >= 0.2


def test_rebuild_rules_need_calibration_images(demo):
    from mrp_gpu.errors import MRPError

    with pytest.raises(MRPError, match="needs calibration images"):
        plan(demo, (1, 28, 28), target_flops=0.2, config=MRPConfig(replace="rebuild"))


def test_round_to_keeps_multiples_of_eight(demo):
    for allocation in ("srp", "uniform", "log-r"):
        p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(round_to=8, step=1, allocation=allocation))
        assert all(p.kept_count(g) % 8 == 0 for g in p.sizes), allocation
        assert p.macs_reduction >= 0.3


def test_fraction_step_and_activation_features(demo):
    from mrp_gpu.groups import example_input

    calib = example_input((1, 28, 28), batch=32)
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(step=0.1, features="activation"),
             calibration=calib)
    assert p.macs_reduction >= 0.3


def test_queued_downdates_equal_a_recomputation(demo):
    """Removing input channels by Gram downdates gives the Gram of the masked weights."""
    from mrp_gpu.executor import apply_masks
    from mrp_gpu.features import compute_features, weight_matrix
    from mrp_gpu.groups import build_groups
    from mrp_gpu.plan import PruningPlan
    from mrp_gpu.planner import _Redundancy

    groups = build_groups(demo, (1, 28, 28))
    cfg = MRPConfig().resolved(has_data=False)  # weight features: removals downdate consumers' Grams
    state = _Redundancy(demo, groups, cfg, compute_features(demo, groups), "cpu")
    g = groups.index("layer2.0.conv1")  # its consumer is layer2.0.conv2, a producer of the stage-2 group
    touched = state.remove(g, [1, 5, 7])
    h = groups.index("layer2.0.conv2")
    assert touched == [h]
    state.flush(h)
    kept = {groups[g].id: tuple(c for c in range(32) if c not in (1, 5, 7))}
    masked = apply_masks(demo, PruningPlan("demo", (1, 28, 28), {x.id: x.size for x in groups}, kept, "t"), groups)
    w = weight_matrix(masked, groups[h]).double()
    torch.testing.assert_close(state.gram[h].double(), w @ w.T, rtol=1e-4, atol=1e-5)


def test_compensate_folds_removed_channels_into_partners(demo):
    from mrp_gpu.api import masked_vs_sliced
    from mrp_gpu.executor import slice_model
    from mrp_gpu.groups import build_groups, example_input

    groups = build_groups(demo, (1, 28, 28))
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(compensate=True), groups=groups)
    assert len(p.merges) >= len(p.trajectory) // 2  # most removals came from a community, so have a partner
    for m in p.merges:
        assert m["channel"] in p.removed(m["group"]) and m["channel"] != m["into"]
    sliced = slice_model(demo, p, groups)
    assert masked_vs_sliced(demo, p, sliced, groups) < 1e-3  # the fold happens in both, identically
    p_plain = plan(demo, (1, 28, 28), target_flops=0.3, groups=groups, config=MRPConfig(compensate=False))
    assert p_plain.merges == [] and p_plain.kept == p.kept  # compensation does not change what goes
    plain = slice_model(demo, p_plain, groups)
    x = example_input((1, 28, 28), batch=4)
    with torch.no_grad():
        assert not torch.allclose(sliced(x), plain(x))  # compensation changed the consumers


# ----------------------------------------------------------------------------- allocations
def test_allocate_spreads_the_cut_by_weight(resnet20_groups):
    from mrp_gpu.planner import allocate

    w = np.ones(len(resnet20_groups))
    w[0] = 0.0  # left whole
    w[1] = 0.5  # loses half the fraction of the others
    counts = allocate(resnet20_groups, Target(flops=0.4), w)
    sizes = resnet20_groups.sizes
    assert counts[0] == sizes[0]
    frac = 1 - counts / sizes
    assert frac[1] < frac[2] and abs(frac[1] - frac[2] / 2) <= 1.5 / sizes[1] + 1.5 / sizes[2]
    assert 1 - resnet20_groups.cost.macs(counts) / resnet20_groups.cost.macs() >= 0.4


def test_plan_from_orders_removes_each_orders_prefix(resnet20_groups):
    from mrp_gpu.planner import plan_from_orders

    sizes = resnet20_groups.sizes
    counts = sizes - 2
    orders = [np.arange(n)[::-1] for n in sizes]  # the highest channels go first
    p = plan_from_orders(resnet20_groups, counts, orders, model="r", method="test")
    for g, n in zip(resnet20_groups.ids, sizes):
        assert p.kept[g] == tuple(range(n - 2))


@pytest.mark.parametrize("allocation", ["uniform", "log-r"])
def test_mrp_allocations_meet_the_target_with_mrp_order_inside(demo, allocation):
    p = plan(demo, (1, 28, 28), target_flops=0.5, config=MRPConfig(allocation=allocation), model_name="demo")
    assert p.macs_reduction >= 0.5
    R = p.config["redundancy_before"]
    fracs = {g: 1 - p.kept_count(g) / n for g, n in p.sizes.items()}
    if allocation == "uniform":
        assert max(fracs.values()) - min(fracs.values()) < 0.1
    else:  # more redundant groups lose a larger share
        most, least = max(R, key=R.get), min(R, key=R.get)
        assert fracs[most] > fracs[least]
    # merges only name removed channels, each folded into a channel of the same group
    for m in p.merges:
        assert m["channel"] not in p.kept[m["group"]]


def test_floor_communities_keeps_one_channel_per_community(demo):
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(floor_communities=True))
    for g, n in p.sizes.items():
        assert p.kept_count(g) >= round(n / p.config["redundancy_before"][g])


def test_allocations_other_than_srp_need_a_target(demo, demo_groups):
    from mrp_gpu.planner import plan_mrp

    with pytest.raises(TargetError, match="needs a target"):
        plan_mrp(demo, demo_groups, None, MRPConfig(allocation="log-r"))


def test_loss_allocation_cuts_where_the_next_channel_costs_least_per_mac(demo):
    from mrp_gpu.errors import MRPError
    from mrp_gpu.groups import example_input

    calib = example_input((1, 28, 28), batch=16)
    p = plan(demo, (1, 28, 28), target_flops=0.4, config=MRPConfig(allocation="loss"), calibration=calib)
    assert p.macs_reduction >= 0.4 and p.config["allocation"] == "loss" and p.config["replace"] == "rebuild"
    assert all(t["score"] == t["best_score"] for t in p.trajectory)  # always the arg-max of saved MACs / loss
    assert len({round(1 - p.kept_count(g) / n, 2) for g, n in p.sizes.items()}) > 1  # not one ratio everywhere
    with pytest.raises(MRPError, match="loss of a replace rule"):
        plan(demo, (1, 28, 28), target_flops=0.4, config=MRPConfig(allocation="loss", replace="norm-in-community"))
