import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp

from mrp_gpu.dependency.groups import build_groups, example_input
from mrp_gpu.errors import PlanError, WeightsError
from mrp_gpu.executor import apply_masks, check_plan, load_pruned, save_pruned, slice_model
from mrp_gpu.models import create_model
from mrp_gpu.plan import PruningPlan


def _trained_like(model, seed=0):
    """Random weights with BN statistics that are not the identity, so masks are tested for real."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model


def _plan(groups, name, size, frac=0.4, seed=0):
    rng = np.random.default_rng(seed)
    kept = {g.id: tuple(sorted(rng.choice(g.size, max(1, int(g.size * (1 - frac))), replace=False).tolist()))
            for g in groups}
    return PruningPlan(name, size, {g.id: g.size for g in groups}, kept, "random")


@pytest.mark.parametrize("name,size", [("resnet56", (3, 32, 32)), ("resnet50", (3, 64, 64)),
                                       ("mobilenet_v2", (3, 64, 64)), ("densenet121", (3, 64, 64))])
def test_masked_and_sliced_models_agree(name, size):
    model = _trained_like(create_model(name))
    groups = build_groups(model, size)
    plan = _plan(groups, name, size)
    x = example_input(size, batch=2)
    with torch.no_grad():
        masked, sliced = apply_masks(model, plan, groups)(x), slice_model(model, plan, groups)(x)
    torch.testing.assert_close(sliced, masked, rtol=1e-4, atol=1e-4 * masked.abs().max().item())


def test_masks_zero_exactly_the_pruned_channels(resnet20, resnet20_groups):
    plan = _plan(resnet20_groups, "resnet20", (3, 32, 32))
    masked = apply_masks(resnet20, plan, resnet20_groups)
    w = masked.get_submodule("layer2.1.conv1").weight
    removed = plan.removed("layer2.1.conv1")
    assert w[removed].abs().sum() == 0 and (w[np.setdiff1d(np.arange(32), removed)].abs().sum(dim=(1, 2, 3)) > 0).all()
    bn = masked.get_submodule("layer2.1.bn1")
    assert bn.weight[removed].abs().sum() == 0 and bn.bias[removed].abs().sum() == 0


def test_the_callers_model_is_never_changed(resnet20, resnet20_groups):
    before = copy.deepcopy(resnet20.state_dict())
    plan = _plan(resnet20_groups, "resnet20", (3, 32, 32))
    slice_model(resnet20, plan, resnet20_groups)
    apply_masks(resnet20, plan, resnet20_groups)
    for k, v in resnet20.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_plan_for_another_model_is_refused(resnet20_groups):
    groups56 = build_groups(create_model("resnet56"), (3, 32, 32))
    plan = _plan(groups56, "resnet56", (3, 32, 32))
    with pytest.raises(PlanError, match="does not exist in this model.*resnet56"):
        check_plan(plan, resnet20_groups)
    wider = PruningPlan("x", (3, 32, 32), {"conv1": 32}, {"conv1": (0,)}, "l1")
    with pytest.raises(PlanError, match="has 32 channels, the model's has 16"):
        check_plan(wider, resnet20_groups)


def test_save_and_load_pruned(tmp_path, resnet20, resnet20_groups):
    plan = _plan(resnet20_groups, "resnet20", (3, 32, 32))
    sliced = slice_model(resnet20, plan, resnet20_groups)
    save_pruned(tmp_path, sliced, plan, {})
    loaded = load_pruned(tmp_path)
    x = example_input((3, 32, 32), batch=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), sliced(x))
    macs, _ = tp.utils.count_ops_and_params(loaded, example_input((3, 32, 32)))
    assert macs == resnet20_groups.cost.macs([plan.kept_count(g) for g in resnet20_groups.ids])


def test_load_pruned_refuses_broken_directories(tmp_path, resnet20, resnet20_groups):
    with pytest.raises(PlanError, match="arch.json is missing"):
        load_pruned(tmp_path)
    plan = _plan(resnet20_groups, "resnet20", (3, 32, 32))
    save_pruned(tmp_path, slice_model(resnet20, plan, resnet20_groups), plan, {})
    arch = tmp_path / "arch.json"
    good = arch.read_text()
    arch.write_text(good[: len(good) // 2])
    with pytest.raises(PlanError, match="not valid JSON"):
        load_pruned(tmp_path)
    arch.write_text(good.replace('"model_kwargs": {}', '"model_kwargs": {"evil": "os.system"}'))
    with pytest.raises(PlanError, match="model_kwargs"):
        load_pruned(tmp_path)
    arch.write_text(good)
    (tmp_path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_pruned(tmp_path)
