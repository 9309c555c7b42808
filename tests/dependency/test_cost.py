import numpy as np
import pytest
import torch
import torch_pruning as tp

from mrp_gpu.dependency.groups import build_groups, example_input
from mrp_gpu.executor import slice_model
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


class _PatchesInBatch(torch.nn.Module):
    """MobileViT's trick: 2x2 patches folded into the batch, a token MLP, unfolded again."""

    def __init__(self, c=8, hidden=16):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, c, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Linear(c, hidden), torch.nn.Linear(hidden, c)
        self.head = torch.nn.Linear(c, 10)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        t = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 2, 4, 1).reshape(b * 4, h * w // 4, c)
        t = self.fc2(torch.relu(self.fc1(t)))
        x = t.reshape(b, 2, 2, h // 2, w // 2, -1).permute(0, 5, 3, 1, 4, 2).reshape(b, -1, h, w)
        return self.head(x.mean((2, 3)))


def _tiny_timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)


@pytest.mark.parametrize("make", [_PatchesInBatch, _tiny_timm_vit], ids=["patches-in-batch", "timm-attention"])
def test_costs_are_per_image_and_counted_once(make):
    # a call whose batch holds 4 patches per image costs 4x per image; the counter counts
    # timm's Attention by its own hook and stops there, not again through its Linear children
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model, size = make().eval(), (3, 32, 32)
    groups = build_groups(model, size)
    x = example_input(size)
    assert (groups.cost.macs(), groups.cost.params()) == tp.utils.count_ops_and_params(model, x)
    plan = _random_plan(groups, "m", size, 0.5, 0)
    kept = [plan.kept_count(g) for g in groups.ids]
    assert kept != list(groups.sizes)  # something was cut
    macs, params = tp.utils.count_ops_and_params(slice_model(model, plan, groups), x)
    assert (groups.cost.macs(kept), groups.cost.params(kept)) == (macs, params)
