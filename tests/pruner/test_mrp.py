import pytest
import torch

from mrp_gpu.api import analyze, plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.errors import MRPError, TargetError
from mrp_gpu.pruner import RULES, Target, plan_mrp, removal_order

SRP = MRPConfig(allocation="srp", replace="norm-in-community", cost_aware=False)  # the paper's loop, R alone


@pytest.fixture(scope="module")
def srp_plan(demo):
    return plan(demo, (1, 28, 28), target_flops=0.5, model_name="demo", config=SRP)


def test_mrp_on_the_demo_meets_the_target_with_its_own_ratios(srp_plan):
    assert 0.50 <= srp_plan.macs_reduction <= 0.53
    ratios = {round(srp_plan.kept_count(g) / n, 3) for g, n in srp_plan.sizes.items()}
    assert len(ratios) >= 4  # MRP set different ratios per layer, nobody chose them
    assert srp_plan.method == "mrp" and srp_plan.trajectory
    steps = [t["macs"] for t in srp_plan.trajectory]
    assert steps == sorted(steps, reverse=True) and steps[-1] == srp_plan.macs_after


def test_srp_starts_with_the_layer_an_independent_analysis_finds_most_redundant(demo, srp_plan):
    R = analyze(demo, (1, 28, 28), MRPConfig(features="weight")).redundancy  # graphs built apart from the planner
    first = srp_plan.trajectory[0]
    assert R[first["group"]] == max(R.values()) > 1
    assert first["community_size"] >= 2 and not first["fallback"]
    assert srp_plan.config["redundancy_before"] == pytest.approx(R, abs=1e-6)


def test_srp_never_takes_a_channel_alone_in_its_community(srp_plan):
    for t in srp_plan.trajectory:
        assert t["fallback"] or t["community_size"] >= 2, t


def test_same_seed_same_plan(demo, srp_plan):
    again = plan(demo, (1, 28, 28), target_flops=0.5, model_name="demo", config=SRP)
    assert again.kept == srp_plan.kept and again.trajectory == srp_plan.trajectory


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_replace_rule_plans(demo, calib, rule):
    data = calib if RULES[rule].needs_calibration else None
    p = plan(demo, (1, 28, 28), target_flops=0.2, config=MRPConfig(replace=rule), calibration=data)
    assert p.macs_reduction >= 0.2


def test_rebuild_rules_need_calibration_images(demo):
    with pytest.raises(MRPError, match="needs calibration images"):
        plan(demo, (1, 28, 28), target_flops=0.2, config=MRPConfig(replace="rebuild"))


def test_the_data_defaults_build_no_graph_and_make_no_merge(demo, demo_groups, calib, monkeypatch):
    import mrp_gpu.pruner.state.communities as communities

    def no_louvain(*args, **kwargs):
        raise AssertionError("Louvain ran for a plan that reads no communities")

    monkeypatch.setattr(communities, "louvain_graph", no_louvain)
    p = plan_mrp(demo, demo_groups, Target(flops=0.3), MRPConfig(), calibration=calib)
    assert p.config["replace"] == "rebuild" and p.config["allocation"] == "loss" and p.config["refit"] is True
    assert p.merges == [] and "redundancy_before" not in p.config and "R_before" not in p.trajectory[0]
    assert p.config["auto"]["allocation"] == "calibration images given"


def test_round_to_keeps_multiples_of_eight(demo):
    for allocation in ("srp", "uniform"):
        p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(round_to=8, step=1, allocation=allocation))
        assert all(p.kept_count(g) % 8 == 0 for g in p.sizes), allocation
        assert p.macs_reduction >= 0.3


def test_fraction_step_and_activation_features(demo):
    from mrp_gpu.dependency.groups import example_input

    data = example_input((1, 28, 28), batch=32)
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(step=0.1, features="activation", refit=False,
                                                                   replace="error-in-community"), calibration=data)
    assert p.macs_reduction >= 0.3


def test_compensate_folds_removed_channels_into_partners(demo, demo_groups):
    from mrp_gpu.api import masked_vs_sliced
    from mrp_gpu.dependency.groups import example_input
    from mrp_gpu.executor import slice_model

    groups = demo_groups
    p = plan(demo, (1, 28, 28), target_flops=0.3, config=MRPConfig(), groups=groups)
    assert p.config["compensate"] is True and p.config["auto"]["compensate"] == "no refit"
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


def test_uniform_allocation_needs_a_target(demo, demo_groups):
    with pytest.raises(TargetError, match="needs a target"):
        plan_mrp(demo, demo_groups, None, MRPConfig(allocation="uniform"))


def test_srp_without_a_target_is_the_complete_removal_order(demo, demo_groups):
    p = plan_mrp(demo, demo_groups, None, SRP)
    assert all(p.kept_count(g.id) == 1 for g in demo_groups)  # every group down to min_channels
    assert len(p.trajectory) == int(demo_groups.sizes.sum()) - len(demo_groups)


def test_removal_order_is_a_permutation_whose_prefix_the_uniform_plan_removes(demo, demo_groups):
    order, merges = removal_order(demo, demo_groups, "layer3.0.conv1", MRPConfig())
    assert sorted(order) == list(range(64)) and len(merges) == 63
    p = plan(demo, (1, 28, 28), target_flops=0.5, config=MRPConfig(), groups=demo_groups)
    removed = sorted(p.removed("layer3.0.conv1"))
    assert removed == sorted(order[:len(removed)])


def test_auto_allocation_follows_an_explicit_rule_and_baselines_ignore_mrp_options(demo):
    config, why = MRPConfig(replace="reconstruction").resolve(has_data=True)
    assert config.allocation == "uniform" and "supplies no loss" in why["allocation"]
    p = plan(demo, (1, 28, 28), target_flops=0.3, method="l1", config=MRPConfig(replace="rebuild"))
    assert p.macs_reduction >= 0.3 and p.config["refit"] is False  # no data: the baseline is not refused


def test_consumers_that_never_ran_tapped_are_not_asked_for_again(monkeypatch, resnet20, resnet20_groups):
    import mrp_gpu.pruner.mrp as mrp
    from mrp_gpu.redundancy.calibration import Calibration

    config = MRPConfig().resolved(has_data=True)
    asked, real = [], mrp.measure

    def measure(model, groups, images, *, consumers, **kw):  # as if one consumer were never tapped
        asked.append(list(consumers))
        cal = real(model, groups, images, consumers=consumers, **kw)
        return Calibration(cal.images, cal.features, {n: c for n, c in cal.covariances.items() if n != "fc"})

    monkeypatch.setattr(mrp, "measure", measure)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cal = mrp.calibrate(resnet20, resnet20_groups, config, images)
    assert "fc" in asked[0] and cal.unseen == {"fc"} and "fc" not in cal.covariances
    assert mrp.calibrate(resnet20, resnet20_groups, config, cal) is cal and len(asked) == 1  # no second pass
