import numpy as np
import pytest
import torch
import torch_pruning as tp

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.integrations.torch_pruning import MRPImportance, mrp_pruning_ratio_dict, order_scores
from mrp_gpu.models import create_model


def _prune_to(model, x, importance, target, steps, **kw):
    base, _ = tp.utils.count_ops_and_params(model, x)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=0.8, iterative_steps=steps,
                                  ignored_layers=[classifier], **kw)
    macs = base
    for _ in range(steps):
        if macs <= (1 - target) * base:
            break
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, x)
    return 1 - macs / base


@pytest.mark.parametrize("name,size,mode,global_pruning", [
    ("resnet56", (3, 32, 32), "order", True),
    ("resnet56", (3, 32, 32), "order", False),
    ("resnet50", (3, 64, 64), "partition", True),
])
def test_meta_pruner_with_mrp_importance_reaches_the_target(name, size, mode, global_pruning):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(1, *size)
    imp = MRPImportance(x, mode=mode)
    reduction = _prune_to(model, x, imp, 0.3, steps=4, global_pruning=global_pruning)
    assert reduction >= 0.3
    assert model(x).shape[1] == 1000 if name == "resnet50" else 10
    assert imp.batched_calls >= 1  # one analysis per model state, not one per group


def test_one_analysis_per_pruner_step():
    model = create_model("demo")
    x = torch.randn(1, 1, 28, 28)
    imp = MRPImportance(x, mode="partition")
    pruner = tp.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=0.4, iterative_steps=3,
                                  global_pruning=True, ignored_layers=[model.fc])
    for step in range(3):
        pruner.step()
        assert imp.batched_calls == step + 1
    assert model(x).shape == (1, 10)


def test_ratio_dict_reproduces_the_srp_plan_with_any_importance():
    model = create_model("demo")
    x = torch.randn(1, 1, 28, 28)
    ratios = mrp_pruning_ratio_dict(model, x, target_flops=0.5)
    p = plan(create_model("demo"), (1, 28, 28), target_flops=0.5, config=MRPConfig(allocation="srp"))
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(),
                                  pruning_ratio_dict=ratios, pruning_ratio=0.0, ignored_layers=[model.fc])
    pruner.step()
    for g in build_groups(model, (1, 28, 28)):  # pruned model: its groups now have the kept widths
        assert g.size == p.kept_count(g.id), g.id
    macs, _ = tp.utils.count_ops_and_params(model, x)
    assert macs == p.macs_after


def test_mrp_importance_ranks_the_plans_channels_lowest():
    model = create_model("demo")
    groups = build_groups(model, (1, 28, 28))
    scores = order_scores(model, groups, MRPConfig().resolved(has_data=False))
    touched = []
    for target in (0.1, 0.5):
        p = plan(model, (1, 28, 28), target_flops=target, groups=groups, config=MRPConfig(allocation="srp"))
        touched.append(0)
        for g in groups:
            removed = set(p.removed(g.id).tolist())
            lowest = set(np.argsort(scores[g.id], kind="stable")[: len(removed)].tolist())
            assert removed == lowest, g.id
            touched[-1] += bool(removed)
    assert touched[0] >= 1 and touched[1] >= 3  # the check covers several groups


def test_groups_mrp_does_not_prune_get_no_score():
    model = create_model("demo")
    x = torch.randn(1, 1, 28, 28)
    DG = tp.DependencyGraph().build_dependency(model, x)
    fc_group = DG.get_pruning_group(model.fc, tp.prune_linear_out_channels, list(range(10)))
    assert MRPImportance(x, mode="partition")(fc_group) is None


def test_with_calibration_the_scores_are_the_data_defaults_order(demo, demo_groups):
    images = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    config = MRPConfig().resolved(has_data=True)
    scores = order_scores(demo, demo_groups, config, images)
    p = plan(demo, (1, 28, 28), target_flops=0.3, groups=demo_groups, calibration=images)
    assert p.config["allocation"] == "loss" and p.config["replace"] == "rebuild"
    for g in demo_groups:
        removed = set(p.removed(g.id).tolist())
        assert removed == set(np.argsort(scores[g.id], kind="stable")[: len(removed)].tolist()), g.id
    with pytest.raises(ValueError, match="takes no calibration"):
        MRPImportance(images[:1], mode="partition", calibration=images)
