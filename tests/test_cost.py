import numpy as np
import pytest
import torch
import torch_pruning as tp

from mrp_gpu.executor import slice_model
from mrp_gpu.groups import build_groups, example_input
from mrp_gpu.models import create_model
from mrp_gpu.plan import PruningPlan


def _random_plan(groups, name, size, frac, seed):
    rng = np.random.default_rng(seed)
    kept = {g.id: tuple(sorted(rng.choice(g.size, max(1, round(g.size * (1 - frac * rng.random()))),
                                          replace=False).tolist())) for g in groups}
    return PruningPlan(name, size, {g.id: g.size for g in groups}, kept, "random")


@pytest.mark.parametrize("name,size", [("resnet56", (3, 32, 32)), ("vgg16_cifar", (3, 32, 32)),
                                       ("resnet50", (3, 64, 64)), ("mobilenet_v2", (3, 64, 64)),
                                       ("vgg11", (3, 64, 64))])
def test_analytic_costs_equal_counted_costs_of_the_sliced_model(name, size):
    model = create_model(name)
    groups = build_groups(model, size)
    x = example_input(size)
    macs, params = tp.utils.count_ops_and_params(model, x)
    assert (groups.cost.macs(), groups.cost.params()) == (macs, params)
    for frac, seed in ((0.3, 0), (0.7, 1)):
        plan = _random_plan(groups, name, size, frac, seed)
        kept = [plan.kept_count(g) for g in groups.ids]
        macs, params = tp.utils.count_ops_and_params(slice_model(model, plan, groups), x)
        assert groups.cost.macs(kept) == macs
        assert groups.cost.params(kept) == params


def test_savings_are_the_cost_of_one_more_channel(resnet20_groups):
    cost, sizes = resnet20_groups.cost, resnet20_groups.sizes
    kept = sizes - np.arange(len(sizes)) % 3
    saved = cost.savings(kept)
    for g in range(len(sizes)):
        one_less = kept.copy()
        one_less[g] -= 1
        assert saved[g] == pytest.approx(cost.macs(kept) - cost.macs(one_less), abs=0.5)
    saved_p = cost.savings(kept, "params")
    one_less = kept.copy()
    one_less[0] -= 1
    assert saved_p[0] == pytest.approx(cost.params(kept) - cost.params(one_less), abs=0.5)


def test_the_linear_after_a_flatten_counts_every_position():
    # torchvision VGG flattens a 7x7 map into the classifier: one channel is 49 inputs
    model = create_model("vgg11")
    groups = build_groups(model, (3, 64, 64))
    last = groups["features.18"]  # the last conv
    fc = [s for s in last.consumers if s.module == "classifier.0"][0]
    assert len(fc.idxs) == 49 * last.size
    assert "classifier.0" in groups and "classifier.3" in groups  # hidden linear layers are groups too
    with torch.no_grad():
        assert model(example_input((3, 64, 64))).shape == (1, 1000)
